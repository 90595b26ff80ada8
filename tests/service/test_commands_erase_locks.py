"""`kvarus erase`: by the time it releases the warehouse's write locks, the retired release and its
replacement are committed and the replacement has its indicators (a writer waiting for the locks,
another erasure or a publish, finds it; the API never serves it without results)."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlmodel import Session, col, create_engine, select
from typer.testing import CliRunner

import service.commands.etl
from etl.warehouse import TABLES, Warehouse
from indicators.results import RESULTS_FILE
from schemas.catalog import Release
from schemas.forms import Form
from service.cli import app
from tests.conftest import TEST_KEY, ExtractWriter, episode_row

ERASED = "P-ERASE-CLI-LOCKS-99"


def test_erase_commits_the_replacement_with_its_indicators_before_releasing_the_locks(
    write_extract: ExtractWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "var"
    env = {"KVARUS_DATA_DIR": str(data), "KVARUS_PSEUDONYM_KEY": TEST_KEY}
    env["KVARUS_DATABASE_URL"] = ""
    rows = [episode_row(Form.BASIS, 1, "P-KEEP"), episode_row(Form.BASIS, 2, ERASED)]
    for args in (["load", str(write_extract(Form.BASIS, rows)), "--form", "basis"], ["release"]):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 0, result.output

    at_release: list[tuple[list[tuple[int, bool]], list[int]]] = []

    class Watched(Warehouse):
        @contextmanager
        def writing(self, tables: Sequence[str] = TABLES) -> Iterator[None]:
            with super().writing(tables):
                yield
                catalog = create_engine(f"sqlite:///{data / 'catalog.sqlite3'}")
                with Session(catalog) as other:  # committed rows only
                    releases = other.exec(select(Release).order_by(col(Release.number))).all()
                catalog.dispose()
                releases_dir = data / "releases"
                with_results = [
                    r.number
                    for r in releases
                    if (releases_dir / str(r.number) / RESULTS_FILE).exists()
                ]
                at_release.append(([(r.number, r.retired) for r in releases], with_results))

    monkeypatch.setattr(service.commands.etl, "Warehouse", Watched)
    result = CliRunner().invoke(app, ["erase", "--pseudonym", ERASED], env=env)

    assert result.exit_code == 0, result.output
    assert "releases retired and rebuilt: 1->2" in result.output
    assert at_release == [([(1, True), (2, False)], [2])]
    assert "indicators computed" not in result.output  # nothing was left to compute after
