"""User-facing errors: one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import functools
import sys

import click


class UserError(Exception):
    """Any bad input the user can fix; the CLI prints ``error: <message>`` and exits 2."""


def _user_error_types() -> tuple[type, ...]:
    from fedtiny.trainer.data.fleet import DataError
    from fedtiny.trainer.rundir import RunFileError

    types: list[type] = [UserError, DataError, RunFileError]
    for mod, name in (("fedtiny.codegen.errors", "CodegenError"), ("fedtiny.bench.rundata", "BenchError"),
                      ("fedtiny.experiments", "ExperimentMismatch")):
        try:
            m = __import__(mod, fromlist=[name])
            types.append(getattr(m, name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


def fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _ignore_further_interrupts() -> None:
    """Once a command has decided to stop with exit 130, a further Ctrl-C must not turn that into a
    death by SIGINT during interpreter shutdown (Python re-raises an unhandled KeyboardInterrupt as
    the signal, exit -2, after the error line was printed)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def friendly(fn):
    """Decorator for click commands: user errors -> one line + exit 2; Ctrl-C -> exit 130."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            _ignore_further_interrupts()
            fail("interrupted; finished steps are kept: run the same command again to continue "
                 "(for train, add --resume)", 130)
        except _user_error_types() as e:
            fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        except OSError as e:          # unwritable --out, full disk, a file where a folder must be
            fail(os_error_message(e))
    return wrapper


def os_error_message(e: OSError) -> str:
    """One line for an operating-system error: 'PATH: Read-only file system'."""
    what = e.strerror or str(e)
    if e.filename is None:
        return what
    return f"{e.filename}: {what}" if e.filename2 is None else f"{e.filename} -> {e.filename2}: {what}"

