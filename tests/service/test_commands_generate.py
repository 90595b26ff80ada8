"""`kvarus generate --years`: the last year must be over, or the extracts written would carry
dates in the future, which `kvarus load` rejects (`intake_date.future`)."""

from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.forms import register_today
from service.cli import app
from service.commands import generate as generate_command


def _said(output: str) -> str:
    """The output with the usage-error box's borders and line breaks taken out."""
    return " ".join(output.replace("│", " ").split())


@pytest.mark.parametrize(
    ("today", "years", "latest"),
    [
        (date(2026, 6, 15), "2030-2031", 2025),
        (date(2026, 6, 15), "2020-2026", 2025),  # 2026 is not over: dates up to 31 December
        (date(2026, 12, 30), "2026-2026", 2025),
        (date(2027, 1, 1), "2027-2027", 2026),
    ],
)
def test_generate_refuses_a_last_year_not_yet_over_before_writing_anything(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    today: date,
    years: str,
    latest: int,
) -> None:
    monkeypatch.setattr(generate_command, "register_today", lambda: today)
    out = tmp_path / "extracts"
    args = ["generate", "--out", str(out), "--episodes", "5", "--years", years]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert (
        f"Invalid value for '--years': LAST must be a year that is over (at most {latest}): "
        "records are dated up to 31 December of LAST, and a load rejects dates in the future"
    ) in _said(result.output)
    assert not out.exists()


@pytest.mark.parametrize(
    ("today", "years"),
    [(date(2026, 6, 15), "2024-2025"), (date(2026, 12, 31), "2026-2026")],
)
def test_generate_writes_a_last_year_that_is_over(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, today: date, years: str
) -> None:
    monkeypatch.setattr(generate_command, "register_today", lambda: today)
    out = tmp_path / "extracts"
    args = ["generate", "--out", str(out), "--episodes", "5", "--years", years]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert (out / "basis.csv").exists()


def test_generate_refuses_years_after_the_current_year_in_norway(
    env: dict[str, str], tmp_path: Path
) -> None:
    next_year = register_today().year + 1
    out = tmp_path / "extracts"
    args = ["generate", "--out", str(out), "--episodes", "5", "--years", f"{next_year}-{next_year}"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--years': LAST must be a year that is over (at most " in _said(
        result.output
    )
    assert not out.exists()
