"""Researcher aggregates: true counts, cell-key perturbation, suppression, differencing attacks."""

import itertools
import os
import threading
import time
from datetime import date
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from indicators.disclosure import CELL_KEY_MODULUS, perturb, with_margins
from schemas.api import AggregateCreate
from schemas.organisations import Hierarchy
from service import aggregates as aggregates_module
from service.aggregates import (
    PTABLE,
    MeasureTable,
    cell_key_salt,
    compute_tables,
    episode_view,
    protect,
    record_key,
    zeros_beside,
)
from service.app import warm_aggregates
from service.published import read_manifest
from service.settings import Settings
from tests.conftest import PROVIDER_A, PROVIDER_B
from tests.service.conftest import Headers, ReleaseWriter

URL = "/api/v1/aggregates"


def episodes(
    provider: str, n: int, *, tag: str, year: int = 2024, sex: int = 1
) -> list[dict[str, Any]]:
    """`n` episodes of `n` distinct patients at `provider` (patient keys `{tag}-{i}`), one basis
    record each."""
    return [
        {
            "record_id": f"{tag}-r{i}",
            "patient_key": f"{tag}-{i}",
            "episode_id": f"{tag}-e{i}",
            "provider_orgnr": provider,
            "intake_date": date(year, 1, 10),
            "sex": sex,
            "age": 30,
            "treatment_type": 1,
            "primary_substance": 1,
            "clinical_study_id": "S1" if i % 2 == 0 else None,
            "year": year,
        }
        for i in range(n)
    ]


def discharge_of(row: dict[str, Any], end_reason: int = 1) -> dict[str, Any]:
    """The discharge of a basis row's episode (2024-06-01, follow-up arranged)."""
    return {
        "record_id": f"d-{row['provider_orgnr']}-{row['episode_id']}",
        "patient_key": row["patient_key"],
        "episode_id": row["episode_id"],
        "provider_orgnr": row["provider_orgnr"],
        "discharge_date": date(2024, 6, 1),
        "end_reason": end_reason,
        "followup_arranged": 1,
        "year": 2024,
    }


def cells_by(body: dict[str, Any], dimension: str) -> dict[str | None, dict[str, Any]]:
    return {cell["dimensions"][dimension]: cell for cell in body["cells"]}


def expected_published(settings: Settings, patient_keys: list[str]) -> int:
    """The published count of a cell of these episodes, from the method's definition."""
    salt = cell_key_salt(settings.key_bytes())
    key = sum(record_key(salt, k) for k in patient_keys) % CELL_KEY_MODULUS
    return perturb(len(patient_keys), key, PTABLE)


class TestAggregateRoute:
    def test_small_provider_and_its_complement_are_suppressed(
        self,
        client: TestClient,
        headers: dict[str, Headers],
        publish: ReleaseWriter,
        settings: Settings,
    ) -> None:
        basis = episodes(PROVIDER_A, 20, tag="a") + episodes(PROVIDER_B, 2, tag="b")
        publish(1, basis=basis)
        response = client.post(
            URL,
            json={"measures": ["episodes"], "dimensions": ["provider"]},
            headers=headers["researcher"],
        )
        assert response.status_code == 200
        body = response.json()
        assert body["release"] == 1
        cells = cells_by(body, "provider")
        # B holds 2 (primary); A alone would give B away as total − A: A is suppressed too.
        assert cells[PROVIDER_B]["values"]["episodes"] is None
        assert cells[PROVIDER_B]["suppressed"]["episodes"] is True
        assert cells[PROVIDER_A]["values"]["episodes"] is None
        assert cells[PROVIDER_A]["suppressed"]["episodes"] is True
        zeros = [c for k, c in cells.items() if k not in (PROVIDER_A, PROVIDER_B, None)]
        assert len(zeros) == len(Hierarchy.default().providers) - 2
        assert all(c["values"]["episodes"] == 0 for c in zeros)
        # The total is its own cell: 22 episodes plus the noise its cell key selects.
        total = cells[None]["values"]["episodes"]
        assert total == expected_published(settings, [r["patient_key"] for r in basis])
        assert abs(total - 22) <= 2

    def test_same_cell_same_value_in_any_query(
        self, client: TestClient, headers: dict[str, Headers], publish: ReleaseWriter
    ) -> None:
        basis = (
            episodes(PROVIDER_A, 30, tag="a", sex=1)
            + episodes(PROVIDER_A, 25, tag="c", sex=2)
            + episodes(PROVIDER_B, 40, tag="b", sex=2)
        )
        publish(1, basis=basis)
        by_provider = client.post(
            URL,
            json={"measures": ["episodes"], "dimensions": ["provider"]},
            headers=headers["researcher"],
        ).json()
        by_provider_sex = client.post(
            URL,
            json={
                "measures": ["episodes"],
                "dimensions": ["sex", "provider"],
                "filters": {"sex": ["1", "2"]},
            },
            headers=headers["researcher"],
        ).json()
        a_alone = cells_by(by_provider, "provider")[PROVIDER_A]["values"]["episodes"]
        a_margin = next(
            c
            for c in by_provider_sex["cells"]
            if c["dimensions"] == {"sex": None, "provider": PROVIDER_A}
        )["values"]["episodes"]
        assert a_alone == a_margin
        assert abs(a_alone - 55) <= 2
        # The audit log keeps what each query asked, so that differencing can be traced.
        audited = client.get("/api/v1/audit", headers=headers["registry"]).json()["items"]
        asked = [e["query"] for e in reversed(audited) if e["route"] == URL]
        assert asked == [
            "measures=episodes&dimensions=provider",
            "measures=episodes&dimensions=sex,provider&filters.sex=1,2",
        ]

    def test_differencing_through_filters_learns_nothing(
        self, client: TestClient, headers: dict[str, Headers], publish: ReleaseWriter
    ) -> None:
        providers = sorted(o.orgnr for o in Hierarchy.default().providers)
        targets = [p for p in providers if p not in (PROVIDER_A, PROVIDER_B)][:8]
        small = {p: 1 + i % 4 for i, p in enumerate(targets)}  # true counts 1..4
        basis = episodes(PROVIDER_A, 120, tag="a") + episodes(PROVIDER_B, 90, tag="b")
        for p, n in small.items():
            basis += episodes(p, n, tag=f"s{p}")
        publish(1, basis=basis)

        def ask(dimensions: list[str], filters: dict[str, list[str]]) -> Any:
            return client.post(
                URL,
                json={"measures": ["episodes"], "dimensions": dimensions, "filters": filters},
                headers=headers["researcher"],
            )

        def published_cells(dimensions: list[str], filters: dict[str, list[str]]) -> Any:
            response = ask(dimensions, filters)
            assert response.status_code == 200
            return {
                tuple(sorted(c["dimensions"].items(), key=lambda kv: kv[0])): c["values"][
                    "episodes"
                ]
                for c in response.json()["cells"]
            }

        # "All but X" over the grand total: a filter on a dimension not asked for is refused.
        for target in targets:
            refused = ask(["year"], {"provider": [p for p in providers if p != target]})
            assert refused.status_code == 422
            assert "provider" in refused.json()["detail"]
        # With provider as a dimension, every filtered answer is a part of the one full table.
        full = published_cells(["provider"], {})
        total = full[(("provider", None),)]
        assert total == published_cells(["year"], {})[(("year", None),)]
        estimates: dict[str, set[int]] = {t: set() for t in targets}
        margin_differences: set[int] = set()
        for excluded in [*providers[:12], None]:
            base = [p for p in providers if p != excluded]
            all_but_x = published_cells(["provider"], {"provider": base})
            for target in targets:
                keep = [p for p in base if p != target]
                answer = published_cells(["provider"], {"provider": keep})
                # Only the kept providers and the full-population margin, each as in `full`.
                assert set(answer) == {(("provider", p),) for p in [*keep, None]}
                assert all(full[cell] == value for cell, value in answer.items())
                margin_differences.add(
                    all_but_x[(("provider", None),)] - answer[(("provider", None),)]
                )
                # "All but X" minus "all but X and the target", cell by cell as published.
                shown = sum(v or 0 for v in all_but_x.values()) - sum(
                    v or 0 for v in answer.values()
                )
                estimates[target].add(shown)
        # The margins never move: their difference is always 0, not the target.
        assert margin_differences == {0}
        # Whatever the filters, the attacker gets one and the same number per target (nothing
        # to average), and it is not the small count: the target is suppressed in the one table.
        for target, true_count in small.items():
            assert full[(("provider", target),)] is None
            assert estimates[target] == {0}
            assert true_count not in estimates[target]

    def test_filter_selects_cells_and_keeps_full_margins(
        self, client: TestClient, headers: dict[str, Headers], publish: ReleaseWriter
    ) -> None:
        basis = (
            episodes(PROVIDER_A, 30, tag="a", sex=1)
            + episodes(PROVIDER_A, 25, tag="c", sex=2)
            + episodes(PROVIDER_B, 40, tag="b", sex=2)
        )
        publish(1, basis=basis)
        body = {"measures": ["episodes"], "dimensions": ["provider", "sex"]}
        full = client.post(URL, json=body, headers=headers["researcher"]).json()
        filtered = client.post(
            URL, json=body | {"filters": {"sex": ["1"]}}, headers=headers["researcher"]
        ).json()

        def by_key(answer: dict[str, Any]) -> dict[tuple[str | None, str | None], Any]:
            return {
                (c["dimensions"]["provider"], c["dimensions"]["sex"]): c["values"]["episodes"]
                for c in answer["cells"]
            }

        everything, part = by_key(full), by_key(filtered)
        assert {sex for _, sex in part} == {"1", None}
        assert all(everything[cell] == value for cell, value in part.items())
        # The provider margin counts both sexes (55 episodes at A), not the 30 shown.
        assert part[(PROVIDER_A, None)] == everything[(PROVIDER_A, None)]
        assert abs(part[(PROVIDER_A, None)] - 55) <= 2
        assert abs(part[(None, None)] - 95) <= 2
        # The order of the dimensions does not change the table either.
        swapped = client.post(
            URL,
            json={"measures": ["episodes"], "dimensions": ["sex", "provider"]},
            headers=headers["researcher"],
        ).json()
        assert by_key(swapped) == everything

    def test_patients_and_discharge_measures(
        self, client: TestClient, headers: dict[str, Headers], publish: ReleaseWriter
    ) -> None:
        basis = episodes(PROVIDER_A, 12, tag="a")
        # One patient with a second episode: 13 episodes, 12 patients.
        basis.append(basis[0] | {"episode_id": "a-e99", "record_id": "a-r99"})
        discharge = [discharge_of(r, 1 if i < 10 else 2) for i, r in enumerate(basis)]
        publish(1, basis=basis, discharge=discharge)
        body = client.post(
            URL,
            json={
                "measures": ["episodes", "patients", "mutual_end"],
                "dimensions": ["end_reason"],
            },
            headers=headers["registry"],
        ).json()
        cells = cells_by(body, "end_reason")
        assert body["measures"] == ["episodes", "patients", "mutual_end"]
        assert abs(cells[None]["values"]["episodes"] - 13) <= 2
        assert abs(cells[None]["values"]["patients"] - 12) <= 2
        assert cells["2"]["suppressed"]["episodes"] is True  # 3 episodes ended by dropout
        # ... so the 10 ended by agreement are hidden as its partner (13 - 10 = 3). mutual_end
        # is the same records: shown as 10 ± 2 it gave the 3 away (the table's total is 13).
        assert cells["1"]["suppressed"]["episodes"] is True
        for end_reason in ("1", None):  # its end-reason margin is the end-reason-1 cell
            assert cells[end_reason]["suppressed"]["mutual_end"] is True
            assert cells[end_reason]["values"]["mutual_end"] is None
        for end_reason in ("2", "3", "none"):
            assert cells[end_reason]["values"]["mutual_end"] == 0
            assert cells[end_reason]["suppressed"]["mutual_end"] is False

    def test_mutual_end_by_end_reason_is_the_slice_of_episodes(
        self, client: TestClient, headers: dict[str, Headers], publish: ReleaseWriter
    ) -> None:
        basis = episodes(PROVIDER_A, 40, tag="a") + episodes(PROVIDER_B, 30, tag="b")
        reasons = [1, 1, 2, 3, 1, 9, 1, 2]
        discharge = [discharge_of(r, reasons[i % len(reasons)]) for i, r in enumerate(basis[:60])]
        publish(1, basis=basis, discharge=discharge)
        request = {"measures": ["mutual_end"], "dimensions": ["end_reason", "provider"]}
        alone = client.post(URL, json=request, headers=headers["researcher"]).json()
        both = client.post(
            URL,
            json=request | {"measures": ["episodes", "mutual_end"]},
            headers=headers["researcher"],
        ).json()
        assert alone["measures"] == ["mutual_end"]
        assert [c["values"]["mutual_end"] for c in alone["cells"]] == [
            c["values"]["mutual_end"] for c in both["cells"]
        ]
        table = {
            (c["dimensions"]["end_reason"], c["dimensions"]["provider"]): c for c in both["cells"]
        }
        for (end_reason, provider), cell in table.items():
            if end_reason in ("1", None):
                episodes_cell = table[("1", provider)]
                assert cell["values"]["mutual_end"] == episodes_cell["values"]["episodes"]
                assert cell["suppressed"]["mutual_end"] == episodes_cell["suppressed"]["episodes"]
            else:
                assert (cell["values"]["mutual_end"], cell["suppressed"]["mutual_end"]) == (
                    0,
                    False,
                )

    def test_roles_and_bad_requests(
        self, client: TestClient, headers: dict[str, Headers], publish: ReleaseWriter
    ) -> None:
        publish(1, basis=episodes(PROVIDER_A, 6, tag="a"))
        body = {"measures": ["episodes"], "dimensions": ["sex"]}
        assert client.post(URL, json=body).status_code == 401
        assert client.post(URL, json=body, headers=headers["trust"]).status_code == 403
        bad = client.post(
            URL,
            json={"measures": ["episodes"], "dimensions": ["pseudonym"]},
            headers=headers["researcher"],
        )
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
        missing = client.post(URL, json=body | {"release": 7}, headers=headers["researcher"])
        assert missing.status_code == 404
        empty = client.post(
            URL, json=body | {"filters": {"sex": ["7"]}}, headers=headers["researcher"]
        )
        assert empty.status_code == 422
        assert "sex" in empty.json()["detail"]


def _feasible_range(
    table: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_], cell: tuple[int, ...]
) -> tuple[float, float]:
    """Min and max of a suppressed cell given published cells and every margin equation."""
    shape = table.shape
    hidden = [c for c in itertools.product(*(range(n) for n in shape)) if mask[c]]
    index = {c: i for i, c in enumerate(hidden)}
    rows: list[list[float]] = []
    rhs: list[float] = []
    for axis, size in enumerate(shape):
        others = [range(n) for a, n in enumerate(shape) if a != axis]
        for rest in itertools.product(*others):
            line = [(*rest[:axis], i, *rest[axis:]) for i in range(size)]
            coefficients = [0.0] * len(hidden)
            constant = 0.0
            for position, member in enumerate(line):
                sign = -1.0 if position == size - 1 else 1.0
                if mask[member]:
                    coefficients[index[member]] += sign
                else:
                    constant += sign * float(table[member])
            if any(coefficients):
                rows.append(coefficients)
                rhs.append(-constant)
    objective = np.zeros(len(hidden))
    objective[index[cell]] = 1.0
    low = linprog(objective, A_eq=rows, b_eq=rhs, bounds=(0, None), method="highs")
    high = linprog(-objective, A_eq=rows, b_eq=rhs, bounds=(0, None), method="highs")
    assert low.status == 0
    assert low.fun is not None
    if high.status == 3:  # unbounded above
        return float(low.fun), np.inf
    assert high.fun is not None
    return float(low.fun), -float(high.fun)


@st.composite
def small_tables(draw: st.DrawFn) -> npt.NDArray[np.int64]:
    rows = draw(st.integers(2, 4))
    columns = draw(st.integers(2, 4))
    values = draw(st.lists(st.integers(0, 12), min_size=rows * columns, max_size=rows * columns))
    return np.array(values, dtype=np.int64).reshape(rows, columns)


class TestProtect:
    @hypothesis_settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(inner=small_tables(), seed=st.integers(0, 2**31))
    def test_no_small_cell_published_and_none_recoverable(
        self, inner: npt.NDArray[np.int64], seed: int
    ) -> None:
        counts = with_margins(inner)
        keys = np.random.default_rng(seed).integers(0, CELL_KEY_MODULUS, counts.shape)
        published, mask = protect(MeasureTable(counts, keys))
        shown = published[~mask]
        assert not np.any((shown >= 1) & (shown < 5))
        assert np.all(published[(counts == 0) & ~mask] == 0)
        # No breakdown of a small group (a line whose total is 1..4) shows a zero: hidden must
        # not mean "not 0" there, it would tell every member's category.
        for axis in range(counts.ndim):
            for line in itertools.product(*(range(n) for n in counts.shape[:axis])):
                for rest in itertools.product(*(range(n) for n in counts.shape[axis + 1 :])):
                    cells = (*line, slice(None), *rest)
                    if 1 <= counts[cells][-1] < 5:
                        assert not np.any((counts[cells] == 0) & ~mask[cells])
        beside = zeros_beside(counts, 5)
        for cell in map(tuple, np.argwhere(mask & ~beside)):
            # The attacker is granted the *true* published values: stronger than needed.
            lower, upper = _feasible_range(counts, mask, cell)
            assert upper - lower >= 1 - 1e-6
            if 1 <= counts[cell] < 5:
                assert upper - lower >= 5 - 1e-6

    def test_a_small_groups_zeros_are_hidden_with_it(self) -> None:
        # Provider A's one episode, of substance 3: with A's zeros shown beside its hidden cell,
        # the hidden cell was substance 3 (a reviewer read every attribute so, one table each).
        counts = with_margins(np.array([[0, 0, 1, 0], [10, 20, 30, 40], [12, 0, 9, 7]]))
        keys = np.zeros(counts.shape, dtype=np.int64)
        published, mask = protect(MeasureTable(counts, keys))
        assert mask[0, :].all()  # A's row, its total of 1 too: nothing tells which is 1
        assert not mask[2, 1]  # C's zero: in no small group's breakdown
        assert published[2, 1] == 0
        assert not mask[:, 4].all()  # the substance totals: still published where safe

    def test_worked_example(self) -> None:
        # 2 × 2 with one cell of 3: the whole inner table must hide (a 2 × 2 has no other
        # partner), and the margins alone then bound the 3 between 0 and 13.
        counts = with_margins(np.array([[3, 10], [10, 12]]))
        keys = np.zeros(counts.shape, dtype=np.int64)
        published, mask = protect(MeasureTable(counts, keys))
        assert mask[:2, :2].all()
        assert not mask[2, :].any()
        assert not mask[:, 2].any()
        # Cell key 0 selects the lowest noise of each row: 13 → 11, 22 → 20, 35 → 33.
        assert published[0, 2] == 11
        assert published[1, 2] == 20
        assert published[2, 2] == 33
        lower, upper = _feasible_range(counts, mask, (0, 0))
        assert (lower, upper) == pytest.approx((0.0, 13.0))


def test_request_model_rejects_unknown_measure() -> None:
    with pytest.raises(ValueError, match="measures"):
        AggregateCreate.model_validate({"measures": ["names"], "dimensions": ["sex"]})


def without_year(row: dict[str, Any]) -> dict[str, Any]:
    """A row as stored under `year=Y/` (the year is in the path)."""
    return {k: v for k, v in row.items() if k != "year"}


class TestEpisodeView:
    """The in-memory view of a release: reused while its files stand, dropped when they change."""

    def test_rewritten_files_are_read_again(
        self, publish: ReleaseWriter, settings: Settings
    ) -> None:
        publish(1, basis=episodes(PROVIDER_A, 20, tag="a"))
        manifest = read_manifest(settings, 1)
        salt = cell_key_salt(settings.key_bytes())
        request = AggregateCreate.model_validate({"measures": ["episodes"], "dimensions": ["sex"]})
        hierarchy = Hierarchy.default()
        _, before = compute_tables(manifest, request, salt=salt, hierarchy=hierarchy)
        assert before["episodes"].counts[-1] == 20
        assert episode_view(manifest, salt=salt, hierarchy=hierarchy) is episode_view(
            manifest, salt=salt, hierarchy=hierarchy
        )
        # The same file rewritten with 7 more episodes (and a later mtime).
        (path,) = manifest.files("basis")
        path = path.removeprefix("file://")
        rows = episodes(PROVIDER_A, 27, tag="a")
        pq.write_table(pa.Table.from_pylist([without_year(r) for r in rows]), path)
        stat = os.stat(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        _, after = compute_tables(manifest, request, salt=salt, hierarchy=hierarchy)
        assert after["episodes"].counts[-1] == 27
        keys = [r["patient_key"] for r in rows]
        assert after["episodes"].keys[-1] == sum(record_key(salt, k) for k in keys) % (
            CELL_KEY_MODULUS
        )

    def test_view_of_deleted_files_is_dropped(
        self, publish: ReleaseWriter, settings: Settings
    ) -> None:
        publish(1, basis=episodes(PROVIDER_A, 6, tag="a"))
        publish(2, basis=episodes(PROVIDER_B, 8, tag="b"))
        salt = cell_key_salt(settings.key_bytes())
        hierarchy = Hierarchy.default()
        first = read_manifest(settings, 1)
        view = episode_view(first, salt=salt, hierarchy=hierarchy)
        # An erasure deletes the files of the release it retires: asking for any other release
        # drops the view holding the erased rows.
        for file in first.files("basis"):
            os.unlink(file.removeprefix("file://"))
        episode_view(read_manifest(settings, 2), salt=salt, hierarchy=hierarchy)
        assert all(v is not view for v in aggregates_module._views.values())


class TestEpisodeCounting:
    """An episode is (provider_orgnr, episode_id), counted once with its first basis record's
    columns, and its discharge is joined to it alone. True counts, worked out by hand."""

    @staticmethod
    def tables(
        settings: Settings, measures: list[str], dimensions: list[str]
    ) -> tuple[list[list[str]], dict[str, MeasureTable]]:
        request = AggregateCreate.model_validate({"measures": measures, "dimensions": dimensions})
        return compute_tables(
            read_manifest(settings, 1),
            request,
            salt=cell_key_salt(settings.key_bytes()),
            hierarchy=Hierarchy.default(),
        )

    def test_same_episode_id_at_two_providers_are_two_episodes(
        self, publish: ReleaseWriter, settings: Settings
    ) -> None:
        # Patients a-0..a-5 each have episode a-e{i} at A (discharged by mutual agreement) and an
        # episode with the same id at B (open): each provider's system issues its own ids.
        at_a = episodes(PROVIDER_A, 6, tag="a")
        at_b = [
            r | {"provider_orgnr": PROVIDER_B, "record_id": f"b-r{i}"} for i, r in enumerate(at_a)
        ]
        publish(1, basis=at_a + at_b, discharge=[discharge_of(r) for r in at_a])
        measures = ["episodes", "mutual_end", "followup_arranged"]
        axes, tables = self.tables(settings, measures, ["provider", "end_reason"])
        a, b = axes[0].index(PROVIDER_A), axes[0].index(PROVIDER_B)
        mutual, none, total = axes[1].index("1"), axes[1].index("none"), len(axes[1])
        episodes_table = tables["episodes"].counts
        # A: its 6 episodes ended by mutual agreement. B: its 6 episodes open, not ended.
        assert (episodes_table[a, mutual], episodes_table[a, none], episodes_table[a, total]) == (
            6,
            0,
            6,
        )
        assert (episodes_table[b, mutual], episodes_table[b, none], episodes_table[b, total]) == (
            0,
            6,
            6,
        )
        for measure in ("mutual_end", "followup_arranged"):
            counts = tables[measure].counts
            assert (counts[a, total], counts[b, total], counts[-1, -1]) == (6, 0, 6)

    def test_an_episode_with_two_basis_records_counts_once_with_its_first(
        self, publish: ReleaseWriter, settings: Settings
    ) -> None:
        # 8 episodes of 8 patients at A, treatment type 1 (intake 2024-01-10, record a-r{i}).
        first = episodes(PROVIDER_A, 8, tag="a")
        for row in first:
            row["clinical_study_id"] = None
        resent = [
            # a-e0..a-e2 re-sent later under a new record_id with treatment type 2 (a-e0 in the
            # next year, a-e1 with a study id): still one episode each, of type 1, in 2024.
            first[0] | {"record_id": "a-r0-2", "intake_date": date(2025, 1, 15), "year": 2025},
            first[1] | {"record_id": "a-r1-2", "intake_date": date(2024, 3, 1)},
            first[2] | {"record_id": "a-r2-2", "intake_date": date(2024, 3, 1)},
            # a-e3: the same intake date, a later record_id: the first is a-r3, type 1.
            first[3] | {"record_id": "a-r3-2"},
            # a-e4: an earlier intake date under a later record_id: that one is first, type 2.
            first[4] | {"record_id": "a-r4-2", "intake_date": date(2024, 1, 5)},
        ]
        for row in resent:
            row["treatment_type"] = 2
        resent[1]["clinical_study_id"] = "S1"
        # a-e0..a-e5 discharged by mutual agreement, follow-up arranged; a-e6, a-e7 open.
        publish(1, basis=first + resent, discharge=[discharge_of(r) for r in first[:6]])

        measures = ["episodes", "mutual_end", "followup_arranged"]
        axes, tables = self.tables(settings, measures, ["year", "treatment_type"])
        assert axes[0] == ["2024"]  # no episode begins in 2025
        one, two = axes[1].index("1"), axes[1].index("2")
        # Types: 7 episodes of type 1 (a-e0..a-e3, a-e5..a-e7), 1 of type 2 (a-e4).
        counts = tables["episodes"].counts
        assert (counts[-1, one], counts[-1, two], counts[-1, -1]) == (7, 1, 8)
        # Discharged: a-e0..a-e3 and a-e5 of type 1, a-e4 of type 2; each discharge once.
        for measure in ("mutual_end", "followup_arranged"):
            counts = tables[measure].counts
            assert (counts[-1, one], counts[-1, two], counts[-1, -1]) == (5, 1, 6)
        axes, tables = self.tables(settings, ["episodes"], ["end_reason"])
        counts = tables["episodes"].counts
        assert (counts[axes[0].index("1")], counts[axes[0].index("none")], counts[-1]) == (6, 2, 8)
        # Patients: 8; in a study: a-1 (its re-sent intake carries the study id).
        axes, tables = self.tables(settings, ["patients", "study", "episodes"], ["provider"])
        a = axes[0].index(PROVIDER_A)
        assert tables["patients"].counts[a] == 8
        assert tables["study"].counts[a] == 1
        assert tables["episodes"].counts[a] == 8


class TestWarmUp:
    """The latest release's episode view is built at start-up, before any researcher asks."""

    def test_start_up_builds_the_latest_releases_view(
        self, app: FastAPI, publish: ReleaseWriter, settings: Settings
    ) -> None:
        publish(1, basis=episodes(PROVIDER_A, 6, tag="a"))
        publish(2, basis=episodes(PROVIDER_B, 8, tag="b"))
        aggregates_module._views.clear()
        warm_aggregates(settings, app.state.engine)
        assert [key[0] for key in aggregates_module._views] == [2]

    def test_nothing_to_warm_without_a_release(self, app: FastAPI, settings: Settings) -> None:
        aggregates_module._views.clear()
        warm_aggregates(settings, app.state.engine)
        assert not aggregates_module._views


class TestValidationErrorsEchoNothing:
    """A 422's locations name our fields only: a key the client chose is never echoed."""

    def test_unknown_filter_key_and_extra_field_are_not_echoed(
        self, client: TestClient, headers: dict[str, Headers], publish: ReleaseWriter
    ) -> None:
        publish(1, basis=episodes(PROVIDER_A, 6, tag="a"))
        for body in (
            {"measures": ["episodes"], "dimensions": ["sex"], "filters": {"pat-8831": ["1"]}},
            {"measures": ["episodes"], "dimensions": ["sex"], "pat-8831": 1},
            {"measures": ["episodes"], "dimensions": ["sex"], "filters": {"sex": {"pat-8831": 1}}},
        ):
            response = client.post(URL, json=body, headers=headers["researcher"])
            assert response.status_code == 422
            assert "pat-8831" not in response.text
            assert "<field>" in response.json()["detail"] or "filters.sex" in response.text
        # Whitelisted names are kept: the client learns which field was wrong.
        wrong = client.post(
            URL,
            json={"measures": ["episodes"], "dimensions": ["sex"], "filters": {"sex": "1"}},
            headers=headers["researcher"],
        )
        assert wrong.status_code == 422
        assert "body.filters.sex" in wrong.json()["detail"]
        unknown = client.post(
            URL,
            json={"measures": ["episodes"], "dimensions": ["sex"], "filters": {"pat-8831": []}},
            headers=headers["researcher"],
        )
        assert "body.filters.<field>" in unknown.json()["detail"]


class TestCostLimits:
    """One request cannot hold the server for minutes: the audit has a budget, protected tables
    are cached with the release's view, and one aggregate is computed at a time."""

    BODY: ClassVar[dict[str, Any]] = {"measures": ["episodes"], "dimensions": ["provider", "sex"]}

    @staticmethod
    def counting_protect(monkeypatch: pytest.MonkeyPatch) -> list[str]:
        calls: list[str] = []
        real = aggregates_module.protect

        def counted(table: MeasureTable, **kwargs: Any) -> Any:
            calls.append("protect")
            return real(table, **kwargs)

        monkeypatch.setattr(aggregates_module, "protect", counted)
        return calls

    def test_audit_over_budget_is_refused(
        self,
        client: TestClient,
        headers: dict[str, Headers],
        publish: ReleaseWriter,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # B's 2 episodes are a primary cell: its protection needs the LP audit.
        publish(1, basis=episodes(PROVIDER_A, 20, tag="a") + episodes(PROVIDER_B, 2, tag="b"))
        monkeypatch.setattr(aggregates_module, "AUDIT_BUDGET_SECONDS", -1.0, raising=False)
        response = client.post(URL, json=self.BODY, headers=headers["researcher"])
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert "-1 s of suppression audit" in detail
        assert "fewer dimensions" in detail
        # Within the budget the same request is answered.
        monkeypatch.setattr(aggregates_module, "AUDIT_BUDGET_SECONDS", 30.0)
        assert client.post(URL, json=self.BODY, headers=headers["researcher"]).status_code == 200

    def test_repeated_request_is_not_recomputed(
        self,
        client: TestClient,
        headers: dict[str, Headers],
        publish: ReleaseWriter,
        settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        publish(1, basis=episodes(PROVIDER_A, 20, tag="a") + episodes(PROVIDER_B, 2, tag="b"))
        calls = self.counting_protect(monkeypatch)
        first = client.post(URL, json=self.BODY, headers=headers["researcher"])
        assert first.status_code == 200
        assert calls == ["protect"]
        again = client.post(URL, json=self.BODY, headers=headers["researcher"])
        assert again.json() == first.json()
        # The same table asked in another order, filtered: the same cached table, its cells.
        swapped = client.post(
            URL,
            json={**self.BODY, "dimensions": ["sex", "provider"], "filters": {"sex": ["1"]}},
            headers=headers["researcher"],
        )
        assert swapped.status_code == 200
        assert calls == ["protect"]
        a = {tuple(c["dimensions"].values()): c["values"] for c in first.json()["cells"]}
        for cell in swapped.json()["cells"]:
            assert a[(cell["dimensions"]["provider"], cell["dimensions"]["sex"])] == cell["values"]
        # Another measure is a table of its own.
        client.post(
            URL, json={**self.BODY, "measures": ["patients"]}, headers=headers["researcher"]
        )
        assert calls == ["protect", "protect"]
        # Files rewritten (an erasure retires a release and deletes its files): the cached
        # tables go with the view; the answer counts the release as it now stands.
        (path,) = read_manifest(settings, 1).files("basis")
        path = path.removeprefix("file://")
        rows = episodes(PROVIDER_A, 27, tag="a")
        pq.write_table(pa.Table.from_pylist([without_year(r) for r in rows]), path)
        stat = os.stat(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        after = client.post(URL, json=self.BODY, headers=headers["researcher"])
        assert calls == ["protect", "protect", "protect"]
        b = cells_by(after.json(), "provider")
        assert b[PROVIDER_B]["values"]["episodes"] == 0
        keys = [r["patient_key"] for r in rows]
        totals = [c for c in after.json()["cells"] if set(c["dimensions"].values()) == {None}]
        assert totals[0]["values"]["episodes"] == expected_published(settings, keys)

    def test_episodes_with_mutual_end_by_end_reason_is_protected_once(
        self,
        client: TestClient,
        headers: dict[str, Headers],
        publish: ReleaseWriter,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """mutual_end by end_reason is the episodes table's slice: asked with episodes, the one
        table is protected once (not twice against the one audit budget)."""
        basis = episodes(PROVIDER_A, 20, tag="a") + episodes(PROVIDER_B, 2, tag="b")
        discharge = [discharge_of(r) for r in basis]
        publish(1, basis=basis, discharge=discharge)
        calls = self.counting_protect(monkeypatch)
        body = {"measures": ["episodes", "mutual_end"], "dimensions": ["end_reason", "provider"]}
        assert client.post(URL, json=body, headers=headers["researcher"]).status_code == 200
        assert calls == ["protect"]

    def test_second_concurrent_request_gets_503(
        self,
        client: TestClient,
        headers: dict[str, Headers],
        publish: ReleaseWriter,
        settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        publish(1, basis=episodes(PROVIDER_A, 20, tag="a") + episodes(PROVIDER_B, 2, tag="b"))
        monkeypatch.setattr(aggregates_module, "COMPUTE_WAIT_SECONDS", 0.2, raising=False)
        entered, release = threading.Event(), threading.Event()
        real = aggregates_module.protect

        def slow(table: MeasureTable, **kwargs: Any) -> Any:
            entered.set()
            assert release.wait(10)
            return real(table, **kwargs)

        monkeypatch.setattr(aggregates_module, "protect", slow)
        request = AggregateCreate.model_validate(self.BODY)
        answers: list[Any] = []
        first = threading.Thread(
            target=lambda: answers.append(
                aggregates_module.aggregate(
                    read_manifest(settings, 1),
                    request,
                    pseudonym_key=settings.key_bytes(),
                    hierarchy=Hierarchy.default(),
                )
            )
        )
        first.start()
        try:
            assert entered.wait(10)
            started = time.monotonic()
            busy = client.post(
                URL, json={**self.BODY, "measures": ["patients"]}, headers=headers["researcher"]
            )
            waited = time.monotonic() - started
        finally:
            release.set()
            first.join(10)
        assert busy.status_code == 503
        assert busy.headers["content-type"].startswith("application/problem+json")
        assert "another researcher aggregate is being computed" in busy.json()["detail"]
        assert 0.2 <= waited < 5
        assert len(answers) == 1
        # Once the first is done, the next is computed.
        after = client.post(
            URL, json={**self.BODY, "measures": ["patients"]}, headers=headers["researcher"]
        )
        assert after.status_code == 200
