"""`kvarus indicators`: results are written under the write locks, never for a retired release."""

import fcntl
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from indicators import engine as indicator_engine
from indicators import results
from schemas.catalog import IndicatorRun, Release
from schemas.errors import ConfigurationError
from schemas.forms import Form
from service.app import create_app
from service.cli import app
from service.commands import indicators as command
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


def _published(write_extract: ExtractWriter, env: dict[str, str]) -> Path:
    """Release 1 of two episodes, its results file removed (as a retired release's would be)."""
    rows = [episode_row(Form.BASIS, n, f"P-IND-{n}") for n in (1, 2)]
    for args in (["load", str(write_extract(Form.BASIS, rows)), "--form", "basis"], ["release"]):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
    releases = Path(env["KVARUS_DATA_DIR"]) / "releases"
    (releases / "1" / results.RESULTS_FILE).unlink()
    return releases


def _retire(number: int) -> None:
    with Session(make_engine(Settings())) as session:
        release = session.get(Release, number)
        assert release is not None
        release.retired = True
        session.add(release)
        session.commit()


def _runs() -> list[tuple[int, str]]:
    with Session(make_engine(Settings())) as session:
        return [(r.release, r.engine) for r in session.exec(select(IndicatorRun)).all()]


def test_a_release_retired_while_its_indicators_are_computed_gets_no_results(
    write_extract: ExtractWriter, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    releases = _published(write_extract, env)
    runs_before = _runs()
    real_compute = indicator_engine.compute

    def compute_then_erasure(*args: Any, **kwargs: Any) -> pa.Table:
        table = real_compute(*args, **kwargs)
        _retire(1)  # an erasure commits while the computation runs
        return table

    monkeypatch.setattr(command, "compute", compute_then_erasure)
    out = releases.parent / "out.json"
    result = CliRunner().invoke(
        app, ["indicators", "--release", "1", "--format", "json", "--out", str(out)], env=env
    )
    assert result.exit_code == 2, result.output
    assert "release 1 is retired" in " ".join(result.output.split())
    assert not (releases / "1" / results.RESULTS_FILE).exists()
    assert not out.exists()
    assert _runs() == runs_before


def test_a_retired_release_is_refused_before_computing(
    write_extract: ExtractWriter, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    releases = _published(write_extract, env)
    _retire(1)

    def never(*args: Any, **kwargs: Any) -> pa.Table:
        raise AssertionError("a retired release must not be computed")

    monkeypatch.setattr(command, "compute", never)
    result = CliRunner().invoke(app, ["indicators", "--release", "1"], env=env)
    assert result.exit_code == 2, result.output
    assert " ".join(result.output.split()) == (
        "Release retired: release 1 is retired (an erasure removed records it held); its "
        "indicators are not computed. Use a release that is not retired (GET /api/v1/releases "
        "lists them)"
    )
    assert not (releases / "1" / results.RESULTS_FILE).exists()


def test_results_are_written_under_the_write_locks(
    write_extract: ExtractWriter, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    releases = _published(write_extract, env)
    runs_before = _runs()
    warehouse_dir = Settings().warehouse_dir
    locked: list[bool] = []
    real_write = results.write

    def write_checking_locks(table: pa.Table, path: Path) -> None:
        # flock locks of another open file description conflict, in the same process too.
        with (warehouse_dir / "basis.lock").open("a") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                locked.append(True)
            else:
                locked.append(False)
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        real_write(table, path)

    monkeypatch.setattr(results, "write", write_checking_locks)
    result = CliRunner().invoke(app, ["indicators", "--release", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert locked == [True]
    stored = results.read(releases / "1" / results.RESULTS_FILE)
    assert set(stored.column("release").to_pylist()) == {1}
    assert _runs() == [*runs_before, (1, "duckdb")]


def test_the_default_release_is_the_newest_in_the_catalog(
    write_extract: ExtractWriter, env: dict[str, str]
) -> None:
    releases = _published(write_extract, env)
    runs_before = _runs()
    # A publish killed after writing its manifest, before its catalog commit, leaves release 2
    # on disk only (the old default, the newest directory, failed: "not in the catalog").
    shutil.copytree(releases / "1", releases / "2")
    result = CliRunner().invoke(app, ["indicators"], env=env)
    assert result.exit_code == 0, result.output
    assert _runs() == [*runs_before, (1, "duckdb")]
    assert (releases / "1" / results.RESULTS_FILE).exists()
    assert not (releases / "2" / results.RESULTS_FILE).exists()


def test_without_a_release_in_service_the_default_says_how_to_publish_one(
    env: dict[str, str],
) -> None:
    result = CliRunner().invoke(app, ["indicators"], env=env)
    assert result.exit_code == 1, result.output
    assert "no release in service: publish one with `kvarus release`" in result.output


def _read_out(out: Path, output_format: str) -> pa.Table:
    if output_format == "json":
        return pa.Table.from_pylist(json.loads(out.read_text(encoding="utf-8")))
    if output_format == "csv":
        return pacsv.read_csv(out)
    return results.read(out)


@pytest.mark.parametrize(
    ("name", "given", "written"),
    [
        ("results.json", None, "json"),
        ("results.CSV", None, "csv"),
        ("results.parquet", None, "parquet"),
        ("results.json", "json", "json"),
        ("results.txt", "csv", "csv"),  # an extension that names no format: --format decides
    ],
)
def test_out_is_written_in_the_format_its_extension_names_and_named_in_the_success_line(
    write_extract: ExtractWriter,
    env: dict[str, str],
    name: str,
    given: str | None,
    written: str,
) -> None:
    releases = _published(write_extract, env)
    out = releases.parent / name
    args = ["indicators", "--release", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args + (["--format", given] if given else []), env=env)
    assert result.exit_code == 0, result.output
    stored = results.read(releases / "1" / results.RESULTS_FILE)
    assert _read_out(out, written).num_rows == stored.num_rows > 0
    said = " ".join(result.output.split())
    assert f"→ {releases / '1' / results.RESULTS_FILE} and {out}" in said


@pytest.mark.parametrize(
    ("name", "given", "message"),
    [
        (
            "results.txt",
            None,
            "Invalid value for '--out': cannot tell the format of {out} from its extension: end "
            "it in .json, .csv or .parquet, or give --format json|csv|parquet",
        ),
        (
            "results",
            None,
            "Invalid value for '--out': cannot tell the format of {out} from its extension: end "
            "it in .json, .csv or .parquet, or give --format json|csv|parquet",
        ),
        (
            "ind.json",
            "csv",
            "Invalid value for '--format': --format csv contradicts the extension of {out} "
            "(.json): give one that agrees, or leave --format out",
        ),
        (
            "ind.csv",
            "parquet",
            "Invalid value for '--format': --format parquet contradicts the extension of {out} "
            "(.csv): give one that agrees, or leave --format out",
        ),
    ],
)
def test_an_out_format_unknown_or_contradicted_is_a_usage_error_before_computing(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    given: str | None,
    message: str,
) -> None:
    def never(*args: Any, **kwargs: Any) -> pa.Table:
        raise AssertionError("computed before checking the format of --out")

    monkeypatch.setattr(command, "compute", never)
    out = tmp_path / name
    args = ["indicators", "--release", "1", "--out", str(out)]
    result = CliRunner().invoke(
        app, args + (["--format", given] if given else []), env=env | {"COLUMNS": "300"}
    )
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.replace("│", " ").split())
    assert message.format(out=out) in said
    assert not out.exists()
    assert not (Path(env["KVARUS_DATA_DIR"]) / "catalog.sqlite3").exists()  # refused up front


def test_csv_out_writes_a_formula_as_text(tmp_path: Path) -> None:
    """`--out x.csv`: a unit_code a spreadsheet would evaluate is written after an apostrophe;
    JSON keeps it as it is."""
    formula = "+SUM(1+1)*cmd|' /C calc'!A0"
    table = pa.table({"unit_code": [formula, "U1", ""], "numerator": [1, 2, 3]})
    command.write_output(table, tmp_path / "r.csv", command.OutputFormat.CSV)
    assert pacsv.read_csv(tmp_path / "r.csv")["unit_code"].to_pylist() == [
        "'" + formula,
        "U1",
        "",
    ]
    command.write_output(table, tmp_path / "r.json", command.OutputFormat.JSON)
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))[0]["unit_code"] == formula


def test_a_copied_data_directory_is_neither_computed_nor_served(
    write_extract: ExtractWriter, env: dict[str, str], tmp_path: Path
) -> None:
    """Its manifests name the original's files: `kvarus indicators` there wrote results computed
    from the original's rows (exit 0), and the API served them, or failed with an IOException
    once the original was gone (aggregates answered 500). Both refuse, as the writers do."""
    releases = _published(write_extract, env)
    copied = tmp_path / "copy"
    shutil.copytree(releases.parent, copied)
    elsewhere = {**env, "KVARUS_DATA_DIR": str(copied)}
    result = CliRunner().invoke(
        app, ["indicators", "--out", str(tmp_path / "x.json")], env=elsewhere
    )
    assert result.exit_code == 2, result.output
    assert "was the data directory copied or moved?" in " ".join(result.output.split())
    assert not (tmp_path / "x.json").exists()
    assert not (copied / "releases" / "1" / results.RESULTS_FILE).exists()
    with pytest.raises(ConfigurationError, match="copied or moved"):
        create_app(Settings(data_dir=copied))
    # Where it was made, both work.
    result = CliRunner().invoke(app, ["indicators", "--out", str(tmp_path / "x.json")], env=env)
    assert result.exit_code == 0, result.output
    create_app(Settings())
