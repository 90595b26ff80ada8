"""CLI: `kvarus serve` runs the API under uvicorn, in one process or several.

Several workers (`--workers N`) share the port; each builds the app from the environment and
writes its own audit rows (SQLite: a writer that finds the catalog locked waits up to the
engine's 30 s busy timeout; WAL readers rarely wait, the catalog cache's connection at most
1 s, after which the request is answered 503). The audit route flushes only its own worker's
rows: another worker's last ~50 ms of requests (more while its writes are slow or retried) may
not be in its answer yet.

Read benchmark on two cores shared with its client (50 clients, 30 s): two workers answered
4,100-4,400 req/s against one's 2,330-2,530, median 11 against 20 ms, p99 27-34 against
24-26 ms. One worker stays the default: it meets the p99 target alone, and more pay only where
the cores are the server's.
"""

from typing import Annotated

import typer

from service.commands.common import reports_errors, settings
from service.settings import Settings


def run_server(
    config: Settings, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1
) -> None:
    """Build the app (refusing a missing or demo pseudonym key first) and serve it.

    With several workers each process builds its app from the environment, which `config`
    was read from (`kvarus serve`). Every start-up check (`start_up_checks`: key, OIDC settings,
    catalog) runs here first, once, before any worker starts: a worker that fails to build its
    app exits, and uvicorn's supervisor would start it again, forever.
    """
    import uvicorn

    from service.app import create_app, start_up_checks

    if workers == 1:
        application = create_app(config)  # raises ConfigurationError before binding
        uvicorn.run(application, host=host, port=port, log_level="info")
        return
    engine, _ = start_up_checks(config)  # raises ConfigurationError before any worker starts
    engine.dispose()
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `kvarus` app."""

    @app.command("serve")
    @reports_errors
    def serve(
        host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port", min=1, max=65535)] = 8000,
        workers: Annotated[int, typer.Option(help="Worker processes", min=1, max=64)] = 1,
    ) -> None:
        """Serve the HTTP API (refuses to start without a proper pseudonym key)."""
        run_server(settings(), host=host, port=port, workers=workers)
