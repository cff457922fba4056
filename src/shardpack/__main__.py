"""``python -m shardpack``: the same as the ``shardpack`` command."""

from .cli.main import main

# guarded: worker processes started by forkserver or spawn import this module as __mp_main__
if __name__ == "__main__":
    raise SystemExit(main())
