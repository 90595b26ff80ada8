"""CLI: API keys (`kvarus keys create | list | revoke`)."""

from typing import Annotated, Final

import typer

from service import auth
from service.commands.common import reports_errors, settings
from service.database import make_engine, session_scope

MAX_CLIENT_ID: Final = 2**63 - 1


def _client_role(value: str) -> str:
    """A role outside the API's is a usage error (exit 2), as a mistyped option is."""
    if value not in auth.CLIENT_ROLES:
        raise typer.BadParameter(f"expected one of {', '.join(auth.CLIENT_ROLES)}")
    return value


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `kvarus` app."""
    keys = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)

    @keys.command("create")
    @reports_errors
    def create(
        role: Annotated[
            str, typer.Option(callback=_client_role, help=" or ".join(auth.CLIENT_ROLES))
        ],
        provider: Annotated[
            str | None, typer.Option(help="Organisation number (trust keys only)")
        ] = None,
        name: Annotated[str, typer.Option(help="Who holds the key")] = "",
    ) -> None:
        """Create an API key; the key is printed once, alone on the last line."""
        with session_scope(make_engine(settings())) as session:
            client, key = auth.create_key(session, role=role, provider=provider, name=name)
            client_id = client.id
        typer.echo(f"API client {client_id} ({role}) created; store the key now, it is shown once:")
        typer.echo(key)

    @keys.command("list")
    @reports_errors
    def list_() -> None:
        """List API clients (never the keys)."""
        with session_scope(make_engine(settings())) as session:
            for client in auth.list_keys(session):
                state = "revoked" if client.revoked_at else "active"
                typer.echo(
                    f"{client.id}\t{client.key_prefix}\t{client.role}\t"
                    f"{client.provider_orgnr or '-'}\t{state}\t{client.name}"
                )

    @keys.command("revoke")
    @reports_errors
    def revoke(
        client_id: Annotated[
            # Catalog ids are 64-bit integers: a larger number is a usage error (exit 2), not
            # an OverflowError from the database driver.
            int, typer.Argument(help="The API client id", min=1, max=MAX_CLIENT_ID)
        ],
    ) -> None:
        """Revoke an API key."""
        with session_scope(make_engine(settings())) as session:
            auth.revoke_key(session, client_id)
        typer.echo(f"API client {client_id} revoked")

    app.add_typer(keys, name="keys")
