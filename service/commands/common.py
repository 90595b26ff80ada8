"""Plumbing shared by the CLI commands: settings, catalog sessions, and error → exit code.

Exit codes (the README's convention): 0 ok, 1 rejected input or a runtime failure, 2 a usage or
configuration error, 130 interrupted (128 + the signal's number). Every failure is one line: a
traceback would show a user the register's internals and, in an engine's or a driver's message,
possibly a record value, a pseudonym or the catalog's password.
"""

import os
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from types import FrameType
from typing import Final, NoReturn, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from typer.exceptions import TyperException

from schemas.errors import ConfigurationError, KvarusError
from service.settings import ENV_PREFIX, Settings

P = ParamSpec("P")
R = TypeVar("R")

console = Console(stderr=True)

# 128 + SIGINT's number, as a shell reports a process that Ctrl-C ended.
EXIT_INTERRUPTED = 128 + signal.SIGINT


def settings() -> Settings:
    """The settings from the environment, and their data directory, created if missing.

    A variable that does not parse, or a data directory that cannot be one, is a configuration
    error (exit 2) that names the variable and never its value: the value may be a mistyped
    `KVARUS_PSEUDONYM_KEY`, or a `KVARUS_DATABASE_URL` holding a password.
    """
    try:
        config = Settings()
    except ValidationError as error:
        raise ConfigurationError(_invalid_variables(error)) from None
    # Named, not shown: a path can hold a name or a number typed by someone (a data directory
    # per trust or per case), and the message ends in logs that the register does not control.
    data_dir = config.data_dir
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigurationError(f"{ENV_PREFIX}DATA_DIR is not a directory")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigurationError(
            f"{ENV_PREFIX}DATA_DIR cannot be created ({error.strerror})"
        ) from None
    return config


def _invalid_variables(error: ValidationError) -> str:
    """Each invalid variable's name and what it expects: pydantic's message without its input."""
    problems = [
        f"{ENV_PREFIX}{'_'.join(map(str, e['loc'])).upper()}: {e['msg'].lower()}"
        for e in error.errors(include_input=False, include_url=False)
    ]
    return "; ".join(problems)


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn every failure the command may meet into one line on stderr and an exit code.

    A `KvarusError` prints its title and detail. The others print what cannot hold a record value
    or a secret: an OS error its `strerror` and path, the other classes their name only (any
    exception: never a traceback).
    """

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except KvarusError as error:
            fail(error.title, error.detail, error.exit_code)
        except OSError as error:
            if error.strerror is None:  # a library's own message, which may quote a value
                fail("Failed", f"an input or output operation ({_named(error)})", 1)
            where = f": {error.filename}" if error.filename is not None else ""
            fail("Failed", f"{error.strerror}{where}", 1)
        except UnicodeError as error:
            # Its message quotes the offending bytes: part of a pseudonym or a record value.
            fail("Input rejected", f"text that is not UTF-8 ({type(error).__name__})", 1)
        except (ArgumentError, NoSuchModuleError) as error:
            # Raised while parsing KVARUS_DATABASE_URL; the message quotes the URL (a password).
            fail(
                "Configuration error",
                f"{ENV_PREFIX}DATABASE_URL is not a usable SQLAlchemy URL ({type(error).__name__})",
                2,
            )
        except SQLAlchemyError as error:
            # The message may quote the URL (a password) or a statement's parameters (values).
            fail(
                "Catalog database error",
                f"{type(error).__name__} (the catalog: {ENV_PREFIX}DATABASE_URL, or the SQLite "
                f"file in {ENV_PREFIX}DATA_DIR)",
                1,
            )
        except ValidationError as error:
            # A stored file (a manifest, a report) that does not parse: its message quotes it.
            fail(
                "Failed",
                f"a stored {error.title} does not validate ({error.error_count()} errors)",
                1,
            )
        except KeyboardInterrupt:
            fail("Interrupted", "the command was stopped before it finished", EXIT_INTERRUPTED)
        except (TyperException, typer.Exit, typer.Abort):
            raise  # usage errors and exits: typer prints them and sets the code
        except Exception as error:
            # Any other (a storage library's error on a full disk): its message may quote a
            # value, and a traceback is not an answer. What it left half done (a load, a
            # publish, an erasure) the next writer repairs.
            fail(
                "Failed",
                f"{_named(error)} (its message is not shown: it may quote a record); "
                "anything left half done is repaired by the next load, release or erasure",
                1,
            )

    return wrapper


# The operating system's error a storage library (deltalake's Rust code) quotes in its message.
_OS_ERROR: Final = re.compile(r"\(os error (\d+)\)")


def _named(error: BaseException) -> str:
    """The error's class, and the operating system's reason if its message quotes one (a full
    disk: "DeltaError: No space left on device"): a fixed text, never the message."""
    found = _OS_ERROR.search(str(error))
    if found is None:
        return type(error).__name__
    return f"{type(error).__name__}: {os.strerror(int(found.group(1)))}"


def fail(title: str, detail: str, exit_code: int) -> NoReturn:
    """Print `title: detail` as one line on stderr and exit with `exit_code`."""
    # escape: a detail may quote a name from the input, and Rich reads `[...]` as a style.
    console.print(f"[bold red]{title}:[/] {escape(detail)}", highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code)


def check_output_file(path: Path, option: str = "--out") -> None:
    """Create the directory of the output file `path` and check that the file can be written, or
    raise a usage error (exit 2) that names the OS's reason and the path as given.

    Called first thing in the command (after every option parsed, so that a usage error elsewhere
    creates nothing): a wrong `--out` must not cost a computation and then fail.
    """
    existing = next(p for p in path.parents if p.exists())  # the root exists, at worst
    if not existing.is_dir():
        raise typer.BadParameter(
            f"cannot write {path}: {existing} is not a directory", param_hint=f"'{option}'"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with path.open("ab"):  # appends nothing: an existing file is left as it is
            pass
        if not existed:
            path.unlink()
    except OSError as error:
        raise typer.BadParameter(
            f"cannot write {path}: {error.strerror}", param_hint=f"'{option}'"
        ) from None


def check_output_directory(path: Path, option: str = "--out") -> None:
    """Create the output directory `path`, or raise a usage error, as `check_output_file`."""
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file, not a directory", param_hint=f"'{option}'")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise typer.BadParameter(
            f"cannot create {path}: {error.strerror}", param_hint=f"'{option}'"
        ) from None


@contextmanager
def signals_deferred(notice: str) -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM until the block is done; yields the signals received meanwhile.

    For an erasure: stopped between its deletes and its catalog commit, it leaves the patient in
    the release still served (`etl.erasure`: only a commit makes the next writer finish it). The
    first signal prints `notice`; the previous handlers are restored after the block, and the
    caller says it was interrupted and exits with 128 + the signal's number.
    """
    received: list[int] = []

    def defer(signum: int, _frame: FrameType | None) -> None:
        if not received:
            console.print(notice, highlight=False, soft_wrap=True)
        received.append(signum)

    previous = {number: signal.signal(number, defer) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
