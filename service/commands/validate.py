"""CLI: `kvarus validate FILE --form F`, the form's suite over a file without loading anything.

Exit codes: 0 the file would be accepted (rows failing `error` checks would go to quarantine),
1 the file would be rejected (a `fatal` check, the privacy guard, or the reader refused it), 2 usage
error.
"""

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape

from etl.privacy import guard
from etl.read import read_extract
from schemas.forms import Form, register_today
from schemas.organisations import Hierarchy
from service.commands.common import check_output_file, console, reports_errors
from validation import validate_extract
from validation.report import quality_report, render_html, render_text


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `kvarus` app."""

    @app.command("validate")
    @reports_errors
    def validate(
        file: Annotated[
            Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Extract file")
        ],
        form: Annotated[Form, typer.Option(help="The form the file holds")],
        output_format: Annotated[
            Literal["json", "html", "text"], typer.Option("--format", help="Report format")
        ] = "text",
        out: Annotated[
            Path | None,
            typer.Option(dir_okay=False, help="Write the report here (default: stdout)"),
        ] = None,
    ) -> None:
        """Check an extract file on its own (a load also checks the stored records) and report."""
        import json

        if out is not None:
            check_output_file(out)
        raw = read_extract(file, form)
        # As `kvarus load`: a file holding what looks like an identity number is rejected whole
        # (exit 1) before its report, which would print failing rows' record ids, is made.
        guard(raw)
        known = frozenset(o.orgnr for o in Hierarchy.default().providers)
        result = validate_extract(raw, form, known_providers=known, today=register_today())
        report = quality_report(result)
        if output_format == "json":
            text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
        elif output_format == "html":
            text = render_html(report)
        else:
            text = render_text(report)
        if out is None:
            typer.echo(text, nl=False)
        else:
            out.write_text(text, encoding="utf-8")
            console.print(f"Report written to {out}", highlight=False, markup=False)
        if result.rejected:
            console.print(
                f"[bold red]Rejected:[/] {escape('; '.join(result.rejection_reasons))}",
                highlight=False,
                soft_wrap=True,  # one line, also on a pipe (Rich wraps at 80 columns there)
            )
            raise typer.Exit(1)
