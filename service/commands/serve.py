"""CLI: `kvarus serve` runs the API under uvicorn."""

from typing import Annotated

import typer

from service.commands.common import reports_errors, settings
from service.settings import Settings


def run_server(config: Settings, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Build the app (refusing a missing or demo pseudonym key first) and serve it."""
    import uvicorn

    from service.app import create_app

    application = create_app(config)  # raises ConfigurationError before binding
    uvicorn.run(application, host=host, port=port, log_level="info")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `kvarus` app."""

    @app.command("serve")
    @reports_errors
    def serve(
        host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port", min=1, max=65535)] = 8000,
    ) -> None:
        """Serve the HTTP API (refuses to start without a proper pseudonym key)."""
        run_server(settings(), host=host, port=port)
