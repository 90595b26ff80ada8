"""GET /indicators/{id}/variation: EQ1-3, CV and SCV, standardised for outcome indicators.

Crude figures come from the published rows per request; an outcome indicator's standardised
figures are computed with the release's results and stored in its results file. Older results
files hold none: their outcome indicators answer the crude fields with the new ones null.
"""

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from indicators import results
from indicators.engine import compute
from schemas.catalog import Release
from schemas.manifest import ReleaseManifest
from schemas.organisations import Hierarchy
from service.publishing import store_indicators, write_results
from service.settings import Settings
from tests.conftest import PROVIDER_A
from tests.indicators.conftest import TinyRelease
from tests.indicators.test_variation_report import UNITS, housing_release, independent
from tests.service.conftest import Headers, ReleaseWriter, result_row

API = "/api/v1"
STATISTICS = ("eq1", "eq2", "eq3", "cv", "scv")


def rows(
    indicator: str, providers: dict[str, tuple[int, int]], nation: tuple[int, int]
) -> list[dict[str, Any]]:
    """Caregiver provider rows (x, n) and the nation's, in 2024; PROVIDER_A suppressed with its
    numbers kept (as a trust that owns it sees them)."""
    out = [
        result_row(
            indicator_id=indicator, year=2024, level="nation", orgnr="1", name="Norge",
            numerator=nation[0], denominator=nation[1], value=nation[0] / nation[1],
        )
    ]  # fmt: skip
    for orgnr, (x, n) in providers.items():
        hidden = orgnr == PROVIDER_A
        out.append(
            result_row(
                indicator_id=indicator, year=2024, level="provider", orgnr=orgnr, name=orgnr,
                numerator=x, denominator=n, value=x / n, suppressed=hidden,
                suppression_reason="min_denominator" if hidden else None,
            )
        )  # fmt: skip
    return out


# Six shown providers of 10 with rates 0.1 0.2 0.4 0.5 0.6 0.8, and PROVIDER_A, suppressed, 0/3:
# were it counted, EQ1 would not exist (a lowest rate of 0).
CRUDE = {"p1": (1, 10), "p2": (2, 10), "p4": (4, 10), "p5": (5, 10), "p6": (6, 10)}
CRUDE |= {"p8": (8, 10), PROVIDER_A: (0, 3)}


def test_crude_figures_by_hand_the_same_for_every_role(
    client: TestClient, publish: ReleaseWriter, headers: dict[str, Headers]
) -> None:
    """EQ1 0.8/0.1 = 8, EQ2 0.6/0.2 = 3, EQ3 0.5/0.4 = 1.25; mean 13/30, Σ(r − mean)² = 1/3, so
    CV = √(1/15)/(13/30) = 0.595844; θ = 26/60 (the nation row's), E = 10θ = 13/3 each,
    Σ(O − E)² = 100/3: SCV = 100·((100/3)/6/(169/9) − 3/13) = 100·(50 − 39)/169 = 1100/169."""
    publish(1, results=rows("plan", CRUDE, (26, 60)))
    answers = [
        client.get(
            f"{API}/indicators/plan/variation", params={"year": 2024}, headers=headers[role]
        ).json()
        for role in ("anonymous", "trust", "researcher", "registry")
    ]
    body = answers[0]
    assert body["standardised"] is False
    assert body["providers"] == 6
    assert body["eq1"] == pytest.approx(8.0)
    assert body["eq2"] == pytest.approx(3.0)
    assert body["eq3"] == pytest.approx(1.25)
    assert body["cv"] == pytest.approx((1 / 15) ** 0.5 / (13 / 30), rel=1e-12)
    assert body["cv"] == pytest.approx(0.595844, abs=1e-6)
    assert body["scv"] == pytest.approx(1100 / 169, rel=1e-12)
    # Crude indicators: the compatibility fields are the same figures.
    assert (body["extremal_quotient"], body["coefficient_of_variation"]) == (
        body["eq1"],
        body["cv"],
    )
    assert PROVIDER_A not in {p["orgnr"] for p in body["points"]}
    # The trust sees its suppressed row's numbers elsewhere; never in the figures.
    assert all(answer == body for answer in answers[1:])


def test_old_release_outcome_indicator_falls_back_to_crude(
    client: TestClient, publish: ReleaseWriter
) -> None:
    """Results written before the figures were stored (no metadata in the file): an outcome
    indicator keeps today's crude fields, with the standardised ones null, not a 500."""
    publish(1, results=rows("stable_housing", CRUDE, (26, 60)))
    answer = client.get(f"{API}/indicators/stable_housing/variation", params={"year": 2024})
    assert answer.status_code == 200
    body = answer.json()
    assert body["standardised"] is False
    assert [body[name] for name in STATISTICS] == [None] * 5
    assert body["extremal_quotient"] == pytest.approx(8.0)
    assert body["coefficient_of_variation"] == pytest.approx(0.595844, abs=1e-6)
    assert body["providers"] == 6
    assert len(body["points"]) == 6


def _release(app: FastAPI, settings: Settings, tmp_path: Path) -> ReleaseManifest:
    """The hand-worked housing release of `tests.indicators.test_variation_report`, as release 1
    of the catalog (results not computed yet)."""
    manifest = housing_release(TinyRelease(tmp_path / "files"), UNITS).manifest(release=1)
    path = settings.releases_dir / "1" / "manifest.json"
    path.parent.mkdir(parents=True)
    manifest.write(path)
    with Session(app.state.engine) as session:
        session.add(Release(number=1, manifest_path=str(path)))
        session.commit()
    return manifest


def test_outcome_indicator_standardised_as_computed_with_the_release(
    app: FastAPI, client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    manifest = _release(app, settings, tmp_path)
    with Session(app.state.engine) as session:
        path = store_indicators(manifest, settings, session)
        session.commit()
    # The figures are in the results file, nothing beside it: an erasure deleting
    # indicators.parquet deletes them too.
    assert path is not None
    assert sorted(p.name for p in path.parent.iterdir()) == ["indicators.parquet", "manifest.json"]
    body = client.get(f"{API}/indicators/stable_housing/variation", params={"year": 2023}).json()
    assert body["standardised"] is True
    want = independent(UNITS)
    for name in ("eq1", "eq2", "cv", "scv"):
        assert body[name] == pytest.approx(want[name], rel=1e-12), name
    assert body["eq1"] == pytest.approx(55 / 26, rel=1e-12)  # by hand in the indicators test
    assert body["eq3"] is None  # 4 providers: EQ3 needs 6
    # The funnel and the compatibility fields stay crude: 5/6 over 1/6.
    assert body["extremal_quotient"] == pytest.approx(5.0)
    assert sorted(p["value"] for p in body["points"]) == pytest.approx([1 / 6, 0.5, 0.5, 5 / 6])
    # The resident context is not standardised (the case-mix rows carry the treating provider).
    resident = client.get(
        f"{API}/indicators/stable_housing/variation",
        params={"year": 2023, "context": "resident"},
    ).json()
    assert resident["standardised"] is False
    assert [resident[name] for name in STATISTICS] == [None] * 5


def test_results_computed_without_figures_get_them_when_written(
    app: FastAPI, client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    """`kvarus indicators` computes with the engine alone and writes through `write_results`,
    which adds the standardised figures: the same as a publish stores."""
    manifest = _release(app, settings, tmp_path)
    table = compute(manifest, hierarchy=Hierarchy.default())
    assert results.stored_variation(table.schema) is None
    with Session(app.state.engine) as session:
        path = write_results(1, table, settings, session, engine="duckdb")
        session.commit()
    assert path is not None
    stored = results.stored_variation(results.read(path).schema)
    assert stored is not None
    assert {(e["indicator_id"], e["year"]) for e in stored} == {("stable_housing", 2023)}
    body = client.get(f"{API}/indicators/stable_housing/variation", params={"year": 2023}).json()
    assert body["standardised"] is True
    assert body["eq1"] == pytest.approx(55 / 26, rel=1e-12)
