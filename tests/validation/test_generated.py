"""The suites find exactly the errors the generator planted, and the CLI judges generated files."""

import json
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etl import generate, read
from schemas.forms import EPISODE_FORMS, Form
from schemas.organisations import Hierarchy
from validation import ValidationResult, validate_extract

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def register(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("register")
    generate.generate_register(out, episodes=2000, seed=1, error_rate=0.02)
    return out


@pytest.fixture(scope="module")
def results(register: Path) -> dict[Form, ValidationResult]:
    known = frozenset(o.orgnr for o in Hierarchy.default().providers)
    today = generate.as_of_date((2019, 2024))
    return {
        form: validate_extract(
            read.read_extract(register / f"{form.value}.csv", form),
            form,
            known_providers=known,
            today=today,
        )
        for form in EPISODE_FORMS
    }


@pytest.mark.parametrize("form", EPISODE_FORMS)
def test_failing_record_ids_equal_the_planted_ones(
    register: Path, results: dict[Form, ValidationResult], form: Form
) -> None:
    planted = json.loads((register / "planted_errors.json").read_text())[form.value]
    # The per-file checks; cross.* need the warehouse (validation.cross_record).
    expected = {
        check: sorted(ids) for check, ids in planted.items() if not check.startswith("cross.")
    }
    result = results[form]
    found: dict[str, list[str]] = defaultdict(list)
    for row in result.row_failures.to_pylist():
        found[row["check"]].append(row["record_id"])
    assert {check: sorted(ids) for check, ids in found.items()} == expected
    assert expected  # 2 % of the rows: every form has planted errors
    assert not result.rejected
    errors = {c.check_id: c.failing_count for c in result.checks if c.severity == "error"}
    assert {check: n for check, n in errors.items() if n} == {
        check: len(ids) for check, ids in expected.items()
    }


def test_cli_accepts_a_generated_file_and_rejects_a_reject_file(
    register: Path, tmp_path: Path
) -> None:
    from service.cli import app

    out = tmp_path / "report.json"
    accepted = CliRunner().invoke(
        app, ["validate", str(register / "basis.csv"), "--form", "basis", "--format", "json",
              "--out", str(out)],
    )  # fmt: skip
    assert accepted.exit_code == 0, accepted.output
    report = json.loads(out.read_text())
    assert report["form"] == "basis"
    assert report["rows"] == 2000
    assert report["rejected"] is False

    for fatal in ("record_id.unique", "provider_orgnr.known", "intake_date.future"):
        rejected = CliRunner().invoke(
            app, ["validate", str(register / "rejects" / f"{fatal}.csv"), "--form", "basis"]
        )
        assert rejected.exit_code == 1, fatal
        assert f"Rejected: {fatal}: " in rejected.output

    npr = CliRunner().invoke(
        app,
        ["validate", str(register / "rejects" / "provider_year.unique.csv"), "--form",
         "npr_counts"],
    )  # fmt: skip
    assert npr.exit_code == 1
    assert "Rejected: provider_year.unique: 2 of 8 rows failed" in npr.output

    refused = CliRunner().invoke(
        app, ["validate", str(register / "rejects" / "unknown_column.csv"), "--form", "basis"]
    )
    assert refused.exit_code == 1
