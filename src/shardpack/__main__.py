"""``python -m shardpack``: the same as the ``shardpack`` command."""

from .cli.main import run

# guarded: worker processes started by forkserver or spawn import this module as __mp_main__
if __name__ == "__main__":
    run()
