"""What the commands show: the upload ledger fits 80 columns with whole counts, the spinners name
the step running, and `--help` reflows its prose instead of keeping the docstrings' line breaks."""

import inspect
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer.main
from rich.console import Console
from sqlmodel import Session
from typer.testing import CliRunner

import etl.load
from schemas.catalog import Upload
from schemas.forms import Form
from service.cli import app
from service.commands import etl as etl_command
from service.commands import indicators as indicators_command
from service.database import make_engine
from service.settings import Settings
from tests.conftest import TEST_KEY, ExtractWriter, episode_row


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "KVARUS_DATA_DIR": str(tmp_path / "var"),
        "KVARUS_PSEUDONYM_KEY": TEST_KEY,
        "KVARUS_DATABASE_URL": "",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)  # for the test's own Settings() too
    return values


def test_uploads_keeps_counts_and_headers_whole_at_80_columns(env: dict[str, str]) -> None:
    with Session(make_engine(Settings())) as session:
        session.add(
            Upload(
                file_sha256="0" * 64, form="measurement", filename="measurement_2024_nord.csv",
                status="duplicate", rows_read=212013, rows_accepted=211990, rows_quarantined=23,
                rows_superseded=104517, uploaded_by="registry",
                started_at=datetime(2024, 3, 1, 9, 30, tzinfo=UTC),
            )
        )  # fmt: skip
        session.commit()
    result = CliRunner().invoke(app, ["uploads"], env=env | {"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 80
    rule = next(n for n, line in enumerate(lines) if line.startswith("───"))
    assert lines[rule - 1].split()[:7] == [
        "id", "form", "status", "read", "accepted", "quarantined", "superseded"
    ]  # fmt: skip
    row = lines[rule + 1]
    assert row.split()[:7] == [
        "1", "measurement", "duplicate", "212013", "211990", "23", "104517"
    ]  # fmt: skip
    # The last column folds (at spaces, or within a word), every character kept.
    last = row.index("104517") + len("104517") + 1
    folded = "".join(line[last:].strip() for line in lines[rule + 1 :])
    assert folded.replace(" ", "") == "2024-03-0109:30·registry·measurement_2024_nord.csv"


def test_uploads_shows_a_file_name_with_square_brackets_as_written(env: dict[str, str]) -> None:
    """Rich reads `[...]` in a cell as a style: `[b]` vanished and `[/]` was a traceback."""
    with Session(make_engine(Settings())) as session:
        for name in ("basis[b].csv", "basis[/].csv"):
            session.add(
                Upload(
                    file_sha256="0" * 64, form="basis", filename=name, status="loaded",
                    uploaded_by="registry", started_at=datetime(2024, 3, 1, 9, 30, tzinfo=UTC),
                )
            )  # fmt: skip
        session.commit()
    result = CliRunner().invoke(app, ["uploads"], env=env | {"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "basis[b].csv" in result.output
    assert "basis[/].csv" in result.output


def test_the_load_spinner_names_the_step_running() -> None:
    assert etl_command._running("guarded", 212013, Form.BASIS) == "Validating 212,013 rows…"
    assert etl_command._running("read", 212013, Form.BASIS) == (
        "Checking 212,013 rows for direct identifiers…"
    )
    assert etl_command._running("validated", 40, Form.OPTOUT) == (
        "Erasing the patients of 40 opt-outs…"
    )
    # Every step `load_file` reports has its words (a step without would show its raw name).
    reported = set(re.findall(r'report\("(\w+)"', inspect.getsource(etl.load)))
    assert reported == set(etl_command._RUNNING)


def _spinner(monkeypatch: pytest.MonkeyPatch, module: object) -> io.StringIO:
    """The module's console, as a terminal that shows spinners, written to a buffer."""
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=120)
    monkeypatch.setattr(module, "console", terminal)
    return screen


def test_release_and_indicators_show_what_they_compute(
    env: dict[str, str], write_extract: ExtractWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [episode_row(Form.BASIS, n, f"P-OUT-{n}") for n in (1, 2)]
    loaded = CliRunner().invoke(
        app, ["load", str(write_extract(Form.BASIS, rows)), "--form", "basis"], env=env
    )
    assert loaded.exit_code == 0, loaded.output
    screen = _spinner(monkeypatch, etl_command)
    result = CliRunner().invoke(app, ["release"], env=env)
    assert result.exit_code == 0, result.output
    assert "Publishing the next release and computing its indicators…" in screen.getvalue()
    screen = _spinner(monkeypatch, indicators_command)
    result = CliRunner().invoke(app, ["indicators"], env=env)
    assert result.exit_code == 0, result.output
    assert "Computing the indicators of release 1 on duckdb…" in screen.getvalue()
    assert "Writing the results…" in screen.getvalue()


def test_a_release_of_unchanged_data_says_so(
    env: dict[str, str], write_extract: ExtractWriter
) -> None:
    rows = [episode_row(Form.BASIS, n, f"P-OUT-{n}") for n in (1, 2)]
    extract = str(write_extract(Form.BASIS, rows))
    more = str(write_extract(Form.BASIS, [episode_row(Form.BASIS, 3, "P-OUT-3")]))
    runs = [["load", extract, "--form", "basis"], ["release"], ["release"]]
    runs += [["load", more, "--form", "basis"], ["release"]]
    outputs = []
    for arguments in runs:
        result = CliRunner().invoke(app, arguments, env=env)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    same = "holds the same data as release"
    assert same not in outputs[1]
    assert (
        "release 2 holds the same data as release 1: nothing was loaded or erased in between"
        in (outputs[2])
    )
    # A load in between: not the same data.
    assert same not in outputs[4]


def test_a_rejection_is_one_line_on_a_pipe(
    env: dict[str, str], write_extract: ExtractWriter
) -> None:
    # Not a terminal (CliRunner): `validate` wrapped its verdict at 80 columns, and `load`'s
    # progress display left an empty line before it.
    rows = [episode_row(Form.BASIS, n, f"P-{n}", provider_orgnr="123456785") for n in (1, 2)]
    rows += [episode_row(Form.BASIS, 3, "P-3", intake_date="01.01.2099")]
    extract = str(write_extract(Form.BASIS, rows))
    verdict = (
        "Rejected: provider_orgnr.known: 2 of 3 rows failed (tolerated 0 %); "
        "intake_date.future: 1 of 3 rows failed (tolerated 0 %)\n"
    )
    for command in ("validate", "load"):
        result = CliRunner().invoke(app, [command, extract, "--form", "basis"], env=env)
        assert result.exit_code == 1, result.output
        assert result.stderr == verdict, command


def _helps(command: Any, name: str = "kvarus") -> Iterator[tuple[str, str]]:
    """Each command's and group's help text, by its full name."""
    yield name, command.help or ""
    for sub, child in getattr(command, "commands", {}).items():
        yield from _helps(child, f"{name} {sub}")


def test_no_help_paragraph_keeps_a_docstring_line_break() -> None:
    """Typer keeps a paragraph's single line breaks: 'planted errors and⏎ reject files'."""
    helps = dict(_helps(typer.main.get_command(app)))
    assert {"kvarus generate", "kvarus erase", "kvarus keys create"} <= set(helps)
    broken = [
        name
        for name, text in helps.items()
        for paragraph in inspect.cleandoc(text).split("\n\n")
        if "\n" in paragraph.strip()
    ]
    assert broken == []


def test_help_shows_each_sentence_on_one_line() -> None:
    listing = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert (
        "Write a synthetic register: every form's extract file, planted errors, reject files."
        in (listing.output)
    )
    erase = CliRunner().invoke(app, ["erase", "--help"], env={"COLUMNS": "200"})
    assert (
        "--pseudonyms-file and --stdin keep the pseudonyms out of shell history and "
        "/proc/*/cmdline." in erase.output
    )
