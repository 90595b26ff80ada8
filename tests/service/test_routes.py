"""One test class per route: status, body, scoping, ETag, CSV, size limit, audit rows."""

import csv
import io
import math
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlmodel import Session, select

import etl.load as etl_load
from etl.ledger import repair
from etl.privacy import is_identity_number
from etl.warehouse import Warehouse
from schemas.catalog import AuditEvent, Upload, ValidationRun
from schemas.errors import ConfigurationError
from schemas.forms import Form
from service import indicator_views
from service import uploads as uploads_module
from service.app import create_app
from service.settings import Settings
from tests.conftest import PROVIDER_A, PROVIDER_B, ExtractWriter, episode_row
from tests.service.conftest import RHF_NORD, Headers, ReleaseWriter

API = "/api/v1"
PROBLEM = "application/problem+json"


def audit_rows(app: FastAPI) -> list[AuditEvent]:
    app.state.audit.flush()
    with Session(app.state.engine) as session:
        return list(session.exec(select(AuditEvent).order_by(AuditEvent.id)))  # type: ignore[arg-type]


class TestStartup:
    def test_refuses_without_pseudonym_key(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError):
            create_app(Settings(data_dir=tmp_path))

    def test_refuses_demo_key_outside_demo_mode(self, tmp_path: Path) -> None:
        demo_key = SecretStr("kvarus-demo-key-not-for-production")
        with pytest.raises(ConfigurationError):
            create_app(Settings(data_dir=tmp_path, pseudonym_key=demo_key))
        assert create_app(Settings(data_dir=tmp_path, demo=True)).title == "Kvarus Analytics API"


class TestHealth:
    def test_live(self, client: TestClient) -> None:
        assert client.get("/health").json() == {"status": "ok", "checks": {}}


class TestReady:
    def test_ready(self, client: TestClient) -> None:
        response = client.get("/ready")
        assert response.status_code == 200
        assert response.json()["checks"] == {"catalog": True, "data_dir": True}

    def test_data_dir_gone_is_503(self, client: TestClient, settings: Settings) -> None:
        # The SQLite catalog lives in the data dir: move it aside, keep the files for the engine.
        shutil.rmtree(settings.data_dir / "releases", ignore_errors=True)
        settings.data_dir.rename(settings.data_dir.with_name("moved"))
        response = client.get("/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["data_dir"] is False


class TestProblems:
    def test_unknown_route_and_method(self, client: TestClient) -> None:
        missing = client.get(f"{API}/nothing-here")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == PROBLEM
        assert missing.json() == {
            "type": "https://kvarus.example/problems/not-found",
            "title": "Not found",
            "status": 404,
            "detail": "Not Found",
            # No route: the path as sent is not echoed (a client may type anything into it).
            "instance": None,
        }
        wrong = client.delete(f"{API}/indicators")
        assert wrong.status_code == 405
        assert wrong.json()["title"] == "Method not allowed"

    def test_a_trailing_slash_is_404_not_a_redirect_echoing_the_path(
        self, client: TestClient, app: FastAPI, headers: dict[str, Headers]
    ) -> None:
        # A valid identity number typed as an upload id, with a trailing slash: it was a 307 to
        # http://x/api/v1/uploads/01019010046 (the path echoed in `location`, the Host trusted),
        # the only answer that was not problem+json.
        typed = "01019010046"
        assert is_identity_number(typed)
        for path in (f"{API}/uploads/{typed}/", f"{API}/uploads/"):
            answer = client.get(
                path, headers={**headers["trust"], "Host": "x"}, follow_redirects=False
            )
            assert answer.status_code == 404, (path, answer.headers)
            assert answer.headers["content-type"] == PROBLEM
            assert "location" not in answer.headers
            assert answer.json()["instance"] is None
            assert typed not in answer.text
            assert typed not in str(answer.headers)
        rows = audit_rows(app)
        assert [(r.route, r.status, r.role) for r in rows] == [("(no route)", 404, "trust")] * 2
        assert typed not in repr(rows)

    def test_validation_error_names_field_not_value(
        self, client: TestClient, headers: dict[str, Headers]
    ) -> None:
        response = client.get(
            f"{API}/uploads", params={"provider": "12345678901"}, headers=headers["registry"]
        )
        assert response.status_code == 422
        body = response.json()
        assert body["title"] == "Input rejected"
        assert "query.provider" in body["detail"]
        assert "12345678901" not in response.text

    def test_bug_is_500_without_detail(
        self, client: TestClient, publish: ReleaseWriter, settings: Settings
    ) -> None:
        publish(1)
        (settings.releases_dir / "1" / "indicators.parquet").write_bytes(b"not parquet")
        response = client.get(f"{API}/indicators/results")
        assert response.status_code == 500
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["detail"] is None


class TestUploads:
    def test_upload_loads_in_background(
        self,
        client: TestClient,
        app: FastAPI,
        headers: dict[str, Headers],
        write_extract: ExtractWriter,
    ) -> None:
        path = write_extract(Form.BASIS, [episode_row(Form.BASIS, i, f"p{i}") for i in range(3)])
        with path.open("rb") as handle:
            response = client.post(
                f"{API}/uploads",
                files={"file": ("basis.csv", handle, "text/csv")},
                data={"form": "basis"},
                headers=headers["registry"],
            )
        assert response.status_code == 202
        upload_id = response.json()["id"]
        # TestClient runs background tasks before returning.
        detail = client.get(f"{API}/uploads/{upload_id}", headers=headers["registry"]).json()
        assert detail["status"] == "loaded", detail["error"]
        assert detail["rows_read"] == 3
        assert detail["rows_accepted"] == 3
        assert detail["providers"] == [PROVIDER_A]
        assert isinstance(detail["report"], dict)
        assert "p0" not in str(detail)
        own = client.get(f"{API}/uploads/{upload_id}", headers=headers["trust"])
        assert own.status_code == 200
        page = client.get(f"{API}/uploads", headers=headers["trust"]).json()
        assert page["total"] == 1
        assert page["items"][0]["rows_accepted"] == 3
        html = client.get(f"{API}/uploads/{upload_id}/report.html", headers=headers["registry"])
        assert html.status_code == 200
        assert html.headers["content-type"].startswith("text/html")

    def test_an_upload_job_is_never_taken_for_dead_while_it_runs(
        self,
        client: TestClient,
        app: FastAPI,
        headers: dict[str, Headers],
        settings: Settings,
        write_extract: ExtractWriter,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The route holds the request's lock from before its row is committed: another writer's
        repair in the middle of the job leaves the request alone; the lock goes with the job."""
        real_load = etl_load.load_file
        seen: list[str] = []

        def load_file(*args: object, **kwargs: object) -> Upload:
            with Session(app.state.engine) as other:
                repair(other, Warehouse(settings.warehouse_dir))
                seen.extend(r.status for r in other.exec(select(Upload)).all())
            return real_load(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(etl_load, "load_file", load_file)
        path = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "p1")])
        with path.open("rb") as handle:
            response = client.post(
                f"{API}/uploads",
                files={"file": ("basis.csv", handle, "text/csv")},
                data={"form": "basis"},
                headers=headers["registry"],
            )
        assert response.status_code == 202
        detail = client.get(f"{API}/uploads/{response.json()['id']}", headers=headers["registry"])
        assert (seen, detail.json()["status"]) == (["loading"], "loaded")
        assert list((settings.warehouse_dir / "requests").iterdir()) == []

    def test_a_file_name_holding_an_identity_number_is_not_kept(
        self, client: TestClient, app: FastAPI, headers: dict[str, Headers]
    ) -> None:
        # 01010750160: a valid identity number (check digits worked in tests/etl/test_privacy.py).
        response = client.post(
            f"{API}/uploads",
            files={"file": ("pasient_01010750160.csv", b"record_id;x\n1;2\n", "text/csv")},
            data={"form": "basis"},
            headers=headers["registry"],
        )
        assert response.status_code == 202
        listed = client.get(f"{API}/uploads", headers=headers["registry"])
        assert "01010750160" not in listed.text
        with Session(app.state.engine) as session:
            names = [upload.filename for upload in session.exec(select(Upload)).all()]
        assert not any("01010750160" in name for name in names)
        assert any("name withheld" in name for name in names)

    def test_too_large_is_413(
        self, settings: Settings, headers: dict[str, Headers], app: FastAPI
    ) -> None:
        app.state.settings = settings.model_copy(update={"max_upload_bytes": 10})
        with TestClient(app, raise_server_exceptions=False) as small:
            response = small.post(
                f"{API}/uploads",
                files={"file": ("basis.csv", b"x" * 11, "text/csv")},
                data={"form": "basis"},
                headers=headers["registry"],
            )
        assert response.status_code == 413
        assert response.headers["content-type"] == PROBLEM
        assert not (settings.data_dir / "incoming").exists()

    @pytest.mark.parametrize("failing", ["create_request", "commit"])
    def test_failed_request_leaves_no_file(
        self,
        client: TestClient,
        headers: dict[str, Headers],
        settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
        failing: str,
    ) -> None:
        def fail(*args: object, **kwargs: object) -> None:
            raise RuntimeError("catalog down")

        if failing == "create_request":
            monkeypatch.setattr(uploads_module, "create_request", fail)
        else:
            monkeypatch.setattr(Session, "commit", fail)
        response = client.post(
            f"{API}/uploads",
            files={"file": ("basis.csv", b"record_id;x\n1;2\n", "text/csv")},
            data={"form": "basis"},
            headers=headers["registry"],
        )
        assert response.status_code == 500
        assert not (settings.data_dir / "incoming").exists()
        requests = settings.warehouse_dir / "requests"
        assert not requests.exists() or not any(requests.iterdir())

    def test_list_filters_and_trust_scope(
        self, client: TestClient, app: FastAPI, headers: dict[str, Headers]
    ) -> None:
        with Session(app.state.engine) as session:
            for form, providers, status in (
                ("basis", PROVIDER_A, "loaded"),
                ("basis", PROVIDER_B, "loaded"),
                ("discharge", f"{PROVIDER_A},{PROVIDER_B}", "rejected"),
                # An opt-out naming A's patients and B's: the registry's alone.
                ("optout", f"{PROVIDER_A},{PROVIDER_B}", "loaded"),
            ):
                session.add(
                    Upload(
                        file_sha256="0" * 64,
                        form=form,
                        filename="f.csv",
                        providers=providers,
                        status=status,
                    )
                )
            session.commit()
            session.add(
                ValidationRun(
                    upload_id=3,
                    form="discharge",
                    suite_version="1",
                    passed=False,
                    report={"rejected": True},
                )
            )
            session.commit()
        registry = headers["registry"]
        assert client.get(f"{API}/uploads", headers=registry).json()["total"] == 4
        by_form = client.get(f"{API}/uploads", params={"form": "basis"}, headers=registry)
        assert [u["id"] for u in by_form.json()["items"]] == [2, 1]
        by_provider = client.get(
            f"{API}/uploads", params={"provider": PROVIDER_B}, headers=registry
        )
        assert [u["id"] for u in by_provider.json()["items"]] == [4, 3, 2]
        paged = client.get(f"{API}/uploads", params={"limit": 1, "offset": 2}, headers=registry)
        assert [u["id"] for u in paged.json()["items"]] == [2]
        trust = client.get(f"{API}/uploads", headers=headers["trust"]).json()
        assert ([u["id"] for u in trust["items"]], trust["total"]) == ([3, 1], 2)
        missing = client.get(f"{API}/uploads/99", headers=headers["trust"])
        assert (missing.status_code, missing.json()["detail"]) == (404, "no upload with this id")
        for other in (2, 4):  # B's own, and the opt-out: answered as the missing id is
            refused = client.get(f"{API}/uploads/{other}", headers=headers["trust"])
            assert (refused.status_code, refused.json()) == (404, missing.json())
            html = client.get(f"{API}/uploads/{other}/report.html", headers=headers["trust"])
            assert html.status_code == 404
        assert client.get(f"{API}/uploads/4", headers=registry).status_code == 200
        report = client.get(f"{API}/uploads/3", headers=headers["trust"]).json()["report"]
        # Upload 3 holds B's rows too: the trust of A sees counts only.
        assert report == {"rejected": True, "record_ids_withheld": True}
        full = client.get(f"{API}/uploads/3", headers=registry).json()["report"]
        assert full == {"rejected": True}
        assert client.get(f"{API}/uploads/99", headers=registry).status_code == 404


def check_report(failing: list[str]) -> dict[str, object]:
    """A quality report as `ValidationResult.to_report` writes it, with one failing check."""
    return {
        "form": "basis",
        "suite_version": "1",
        "rows": 10,
        "rejected": False,
        "rejection_reasons": [],
        "quarantined_rows": len(failing),
        "categories": {
            "plausibility": {
                "checks": 1,
                "passed": 0,
                "failed": 1,
                "not_applicable": 0,
                "error": 0,
                "failing_rows": len(failing),
            }
        },
        "checks": [
            {
                "check_id": "age.range",
                "column": "age",
                "category": "plausibility",
                "severity": "error",
                "status": "failed",
                "failing_count": len(failing),
                "failing_percent": 10.0 * len(failing),
                "tolerated_percent": 100.0,
                "failing_record_ids": failing,
                "failing_record_ids_total": len(failing),
            }
        ],
        "notes": ["Sheet 2 of the workbook holds data and was not read: ..."],
    }


class TestUploadReportScope:
    def test_trust_sees_other_providers_failing_ids_never(
        self, client: TestClient, app: FastAPI, headers: dict[str, Headers]
    ) -> None:
        with Session(app.state.engine) as session:
            for providers, failing in (
                (PROVIDER_A, ["A-REC-1"]),
                (f"{PROVIDER_A},{PROVIDER_B}", ["A-REC-2", "B-REC-9"]),
            ):
                upload = Upload(
                    file_sha256="0" * 64,
                    form="basis",
                    filename="f.csv",
                    providers=providers,
                    status="loaded",
                )
                session.add(upload)
                session.flush()
                session.add(
                    ValidationRun(
                        upload_id=upload.id,
                        form="basis",
                        suite_version="1",
                        passed=True,
                        report=check_report(failing),
                    )
                )
            session.commit()
        trust, registry = headers["trust"], headers["registry"]
        own = client.get(f"{API}/uploads/1", headers=trust).json()["report"]
        assert own["checks"][0]["failing_record_ids"] == ["A-REC-1"]
        shared = client.get(f"{API}/uploads/2", headers=trust)
        assert shared.status_code == 200
        report = shared.json()["report"]
        assert "REC" not in shared.text
        assert report["checks"][0]["failing_record_ids"] == []
        assert report["checks"][0]["failing_count"] == 2
        assert report["checks"][0]["failing_record_ids_total"] == 2
        assert report["quarantined_rows"] == 2
        assert report["categories"]["plausibility"]["failing_rows"] == 2
        assert report["notes"] == ["Sheet 2 of the workbook holds data and was not read: ..."]
        html = client.get(f"{API}/uploads/2/report.html", headers=trust)
        assert html.status_code == 200
        assert "REC" not in html.text
        assert "age.range" in html.text
        assert "B-REC-9" in client.get(f"{API}/uploads/2", headers=registry).text
        assert "B-REC-9" in client.get(f"{API}/uploads/2/report.html", headers=registry).text


@pytest.mark.parametrize(
    ("status", "detail"),
    [
        ("rejected", "No quality report: the upload was rejected before a report was stored"),
        ("running", "No quality report yet: the upload is running"),
    ],
)
def test_an_upload_without_a_report_says_why(
    client: TestClient, app: FastAPI, headers: dict[str, Headers], status: str, detail: str
) -> None:
    # A file rejected before validation never gets a report: "no quality report yet" misled.
    with Session(app.state.engine) as session:
        session.add(
            Upload(
                file_sha256="0" * 64,
                form="basis",
                filename="f.csv",
                providers=PROVIDER_A,
                status=status,
            )
        )
        session.commit()
    response = client.get(f"{API}/uploads/1/report.html", headers=headers["registry"])
    assert response.status_code == 404
    assert response.json()["detail"] == detail


class TestReleases:
    def test_list_and_detail(
        self, client: TestClient, publish: ReleaseWriter, settings: Settings
    ) -> None:
        publish(
            1,
            basis=[
                {"patient_key": "k", "episode_id": "e", "provider_orgnr": PROVIDER_A, "year": 2024}
            ],
        )
        publish(2)
        assert [r["number"] for r in client.get(f"{API}/releases").json()] == [2, 1]
        detail = client.get(f"{API}/releases/1").json()
        assert detail["tables"] == [{"name": "basis", "delta_version": 1, "row_count": 1}]
        assert str(settings.data_dir) not in client.get(f"{API}/releases/1").text
        assert client.get(f"{API}/releases/9").status_code == 404

    def test_publish_is_registry_only(
        self, client: TestClient, headers: dict[str, Headers]
    ) -> None:
        assert client.post(f"{API}/releases", json={}).status_code == 401
        forbidden = client.post(f"{API}/releases", json={}, headers=headers["trust"])
        assert forbidden.status_code == 403


class TestIndicatorResults:
    def test_filters_and_published_scope(
        self, client: TestClient, publish: ReleaseWriter, headers: dict[str, Headers]
    ) -> None:
        publish(1)
        anonymous = client.get(
            f"{API}/indicators/results", params={"indicator": "plan", "year": [2024]}
        ).json()
        assert anonymous["release"] == 1
        assert {(r["context"], r["level"], r["orgnr"]) for r in anonymous["items"]} == {
            ("caregiver", "nation", "1"),
            ("caregiver", "rhf", RHF_NORD),
            ("caregiver", "provider", PROVIDER_A),
            ("caregiver", "provider", PROVIDER_B),
            ("caregiver", "hf", PROVIDER_A),
            ("caregiver", "hf", PROVIDER_B),
            ("resident", "nation", "1"),
            ("resident", "hf", PROVIDER_A),
            ("resident", "hf", PROVIDER_B),
        }
        units = client.get(
            f"{API}/indicators/results", params={"level": "unit"}, headers=headers["trust"]
        ).json()["items"]
        assert [(u["orgnr"], u["unit_code"], u["numerator"]) for u in units] == [
            (PROVIDER_A, "U1", 9)
        ]
        study = client.get(
            f"{API}/indicators/results", params={"indicator": "study", "orgnr": PROVIDER_B}
        ).json()["items"]
        # A suppressed row keeps its place but not its small denominator (3).
        assert study[0]["suppressed"] is True
        assert study[0]["denominator"] is None
        registry = client.get(
            f"{API}/indicators/results",
            params={"indicator": "study", "orgnr": PROVIDER_B},
            headers=headers["registry"],
        ).json()["items"]
        assert registry[0]["denominator"] == 3

    def test_etag_304_and_scope(
        self, client: TestClient, publish: ReleaseWriter, headers: dict[str, Headers]
    ) -> None:
        publish(1)
        first = client.get(f"{API}/indicators/results", params={"year": [2024, 2023]})
        tag = first.headers["etag"]
        same = client.get(
            f"{API}/indicators/results",
            params={"year": [2023, 2024]},
            headers={"If-None-Match": tag},
        )
        assert same.status_code == 304
        assert same.content == b""
        other_scope = client.get(
            f"{API}/indicators/results",
            params={"year": [2023, 2024]},
            headers={"If-None-Match": tag, **headers["trust"]},
        )
        assert other_scope.status_code == 200
        assert other_scope.headers["etag"] != tag

    def test_rewritten_results_change_the_etag(
        self, client: TestClient, publish: ReleaseWriter, settings: Settings
    ) -> None:
        publish(1)
        params = {"indicator": "plan", "level": "nation", "context": "caregiver", "year": [2024]}
        first = client.get(f"{API}/indicators/results", params=params)
        tag = first.headers["etag"]
        assert [r["numerator"] for r in first.json()["items"]] == [75]
        # The indicator job rewrites release 1's results (new numbers, a later mtime).
        path = settings.releases_dir / "1" / "indicators.parquet"
        table = pq.read_table(path)
        numerators = pc.if_else(
            pc.equal(table["level"], "nation"), pa.scalar(80, pa.int64()), table["numerator"]
        )
        table = table.set_column(table.schema.get_field_index("numerator"), "numerator", numerators)
        pq.write_table(table, path)
        stat = os.stat(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        again = client.get(
            f"{API}/indicators/results", params=params, headers={"If-None-Match": tag}
        )
        assert again.status_code == 200
        assert again.headers["etag"] != tag
        assert [r["numerator"] for r in again.json()["items"]] == [80]

    def test_vary_names_authorization_and_accept(
        self, client: TestClient, publish: ReleaseWriter
    ) -> None:
        publish(1)
        for accept in ("application/json", "text/csv"):
            response = client.get(f"{API}/indicators/results", headers={"Accept": accept})
            assert response.status_code == 200
            vary = {v.strip().lower() for v in response.headers["vary"].split(",")}
            assert vary == {"authorization", "accept"}
            unchanged = client.get(
                f"{API}/indicators/results",
                headers={"Accept": accept, "If-None-Match": response.headers["etag"]},
            )
            assert unchanged.status_code == 304
            assert {v.strip().lower() for v in unchanged.headers["vary"].split(",")} == vary

    def test_csv(self, client: TestClient, publish: ReleaseWriter) -> None:
        publish(1)
        response = client.get(
            f"{API}/indicators/results",
            params={"indicator": "plan", "level": "nation", "context": "caregiver"},
            headers={"Accept": "text/csv"},
        )
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [(r["year"], r["numerator"], r["denominator"]) for r in rows] == [
            ("2023", "60", "100"),
            ("2024", "75", "100"),
        ]
        as_param = client.get(
            f"{API}/indicators/results", params={"indicator": "plan", "format": "csv"}
        )
        assert as_param.text.splitlines()[0].startswith("indicator_id,release,year")

    def test_no_release_is_404(self, client: TestClient) -> None:
        response = client.get(f"{API}/indicators/results")
        assert response.status_code == 404
        assert response.json()["detail"] == "no release has been published yet"


class TestIndicatorCatalogue:
    def test_catalogue(self, client: TestClient) -> None:
        items = {i["id"]: i for i in client.get(f"{API}/indicators").json()}
        assert items["study"]["target_high"] == pytest.approx(0.05)
        assert items["study"]["unit"] == "patient"


class TestProviderProfile:
    def test_profile(self, client: TestClient, publish: ReleaseWriter) -> None:
        publish(1)
        profile = client.get(f"{API}/providers/{PROVIDER_A}/profile").json()
        assert profile["rhf_orgnr"] == RHF_NORD
        plan = next(i for i in profile["indicators"] if i["indicator_id"] == "plan")
        assert [(r["year"], r["value"]) for r in plan["provider"]] == [(2023, 0.5), (2024, 0.9)]
        assert [r["value"] for r in plan["rhf"]] == [0.6, 0.8]
        assert [r["value"] for r in plan["nation"]] == [0.6, 0.75]
        assert client.get(f"{API}/providers/123456789/profile").status_code == 404


class TestVariation:
    def test_funnel(self, client: TestClient, publish: ReleaseWriter) -> None:
        publish(1)
        body = client.get(f"{API}/indicators/plan/variation", params={"year": 2024}).json()
        assert body["national_value"] == pytest.approx(0.75)
        assert body["extremal_quotient"] == pytest.approx(0.9 / (22 / 30))
        # One point per provider: the caregiver context compares `provider` rows, not the
        # `hf` rows the engine also writes for the same organisations.
        assert sorted(p["orgnr"] for p in body["points"]) == sorted([PROVIDER_A, PROVIDER_B])
        assert body["providers"] == 2
        a = next(p for p in body["points"] if p["orgnr"] == PROVIDER_A)
        assert (a["numerator"], a["denominator"]) == (18, 20)
        # 0.75 ± 1.959964·√(0.75·0.25/20)
        assert a["upper95"] == pytest.approx(0.75 + 1.959964 * (0.75 * 0.25 / 20) ** 0.5)
        assert a["signal"] == "not_significant"  # the engine's label
        resident = client.get(
            f"{API}/indicators/plan/variation", params={"year": 2024, "context": "resident"}
        ).json()
        assert resident["national_value"] == pytest.approx(0.74)
        assert {p["orgnr"]: (p["numerator"], p["denominator"]) for p in resident["points"]} == {
            PROVIDER_A: (19, 22),
            PROVIDER_B: (21, 28),
        }
        missing = client.get(f"{API}/indicators/plan/variation", params={"year": 1999})
        assert missing.status_code == 404
        assert (body["funnel"], body["phi"], body["tau2"]) == ("normal", None, None)

    def test_overdispersed_funnel(self, client: TestClient, publish: ReleaseWriter) -> None:
        """Spiegelhalter's option by hand: θ = 0.75, A 18/20 and B 22/30. On the arcsine scale
        z_A = (asin√0.9 − asin√0.75)·2√20 = 1.80539, z_B = (asin√(22/30) − asin√0.75)·2√30
        = −0.20858; winsorised at the 10th/90th percentiles (type 7, between the two):
        −0.20858 + 0.1·2.01396 = −0.00718 and 1.60399; φ = (1.60399² + 0.00718²)/2 = 1.28642;
        2φ > 1, so τ² = (2φ − 1)/(Σw − Σw²/Σw) with w = 4n = 80, 120: 1.57283/96 = 0.016384.
        A's upper 95 % limit: sin²(asin√0.75 + 1.959964·√(1/80 + τ²))."""
        publish(1)
        body = client.get(
            f"{API}/indicators/plan/variation", params={"year": 2024, "overdispersion": "true"}
        ).json()
        assert body["funnel"] == "overdispersed"
        assert body["phi"] == pytest.approx(1.28642, rel=1e-5)
        assert body["tau2"] == pytest.approx(0.016384, rel=1e-4)
        a = next(p for p in body["points"] if p["orgnr"] == PROVIDER_A)
        spread = (1 / 80 + body["tau2"]) ** 0.5
        expected = math.sin(math.asin(0.75**0.5) + 1.959964 * spread) ** 2
        assert a["upper95"] == pytest.approx(expected, rel=1e-8)  # z to 7 digits
        assert a["upper95"] > 0.75 + 1.959964 * (0.75 * 0.25 / 20) ** 0.5  # wider than normal
        assert a["signal"] == "not_significant"


class TestResearchParticipation:
    def test_against_target(self, client: TestClient, publish: ReleaseWriter) -> None:
        publish(1)
        body = client.get(f"{API}/research-participation").json()
        by_org = {i["orgnr"]: i for i in body["items"]}
        assert by_org["1"]["latest_value"] == pytest.approx(0.03)
        assert by_org["1"]["reaches_target"] is False
        assert by_org[PROVIDER_A]["reaches_target"] is True
        assert by_org[PROVIDER_B]["reaches_target"] is None
        # One item per organisation: its provider row, not the HF row beside it.
        assert sorted((i["orgnr"], i["level"]) for i in body["items"]) == sorted(
            [("1", "nation"), (PROVIDER_A, "provider"), (PROVIDER_B, "provider")]
        )
        assert by_org[PROVIDER_A]["trend"][0]["denominator"] == 20


class TestFunnelSignals:
    def test_engine_labels(self) -> None:
        rows = [
            {"indicator_id": "plan", "year": 2024, "context": "caregiver", "level": level,
             "orgnr": orgnr, "name": orgnr, "numerator": x, "denominator": n, "suppressed": False}
            for level, orgnr, x, n in (
                ("nation", "1", 500, 1000),
                ("provider", "A", 100, 100),  # far above 0.5 at n = 100
                ("provider", "B", 61, 100),  # z = 2.2: outside 95 %, inside 99.8 %
                ("provider", "C", 50, 100),
                ("provider", "D", 39, 100),
                ("provider", "E", 0, 100),
            )
        ]  # fmt: skip
        result = indicator_views.variation(
            rows, release=1, indicator="plan", year=2024, context="caregiver"
        )
        assert {p.orgnr: p.signal for p in result.points} == {
            "A": "high_0.001",
            "B": "high_0.025",
            "C": "not_significant",
            "D": "low_0.025",
            "E": "low_0.001",
        }

    def test_overdispersion_widens_the_limits(self) -> None:
        """The same five providers with Spiegelhalter's limits, by hand: z on the arcsine scale
        (asin√p − π/4)·2√100 = ±15.7080 (A, E), ±2.21814 (B, D), 0 (C); winsorised at the
        10th and 90th percentiles (type 7: −15.7080 + 0.4·13.4898 = −10.3120, and 10.3120); φ =
        (2·10.3120² + 2·2.21814²)/5 = 44.5033; τ² = (5φ − 4)/(2000 − 400) = 0.136573. The 95 %
        limits sin²(π/4 ± 1.959964·√(0.0025 + τ²)) = 0.002965 and 0.997035; the 99.8 % ones clip
        to 0 and 1. So only A (1.0) and E (0.0) stay outside, at 95 % only."""
        rows = [
            {"indicator_id": "plan", "year": 2024, "context": "caregiver", "level": level,
             "orgnr": orgnr, "name": orgnr, "numerator": x, "denominator": n, "suppressed": False}
            for level, orgnr, x, n in (
                ("nation", "1", 500, 1000),
                ("provider", "A", 100, 100),
                ("provider", "B", 61, 100),
                ("provider", "C", 50, 100),
                ("provider", "D", 39, 100),
                ("provider", "E", 0, 100),
            )
        ]  # fmt: skip
        result = indicator_views.variation(
            rows, release=1, indicator="plan", year=2024, context="caregiver", overdispersion=True
        )
        assert result.funnel == "overdispersed"
        assert result.phi == pytest.approx(44.5033, rel=1e-5)
        assert result.tau2 == pytest.approx(0.136573, rel=1e-5)
        point = result.points[0]
        assert point.lower95 == pytest.approx(0.002965, abs=1e-6)
        assert point.upper95 == pytest.approx(0.997035, abs=1e-6)
        assert (point.lower998, point.upper998) == (0.0, 1.0)
        assert {p.orgnr: p.signal for p in result.points} == {
            "A": "high_0.025",
            "B": "not_significant",
            "C": "not_significant",
            "D": "not_significant",
            "E": "low_0.025",
        }


class TestAudit:
    def test_rows_with_counts(
        self,
        client: TestClient,
        app: FastAPI,
        publish: ReleaseWriter,
        headers: dict[str, Headers],
    ) -> None:
        publish(1)
        client.get(
            f"{API}/indicators/results",
            params={"indicator": "plan", "level": "hf"},
            headers=headers["researcher"],
        )
        client.get(f"{API}/uploads")
        client.get("/health")
        rows = audit_rows(app)
        assert [(r.route, r.status, r.rows, r.release, r.role) for r in rows] == [
            # plan at level hf: caregiver A and B in 2023 and 2024, resident A and B in 2024.
            ("/api/v1/indicators/results", 200, 6, 1, "researcher"),
            ("/api/v1/uploads", 401, None, None, "anonymous"),
        ]
        assert rows[0].query == "indicator=plan&level=hf"
        page = client.get(f"{API}/audit", params={"status": 401}, headers=headers["registry"])
        assert page.json()["total"] == 1
        assert client.get(f"{API}/audit", headers=headers["trust"]).status_code == 403


class TestServeCommand:
    def test_refuses_to_start_without_key(self, tmp_path: Path) -> None:
        from typer.testing import CliRunner

        from service.cli import app as cli

        result = CliRunner().invoke(cli, ["serve"], env={"KVARUS_DATA_DIR": str(tmp_path)})
        assert result.exit_code == 2
        assert "KVARUS_PSEUDONYM_KEY is not set" in result.output
