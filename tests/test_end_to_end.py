"""The main job end to end: `kvarus demo` on a tiny register, then the API over its release.

The expected numbers are counted independently of the ETL and the engine: straight from the
generated basis file, leaving out the rows the generator planted errors in and the opted-out
patients.
"""

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app as cli
from service.settings import Settings

EPISODES = 400


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(
        cli,
        ["demo", "--no-serve", "--episodes", str(EPISODES), "--seed", "7"],
        env={"KVARUS_DEMO": "1", "KVARUS_DATA_DIR": str(data_dir), "KVARUS_DATABASE_URL": ""},
    )
    assert result.exit_code == 0, result.output
    return data_dir


def _read_extract(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252")
    return list(csv.DictReader(text.splitlines(), delimiter=";"))


def _expected_screening(extracts: Path) -> dict[int, tuple[int, int]]:
    """Per intake year: (intakes with AUDIT or DUDIT recorded, intakes), counted from the files."""
    planted = json.loads((extracts / "planted_errors.json").read_text())
    bad_ids = {record_id for ids in planted.get("basis", {}).values() for record_id in ids}
    opted_out = {row["patient_pseudonym"] for row in _read_extract(extracts / "optout.csv")}
    numerators: Counter[int] = Counter()
    denominators: Counter[int] = Counter()
    for row in _read_extract(extracts / "basis.csv"):
        if row["record_id"] in bad_ids or row["patient_pseudonym"] in opted_out:
            continue
        year = int(row["intake_date"][-4:])  # dd.mm.yyyy
        denominators[year] += 1
        numerators[year] += bool(row["audit"] or row["dudit"])
    return {year: (numerators[year], denominators[year]) for year in denominators}


def test_demo_publishes_a_release_with_the_counted_screening_indicator(demo_dir: Path) -> None:
    expected = _expected_screening(demo_dir / "demo-extracts")
    settings = Settings(data_dir=demo_dir, demo=True)
    with TestClient(create_app(settings)) as client:
        response = client.get(
            "/api/v1/indicators/results",
            params={"indicator": "screening", "level": "nation", "context": "caregiver"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["release"] == 1
    found = {item["year"]: (item["numerator"], item["denominator"]) for item in body["items"]}
    assert found == expected
    assert sum(denominator for _, denominator in expected.values()) > EPISODES * 0.9


def test_demo_leaves_no_source_pseudonym_in_the_warehouse(demo_dir: Path) -> None:
    pseudonyms = {
        row["patient_pseudonym"].encode()
        for row in _read_extract(demo_dir / "demo-extracts" / "basis.csv")[:50]
    }
    for path in (demo_dir / "warehouse").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(p in content for p in pseudonyms), path


def test_rerunning_the_demo_changes_nothing(demo_dir: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["demo", "--no-serve", "--episodes", str(EPISODES), "--seed", "7"],
        env={"KVARUS_DEMO": "1", "KVARUS_DATA_DIR": str(demo_dir), "KVARUS_DATABASE_URL": ""},
    )
    assert result.exit_code == 0, result.output
    assert "Nothing changed; release 1 stands" in result.output
    assert not (demo_dir / "releases" / "2").exists()
