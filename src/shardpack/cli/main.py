"""The ``shardpack`` command: parse arguments, call the library, print. Nothing else.

Exit status: 0 success, 1 bad data (invalid input, damaged or failing packed files), 2 bad usage,
3 an internal error (a bug), 130 interrupted (SIGINT), 143 terminated (SIGTERM). ``shardpack``
without a command prints its help on stdout, with status 2.
Errors are one line on stderr (``--debug`` shows the traceback). Progress bars appear only when
stderr is a terminal and ``CI`` is not set; ``--json`` prints machine-readable results on stdout.
"""

from __future__ import annotations

import contextlib
import faulthandler
import signal
import sys
import threading
from typing import Any, NoReturn

import click

from .._version import __version__
from ..codecs import native
from ..errors import OptionError, ShardpackError
from ..format.strings import speedups_built
from .bench_command import bench
from .output import (
    EXIT_BAD_DATA,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
)
from .pack_command import pack
from .read_commands import diff, head, info, merge, schema, unpack, validate


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"shardpack: error: {message}", err=True)
    raise SystemExit(code)


class _Group(click.Group):
    """Turns library errors into one line on stderr and the documented exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except OptionError as exc:
            if debug:
                raise
            _fail(str(exc), EXIT_USAGE)
        except ShardpackError as exc:
            if debug:
                raise
            _fail(str(exc), EXIT_BAD_DATA)
        except BrokenPipeError:
            sys.stderr.close()  # e.g. `shardpack head ... | head -1`
            raise SystemExit(EXIT_OK) from None
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except Terminated:
            _fail("terminated (SIGTERM)", EXIT_TERMINATED)
        except OSError as exc:
            if debug:
                raise
            _fail(
                f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", EXIT_BAD_DATA
            )
        except Exception as exc:
            if debug:
                raise
            _fail(
                f"internal error: {type(exc).__name__}: {exc} (this is a bug: please report it; "
                "--debug shows where)",
                EXIT_INTERNAL,
            )


class Terminated(BaseException):
    """SIGTERM (timeout, SLURM, Kubernetes) as an exception, so that everything a command started
    is cleaned up on the way out: temp files removed, worker processes ended."""


CLEANUP_DEADLINE_SECONDS = 20.0


def _terminate(signum: int, frame: object) -> None:
    _bound_the_cleanup()
    raise Terminated


def _interrupt(signum: int, frame: object) -> None:
    _bound_the_cleanup()
    raise KeyboardInterrupt


# what faulthandler raises when sys.stderr has no file descriptor (captured, in tests)
_NO_STDERR_FILE = (OSError, ValueError, AttributeError)
_cleanup_bounded = False  # the deadline is armed: it counts from the first signal


def _bound_the_cleanup() -> None:
    """After SIGTERM or Ctrl-C the command cleans up (ends its workers within seconds, removes
    its temp files) and exits. Should that hang (a bug), the process prints every thread's stack
    and exits with status 1 ``CLEANUP_DEADLINE_SECONDS`` after the first signal, instead of
    living on: the timer is faulthandler's own thread, which needs no Python lock that the
    interrupted code may hold. Left armed through interpreter exit, which joins threads too.
    A later signal (Ctrl-C pressed again, SIGTERM after Ctrl-C) raises into the cleanup again
    but leaves the deadline where it is: re-arming would restart the wait with every signal."""
    global _cleanup_bounded
    if _cleanup_bounded:
        return
    with contextlib.suppress(*_NO_STDERR_FILE):
        faulthandler.dump_traceback_later(CLEANUP_DEADLINE_SECONDS, exit=True)
        _cleanup_bounded = True


@click.group(
    cls=_Group,
    invoke_without_command=True,
    subcommand_metavar="COMMAND [ARGS]...",  # a command is still needed (help otherwise)
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(
    __version__,
    prog_name="shardpack",
    message="%(prog)s %(version)s ("
    + (
        "C modules built"
        if speedups_built() and native.BUILT
        else "C modules not built: slower text scans, no native read-ahead"
    )
    + ")",
)
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Pack JSONL datasets into fast, checked binary files, and read them back."""
    if ctx.invoked_subcommand is None:
        # no command: the help as --help prints it (stdout, no "usage error" line), with the
        # usage status that click's no_args_is_help exits with
        click.echo(ctx.get_help())
        raise SystemExit(EXIT_USAGE)
    from ..storage.remote_options import check_environment

    check_environment()  # a malformed SHARDPACK_TIMEOUT_S fails every command, not only some


for command in (pack, info, head, schema, validate, unpack, diff, merge, bench):
    cli.add_command(command)


def main(argv: list[str] | None = None, *, exiting: bool = False) -> int:
    """Run the CLI; returns the exit status. ``exiting``: the process ends when this returns
    (the ``shardpack`` command, ``python -m shardpack``): the cleanup deadline armed by a
    signal then also bounds the interpreter's exit. Called from a program that goes on (a
    notebook, a test), the deadline ends with the command instead of killing the program
    ``CLEANUP_DEADLINE_SECONDS`` after an interrupt."""
    if threading.current_thread() is not threading.main_thread():
        return _run(argv)  # signal handlers can only be set from the main thread
    previous = signal.signal(signal.SIGTERM, _terminate)
    previous_interrupt = signal.signal(signal.SIGINT, _interrupt)
    dumps_stacks = _dump_stacks_on_sigusr1()
    try:
        return _run(argv)
    finally:
        # The command is over: a SIGTERM from now on (during interpreter exit, say) ends the
        # process the default way, instead of raising into Python's exit handlers, which print
        # a traceback and exit 0.
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_interrupt)
        if dumps_stacks:
            faulthandler.unregister(signal.SIGUSR1)
        if not exiting:
            _end_the_deadline()


def run() -> None:
    """The ``shardpack`` command: ``main`` for a process that exits with its status."""
    raise SystemExit(main(exiting=True))


def _end_the_deadline() -> None:
    global _cleanup_bounded
    if _cleanup_bounded:
        faulthandler.cancel_dump_traceback_later()
        _cleanup_bounded = False


def _dump_stacks_on_sigusr1() -> bool:
    """``kill -USR1 PID`` prints every thread's stack to stderr: what a command that seems
    stuck is doing (its worker processes inherit it)."""
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except _NO_STDERR_FILE:
        return False
    return True


def _run(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="shardpack", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        click.echo(f"shardpack: usage error: {exc.format_message()}", err=True)
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("shardpack: aborted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        click.echo(f"shardpack: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return EXIT_OK
