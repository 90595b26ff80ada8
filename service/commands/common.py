"""Plumbing shared by the CLI commands: settings, catalog sessions, and error → exit code."""

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from schemas.errors import KvarusError
from service.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

console = Console(stderr=True)


def settings() -> Settings:
    return Settings()


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print a `KvarusError` as one clear line and exit with its code (1: rejected input)."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except KvarusError as error:
            console.print(f"[bold red]{error.title}:[/] {error.detail}", highlight=False)
            raise typer.Exit(error.exit_code) from None

    return wrapper
