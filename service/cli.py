"""The `kvarus` command line.

Exit codes (README, "The command line"): 0 ok, 1 rejected input or a runtime failure, 2 usage or
configuration error, 130 interrupted. Each command group lives in its own module under
`service/commands/` and registers itself here.
"""

import sys

import typer

try:  # the command modules take seconds to import: a Ctrl-C then is no traceback either
    from service.commands import demo, etl, generate, indicators, keys, report, serve, validate
except KeyboardInterrupt:  # pragma: no cover (timing-dependent; nothing has run yet)
    print("Interrupted: nothing was done", file=sys.stderr)
    raise SystemExit(130) from None

app = typer.Typer(
    name="kvarus",
    help="Kvarus Analytics: load, validate, release and serve a substance-use treatment register.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (generate, etl, validate, report, indicators, serve, keys, demo):
    module.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
