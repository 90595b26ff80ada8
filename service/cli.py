"""The `kvarus` command line.

Exit codes: 0 ok, 1 rejected input (a `KvarusError`), 2 usage error (typer/click's own).
Each command group lives in its own module under `service/commands/` and registers itself here.
"""

import typer

from service.commands import demo, etl, generate, indicators, keys, serve, validate

app = typer.Typer(
    name="kvarus",
    help="Kvarus Analytics: load, validate, release and serve a substance-use treatment register.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (generate, etl, validate, indicators, serve, keys, demo):
    module.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
