"""User-facing errors: one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import functools
import sys

import click


class UserError(Exception):
    """Any bad input the user can fix; the CLI prints ``error: <message>`` and exits 2."""


def _user_error_types() -> tuple[type, ...]:
    from fedtiny.trainer.data.fleet import DataError

    types: list[type] = [UserError, DataError]
    for mod, name in (("fedtiny.codegen.errors", "CodegenError"), ("fedtiny.bench.rundata", "BenchError")):
        try:
            m = __import__(mod, fromlist=[name])
            types.append(getattr(m, name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


def fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def friendly(fn):
    """Decorator for click commands: user errors -> one line + exit 2; Ctrl-C -> exit 130."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            fail("interrupted; a training run continues with the same command plus --resume", 130)
        except _user_error_types() as e:
            fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    return wrapper
