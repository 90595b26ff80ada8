"""A trust sees an upload's failing record ids only when every row of it is provably its own.

The upload's provider list (`etl.load`) holds only well-formed orgnrs: a row whose provider_orgnr
is empty or malformed is in no one's list and may be another provider's record, so an upload
listing the trust alone is not "only mine" when its provider_orgnr checks failed.
"""

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from etl.load import _providers
from etl.read import read_extract
from schemas.catalog import Upload, ValidationRun
from schemas.forms import Form
from schemas.organisations import Hierarchy
from service import uploads
from service.auth import Principal
from tests.conftest import LOAD_DAY, PROVIDER_A, ExtractWriter, episode_row
from tests.service.conftest import Headers

API = "/api/v1"
KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)
TRUST = Principal(subject="client:1", role="trust", provider=PROVIDER_A)


def _validated(path: Path) -> tuple[Upload, dict[str, Any]]:
    """The ledger row and stored report the loader would write for `path` (its provider list
    and the suite's report), built by hand."""
    from validation import validate_extract

    raw = read_extract(path, Form.BASIS)
    report = validate_extract(raw, Form.BASIS, known_providers=KNOWN, today=LOAD_DAY).to_report()
    upload = Upload(
        file_sha256="0" * 64,
        form="basis",
        filename="f.csv",
        providers=_providers(raw),
        status="rejected",
    )
    return upload, report


def _check(report: dict[str, Any], check_id: str) -> dict[str, Any]:
    (check,) = [c for c in report["checks"] if c["check_id"] == check_id]
    return dict(check)


def _own_rows() -> list[dict[str, str]]:
    return [episode_row(Form.BASIS, n, f"P{n}") for n in range(6)]


@pytest.mark.parametrize(
    ("other", "check_id"),
    [
        ("", "provider_orgnr.required"),  # empty: not in the provider list
        ("98397467", "provider_orgnr.pattern"),  # 8 digits: not in the provider list either
    ],
)
def test_rows_without_a_well_formed_provider_withhold_record_ids(
    write_extract: ExtractWriter, other: str, check_id: str
) -> None:
    rows = _own_rows() + [
        episode_row(Form.BASIS, n, f"X{n}", record_id=f"XOTHER0000{n}", provider_orgnr=other)
        for n in range(2)
    ]
    upload, report = _validated(write_extract(Form.BASIS, rows))
    assert uploads.providers_of(upload) == [PROVIDER_A]  # the trust alone is listed
    assert _check(report, check_id)["failing_record_ids"] == ["XOTHER00000", "XOTHER00001"]

    seen = uploads.report_for(upload, TRUST, report)
    assert seen["record_ids_withheld"] is True
    assert _check(seen, check_id)["failing_record_ids"] == []
    assert _check(seen, check_id)["failing_count"] == 2
    assert "XOTHER" not in repr(seen)
    # The registry still sees them.
    registry = Principal(subject="client:2", role="registry")
    assert uploads.report_for(upload, registry, report) is report


def test_an_upload_of_the_trusts_rows_only_shows_their_ids(write_extract: ExtractWriter) -> None:
    rows = _own_rows()
    rows[1]["age"] = "200"  # the trust's own failing row
    upload, report = _validated(write_extract(Form.BASIS, rows))
    assert _check(report, "provider_orgnr.required")["status"] == "passed"
    seen = uploads.report_for(upload, TRUST, report)
    assert seen is report
    assert _check(seen, "age.range")["failing_record_ids"] == ["b1"]


def test_the_routes_withhold_ids_of_rows_without_a_provider(
    write_extract: ExtractWriter,
    client: TestClient,
    app: FastAPI,
    headers: dict[str, Headers],
) -> None:
    rows = _own_rows() + [
        episode_row(Form.BASIS, n, f"X{n}", record_id=f"XOTHER0000{n}", provider_orgnr="")
        for n in range(2)
    ]
    upload, report = _validated(write_extract(Form.BASIS, rows))
    with Session(app.state.engine) as session:
        session.add(upload)
        session.flush()
        session.add(
            ValidationRun(
                upload_id=upload.id, form="basis", suite_version="1", passed=False, report=report
            )
        )
        session.commit()
        upload_id = upload.id
    trust = headers["trust"]
    body = client.get(f"{API}/uploads/{upload_id}", headers=trust)
    assert body.status_code == 200
    assert body.json()["report"]["record_ids_withheld"] is True
    assert "XOTHER" not in body.text
    html = client.get(f"{API}/uploads/{upload_id}/report.html", headers=trust)
    assert html.status_code == 200
    assert "provider_orgnr.required" in html.text
    assert "XOTHER" not in html.text
    registry = client.get(f"{API}/uploads/{upload_id}", headers=headers["registry"])
    assert "XOTHER00000" in registry.text
