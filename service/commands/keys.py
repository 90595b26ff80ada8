"""CLI: API keys (`kvarus keys create | list | revoke`)."""

from typing import Annotated

import typer

from etl.privacy import holds_identity_number
from schemas.catalog import ApiClient
from schemas.errors import RejectedInput
from service import auth
from service.commands.common import reports_errors, settings
from service.database import MAX_CATALOG_ID, make_engine, session_scope


def _client_role(value: str) -> str:
    """A role outside the API's is a usage error (exit 2), as a mistyped option is."""
    if value not in auth.CLIENT_ROLES:
        raise typer.BadParameter(f"expected one of {', '.join(auth.CLIENT_ROLES)}")
    return value


def _client_name(value: str) -> str:
    """A name that looks like it holds an identity number is a usage error (exit 2), never
    stored: `keys list` would show it, and it is not needed to tell key holders apart. Checked
    by the privacy guard's own detector (every shape and spelling a file is refused for)."""
    if holds_identity_number(value):
        raise typer.BadParameter(
            "it looks like it holds a national identity number: name the holder otherwise "
            "(a system, a unit, a role)"
        )
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
        name: Annotated[str, typer.Option(callback=_client_name, help="Who holds the key")] = "",
    ) -> None:
        """Create an API key; the key is printed once, alone on the last line."""
        if role == "trust" and provider is None:
            # A usage error (exit 2), as a bad --role is; checked before the catalog is opened.
            raise typer.BadParameter(
                "a trust key needs --provider with its organisation number",
                param_hint="'--provider'",
            )
        with session_scope(make_engine(settings())) as session:
            try:
                client, key = auth.create_key(session, role=role, provider=provider, name=name)
            except RejectedInput as error:  # what is left is a --provider that does not fit
                raise typer.BadParameter(error.detail, param_hint="'--provider'") from None
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
            # Catalog ids are SQL integers, 32-bit on PostgreSQL: a larger number is a usage
            # error (exit 2), not a DataError (or an OverflowError) from the database.
            int, typer.Argument(help="The API client id", min=1, max=MAX_CATALOG_ID)
        ],
    ) -> None:
        """Revoke an API key."""
        with session_scope(make_engine(settings())) as session:
            known = session.get(ApiClient, client_id)
            already = known is not None and known.revoked_at is not None
            auth.revoke_key(session, client_id)  # NotFound (exit 1) for an unknown id
        if already:
            typer.echo(f"API client {client_id} was already revoked; nothing changed")
        else:
            typer.echo(f"API client {client_id} revoked")

    app.add_typer(keys, name="keys")
