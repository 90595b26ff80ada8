"""CLI: `kvarus demo`, the main job on embedded defaults.

Generates a synthetic register, loads every form through the ETL (validation included), publishes a
release with its indicators and serves the API. Re-running it is safe: files already loaded are
recognised by their hash and change nothing, and a release is published only when none exists yet
or the warehouse changed.
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from etl.generate import generate_register
from etl.load import load_file
from etl.release import latest_release
from etl.warehouse import Warehouse
from schemas.forms import Form
from schemas.organisations import Hierarchy
from service.commands.common import console, reports_errors, settings
from service.commands.generate import MAX_EPISODES
from service.database import make_engine, session_scope
from service.publishing import ensure_indicators, publish

# Loading order: reference counts first, then intakes before the forms that refer to them; opt-outs
# last, so that the demo shows an erasure.
LOAD_ORDER = (
    Form.NPR_COUNTS,
    Form.BASIS,
    Form.MEASUREMENT,
    Form.DISCHARGE,
    Form.FOLLOWUP,
    Form.OPTOUT,
)


@reports_errors
def demo(
    episodes: Annotated[
        int, typer.Option(min=100, max=MAX_EPISODES, help="Episodes to generate")
    ] = 20_000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the synthetic register")] = 2026,
    error_rate: Annotated[
        float, typer.Option(min=0.0, max=0.2, help="Share of rows with planted errors")
    ] = 0.01,
    serve: Annotated[bool, typer.Option(help="Serve the API afterwards")] = True,
    host: Annotated[str, typer.Option(help="Address to serve on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on", min=1, max=65535)] = 8000,
) -> None:
    """Generate, load, validate, release, compute indicators, and serve the API (embedded)."""
    config = settings()
    key = config.key_bytes()
    extracts = config.data_dir / "demo-extracts"
    with console.status(f"Generating {episodes:,} episodes into {extracts}"):
        generate_register(extracts, episodes=episodes, seed=seed, error_rate=error_rate)

    engine = make_engine(config)
    warehouse = Warehouse(config.warehouse_dir)
    known_providers = frozenset(o.orgnr for o in Hierarchy.default().providers)
    summary = Table("form", "status", "read", "accepted", "quarantined", "superseded")
    changed = False
    for form in LOAD_ORDER:
        path = _extract_path(extracts, form)
        with console.status(f"Loading {path.name}"), session_scope(engine) as session:
            upload = load_file(
                path,
                form,
                warehouse=warehouse,
                session=session,
                key=key,
                known_providers=known_providers,
                uploaded_by="demo",
            )
        # An opt-out file is loaded every time (never a duplicate: `etl.ledger.NOT_KEPT`); it
        # changed something only if it erased rows.
        erased = form is not Form.OPTOUT or upload.rows_erased > 0
        changed = changed or (upload.status == "loaded" and erased)
        summary.add_row(
            form.value,
            upload.status,
            f"{upload.rows_read:,}",
            f"{upload.rows_accepted:,}",
            f"{upload.rows_quarantined:,}",
            f"{upload.rows_superseded:,}",
        )
    console.print(summary)

    # The opt-out file erases; when its patients were in a release, the erasure published a
    # replacement without indicators (etl/ cannot compute them): compute them before judging below.
    with session_scope(engine) as session:
        computed = ensure_indicators(config, session)
    if computed:
        console.print(f"Indicators computed for release(s) {', '.join(map(str, computed))}")

    with session_scope(engine) as session:
        existing = latest_release(session)
        if existing is None or changed:
            with console.status("Publishing a release and computing its indicators"):
                manifest, results = publish(config, session, note="demo", published_by="demo")
            console.print(
                f"Published release {manifest.release}; indicators in {results}", markup=False
            )
        else:
            console.print(f"Nothing changed; release {existing.number} stands")

    if serve:
        from service.commands.serve import run_server

        console.print(f"Serving on http://{host}:{port} (OpenAPI: http://{host}:{port}/docs)")
        run_server(config, host=host, port=port)


def _extract_path(extracts: Path, form: Form) -> Path:
    matches = sorted(extracts.glob(f"{form.value}.*"))
    if not matches:
        raise FileNotFoundError(f"the generator wrote no {form.value} file")
    return matches[0]


def register(app: typer.Typer) -> None:
    """Add `demo` to the `kvarus` app."""
    app.command("demo")(demo)
