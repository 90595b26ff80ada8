"""The synthetic register generator: files read back against the data dictionary, planted errors
found by an independent checker written here from EXTRACT_SPEC.md, determinism, realism figures."""

import hashlib
import json
import re
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import openpyxl
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

import etl.generate.writers as writers
from etl.generate import FileFormat, GenerationError, as_of_date, generate_register
from schemas.forms import FORMS, Form
from schemas.organisations import Hierarchy
from service.commands import generate as generate_command

FORMATS: tuple[FileFormat, ...] = ("csv", "xlsx", "parquet")
YEARS = (2019, 2024)
AS_OF = date(2024, 12, 31)
Row = dict[str, str | None]


# ---------------------------------------------------------------- reading the files back


def read_form(directory: Path, name: str, form: Form, file_format: FileFormat) -> list[Row]:
    """A file's rows as text (None for an empty cell), without the ETL reader."""
    path = directory / f"{name}.{file_format}"
    if file_format == "csv":
        raw = path.read_bytes()
        cp1252 = form in (Form.BASIS, Form.DISCHARGE)
        assert raw.startswith(b"\xef\xbb\xbf") is (not cp1252)
        header = raw.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0].decode().strip().split(";")
        table = pv.read_csv(
            path,
            read_options=pv.ReadOptions(encoding="cp1252" if cp1252 else "utf8"),
            parse_options=pv.ParseOptions(delimiter=";"),
            convert_options=pv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True
            ),
        )
        rows: list[Row] = table.to_pylist()
        return rows
    if file_format == "xlsx":
        book = openpyxl.load_workbook(path, read_only=True)
        assert len(book.sheetnames) == 1
        values = list(book.worksheets[0].iter_rows(values_only=True))
        book.close()
        names = [str(v) for v in values[0]]
        return [
            # Read-only openpyxl drops trailing empty cells of a row (write-only sheets have no
            # dimension record): pad them back.
            {
                n: None if v is None else str(v)
                for n, v in zip(names, _padded(row, names), strict=True)
            }
            for row in values[1:]
        ]
    table = pq.read_table(path)
    for field in table.schema:
        if field.name in FORMS[form].column_names:
            assert field.type == FORMS[form].column(field.name).arrow_type, field.name
    return [
        {
            k: None if v is None else v.isoformat() if isinstance(v, date) else str(v)
            for k, v in row.items()
        }
        for row in table.to_pylist()
    ]


def _padded(row: tuple[object, ...], names: list[str]) -> tuple[object, ...]:
    return row + (None,) * (len(names) - len(row))


def parse_date(text: str) -> date | None:
    match = re.fullmatch(r"(\d{2})\.(\d{2})\.(\d{4})|(\d{4})-(\d{2})-(\d{2})", text)
    if match is None:
        return None
    d, m, y, y2, m2, d2 = match.groups()
    try:
        return date(int(y or y2), int(m or m2), int(d or d2))
    except ValueError:
        return None


def parse_int(text: str) -> int | None:
    return int(text) if re.fullmatch(r"-?\d+", text) else None


# ---------------------------------------------------------------- an independent checker


def row_checks(form: Form, row: Row) -> set[str]:
    """The failing checks of one row on its own (EXTRACT_SPEC.md, check ids of interfaces.md)."""
    failed: set[str] = set()
    for spec in FORMS[form].columns:
        value = row[spec.name]
        if value is None:
            if spec.required:
                failed.add(f"{spec.name}.required")
            continue
        if spec.kind == "integer":
            number = parse_int(value)
            if number is None:
                failed.add(f"{spec.name}.type")
            elif spec.codes is not None and number not in spec.codes.values:
                failed.add(f"{spec.name}.codes")
            elif (spec.minimum is not None and number < spec.minimum) or (
                spec.maximum is not None and number > spec.maximum
            ):
                failed.add(f"{spec.name}.range")
        elif spec.kind == "date":
            day = parse_date(value)
            if day is None:
                failed.add(f"{spec.name}.type")
            elif day > AS_OF:
                failed.add(f"{spec.name}.future")
        if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
            failed.add(f"{spec.name}.pattern")
    if form is Form.BASIS and not failed and row["referral_date"] is not None:
        referral, intake = parse_date(row["referral_date"]), parse_date(str(row["intake_date"]))
        if referral is not None and intake is not None and referral > intake:
            failed.add("referral_date.after_intake")
    return failed


def register_failures(rows: dict[Form, list[Row]]) -> dict[Form, dict[str, set[str]]]:
    """record_id → failing checks per form, with the cross-record checks over the valid rows."""
    failures: dict[Form, dict[str, set[str]]] = {}
    for form in (Form.BASIS, Form.MEASUREMENT, Form.DISCHARGE, Form.FOLLOWUP):
        failures[form] = {str(r["record_id"]): row_checks(form, r) for r in rows[form]}
        assert len(failures[form]) == len(rows[form]), "record_id not unique"
    intake = {
        r["episode_id"]: parse_date(str(r["intake_date"]))
        for r in rows[Form.BASIS]
        if not failures[Form.BASIS][str(r["record_id"])]
    }
    discharges_per_episode: dict[str | None, int] = defaultdict(int)
    for r in rows[Form.DISCHARGE]:
        discharges_per_episode[r["episode_id"]] += 1
    for form, column in ((Form.MEASUREMENT, "measure_date"), (Form.DISCHARGE, "discharge_date")):
        for r in rows[form]:
            failed = failures[form][str(r["record_id"])]
            if r["episode_id"] not in intake:
                failed.add("cross.no_intake")
            elif (text := r[column]) is not None:
                day = parse_date(text)
                start = intake[r["episode_id"]]
                if day is not None and start is not None and day < start:
                    failed.add("cross.before_intake")
            if form is Form.DISCHARGE and discharges_per_episode[r["episode_id"]] > 1:
                failed.add("cross.duplicate_discharge")
    discharge = {
        r["episode_id"]: parse_date(str(r["discharge_date"]))
        for r in rows[Form.DISCHARGE]
        if not failures[Form.DISCHARGE][str(r["record_id"])]
    }
    for r in rows[Form.FOLLOWUP]:
        end = discharge.get(r["episode_id"])
        day = parse_date(r["followup_date"]) if r["followup_date"] is not None else None
        if end is not None and day is not None and day < end:
            failures[Form.FOLLOWUP][str(r["record_id"])].add("cross.followup_before_discharge")
    return failures


def read_register(directory: Path, file_format: FileFormat) -> dict[Form, list[Row]]:
    return {form: read_form(directory, form.value, form, file_format) for form in Form}


def digests(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("file_format", FORMATS)
def test_every_form_conforms_to_the_data_dictionary(
    tmp_path: Path, file_format: FileFormat
) -> None:
    calls: list[int] = []
    summary = generate_register(
        tmp_path,
        episodes=400,
        seed=3,
        file_format=file_format,
        chunk_episodes=150,
        progress=calls.append,
    )
    assert calls == [150, 150, 100]  # episodes finished per chunk
    rows = read_register(tmp_path, file_format)
    assert summary.as_of == AS_OF
    for form in Form:
        assert summary.paths[form] == tmp_path / f"{form.value}.{file_format}"
        assert summary.rows[form] == len(rows[form]) > 0
        assert list(rows[form][0]) == list(FORMS[form].column_names)
    assert summary.rows[Form.BASIS] == 400
    assert 3 <= summary.rows[Form.OPTOUT] <= 50
    # With no planted errors, every row passes every check, its own and the cross-record ones.
    failures = register_failures(rows)
    assert {form: {r: c for r, c in f.items() if c} for form, f in failures.items()} == {
        form: {} for form in failures
    }
    for form in (Form.OPTOUT, Form.NPR_COUNTS):
        assert all(not row_checks(form, r) for r in rows[form])
    assert json.loads(summary.planted_errors.read_text()) == {form.value: {} for form in Form}
    known = {o.orgnr for o in Hierarchy.default().providers}
    pseudonyms = {r["patient_pseudonym"] for r in rows[Form.BASIS]}
    assert all(re.fullmatch(r"P[0-9a-v]{16}", str(p)) for p in pseudonyms)
    assert len(pseudonyms) < 400  # several episodes per patient
    assert {r["patient_pseudonym"] for r in rows[Form.OPTOUT]} <= pseudonyms
    for form in Form:
        for r in rows[form]:
            assert r["provider_orgnr"] in known
            # No value anywhere has an 11-digit run (the identity-number guard's prefilter).
            assert not any(v and re.search(r"\d{11}", v) for v in r.values())
    ages = [int(str(r["age"])) for r in rows[Form.BASIS]]
    assert min(ages) >= 13
    assert max(ages) <= 110
    if file_format == "csv":
        # Windows-1252: "ø" of a unit code is the single byte 0xF8; UTF-8 files carry a BOM.
        assert b"\xf8" in (tmp_path / "basis.csv").read_bytes()
        assert b"\r\n" in (tmp_path / "basis.csv").read_bytes()
        assert "ø".encode() in (tmp_path / "measurement.csv").read_bytes()


@pytest.mark.parametrize("file_format", FORMATS)
def test_planted_errors_are_exactly_the_failing_rows(
    tmp_path: Path, file_format: FileFormat
) -> None:
    rate = 0.1
    # Fewer episodes in XLSX: reading it back with openpyxl is the slow part of this test.
    episodes = 1000 if file_format == "xlsx" else 1500
    summary = generate_register(
        tmp_path, episodes=episodes, seed=11, file_format=file_format, error_rate=rate
    )
    rows = read_register(tmp_path, file_format)
    planted = json.loads((tmp_path / "planted_errors.json").read_text())
    found = register_failures(rows)
    for form, by_record in found.items():
        expected: dict[str, set[str]] = defaultdict(set)
        for check, record_ids in planted[form.value].items():
            assert record_ids == sorted(record_ids)
            for record_id in record_ids:
                expected[record_id].add(check)
        # Every planted id is a row of the file with exactly that one failing check, and every
        # row without a planted error passes every check.
        assert all(len(checks) == 1 for checks in expected.values())
        assert {r: c for r, c in by_record.items() if c} == dict(expected), form
        count = sum(len(ids) for ids in planted[form.value].values())
        assert summary.planted[form] == count
    total_rows = sum(summary.rows[f] for f in found)
    total_planted = sum(summary.planted[f] for f in found)
    assert 0.8 * rate * total_rows <= total_planted <= 1.2 * rate * total_rows
    kinds = {
        re.sub(r"^[a-z_0-9]+\.(required|type|codes|range|pattern)$", r"\1", check)
        for form in planted.values()
        for check in form
    }
    expected_kinds = {
        "required",
        "codes",
        "range",
        "pattern",
        "referral_date.after_intake",
        "cross.before_intake",
        "cross.no_intake",
        "cross.followup_before_discharge",
        "cross.duplicate_discharge",
    } | ({"type"} if file_format != "parquet" else set())
    assert kinds == expected_kinds
    if file_format == "csv":
        garbage = {"abc", "x", "1/2", "ukjent", "31.02.2021", "2021-13-01", "32.01.2020"}
        assert garbage & {v for r in rows[Form.MEASUREMENT] for v in r.values() if v}


def _mod11(digits: str, weights: tuple[int, ...]) -> int:
    check = 11 - sum(int(d) * w for d, w in zip(digits, weights, strict=False)) % 11
    return 0 if check == 11 else check


def _looks_like_identity_number(value: str) -> bool:
    # Skatteetaten's fødselsnummer: k1 weights 3 7 6 1 8 9 4 5 2, k2 weights 5 4 3 2 7 6 5 4 3 2.
    return bool(re.fullmatch(r"\d{11}", value)) and (
        _mod11(value[:9], (3, 7, 6, 1, 8, 9, 4, 5, 2)) == int(value[9])
        and _mod11(value[:10], (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)) == int(value[10])
    )


@pytest.mark.parametrize("file_format", FORMATS)
def test_reject_files_carry_one_fatal_defect_each(tmp_path: Path, file_format: FileFormat) -> None:
    summary = generate_register(tmp_path, episodes=50, seed=5, file_format=file_format)
    assert sorted(summary.rejects) == sorted(
        [
            "identity_number",
            "intake_date.future",
            "provider_orgnr.known",
            "provider_year.unique",
            "record_id.unique",
            "unknown_column",
        ]
    )
    known = {o.orgnr for o in Hierarchy.default().providers}
    for kind, path in summary.rejects.items():
        assert path == tmp_path / "rejects" / f"{kind}.{file_format}"
        if kind == "provider_year.unique":
            rows = read_form(tmp_path / "rejects", kind, Form.NPR_COUNTS, file_format)
            pairs = [(r["provider_orgnr"], str(r["year"])) for r in rows]
            assert len(set(pairs)) == len(pairs) - 1
            assert {r["provider_orgnr"] for r in rows} <= known
            assert set(rows[0]) == set(FORMS[Form.NPR_COUNTS].column_names)
            continue
        rows = read_form(tmp_path / "rejects", kind, Form.BASIS, file_format)
        ids = [r["record_id"] for r in rows]
        unknown = {r["provider_orgnr"] for r in rows} - known
        future = [r for r in rows if (parse_date(str(r["intake_date"])) or AS_OF) > AS_OF]
        identity = [v for r in rows for v in r.values() if v and _looks_like_identity_number(v)]
        extra = set(rows[0]) - set(FORMS[Form.BASIS].column_names)
        defects = {
            "record_id.unique": len(set(ids)) == len(ids) - 1,
            "provider_orgnr.known": len(unknown) == 1,
            "intake_date.future": len(future) == 1,
            "identity_number": len(identity) == 1,
            "unknown_column": extra == {"merknad"},
        }
        assert {k for k, present in defects.items() if present} == {kind}


@pytest.mark.parametrize("file_format", FORMATS)
def test_same_seed_gives_the_same_bytes(tmp_path: Path, file_format: FileFormat) -> None:
    kwargs: dict[str, Any] = {
        "episodes": 300,
        "file_format": file_format,
        "error_rate": 0.1,
        "chunk_episodes": 128,
    }
    generate_register(tmp_path / "a", seed=42, **kwargs)
    generate_register(tmp_path / "b", seed=42, **kwargs)
    generate_register(tmp_path / "c", seed=43, **kwargs)
    first, again, other = (digests(tmp_path / d) for d in "abc")
    assert len(first) == 6 + 1 + 6  # forms, planted_errors.json, reject files
    assert first == again
    differing = {name for name in first if first[name] != other[name]}
    assert {f"{form.value}.{file_format}" for form in Form} <= differing


def test_xlsx_refuses_more_rows_than_a_sheet_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writers, "XLSX_MAX_ROWS", 100)
    with pytest.raises(GenerationError, match="exceed 100 rows"):
        generate_register(tmp_path, episodes=150, seed=1, file_format="xlsx")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"episodes": 0}, "episodes"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"years": (2024, 2019)}, "years"),
        ({"chunk_episodes": 0}, "chunk_episodes"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, arguments: dict[str, Any], message: str) -> None:
    kwargs: dict[str, Any] = {"episodes": 10, "seed": 1} | arguments
    with pytest.raises(ValueError, match=message):
        generate_register(tmp_path, **kwargs)
    assert not (tmp_path / "basis.csv").exists()


def _cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """kvarus (test)"""

    generate_command.register(app)
    return app


def test_cli_generates_and_refuses_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    app = _cli()
    assert runner.invoke(app, ["generate", "--help"]).exit_code == 0
    out = tmp_path / "out"
    for bad in (
        ["--error-rate", "2"],
        ["--years", "2024-2019"],
        ["--years", "x"],
        ["--format", "json"],
        ["--episodes", "0"],
    ):
        result = runner.invoke(app, ["generate", "--out", str(out), *bad])
        assert result.exit_code == 2, bad
    assert not out.exists()
    result = runner.invoke(
        app,
        [
            "generate",
            "--episodes",
            "120",
            "--seed",
            "4",
            "--out",
            str(out),
            "--format",
            "parquet",
            "--error-rate",
            "0.02",
            "--years",
            "2021-2022",
        ],
    )
    assert result.exit_code == 0, result.output
    basis = pq.read_table(out / "basis.parquet")
    assert basis.num_rows == 120
    years = {d.year for d in basis.column("intake_date").to_pylist() if d is not None}
    assert years <= {2021, 2022}
    assert as_of_date((2021, 2022)) == date(2022, 12, 31)


# ---------------------------------------------------------------- realism


@pytest.fixture(scope="module")
def register_20k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("register20k")
    generate_register(directory, episodes=20_000, seed=2024, file_format="parquet")
    return directory


def _query(directory: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    for form in Form:
        path = directory / f"{form.value}.parquet"
        con.execute(f"create view {form.value} as select * from read_parquet('{path}')")
    hierarchy = Hierarchy.default()
    orgs = pa.table(
        {
            "orgnr": [o.orgnr for o in hierarchy.providers],
            "private": [o.is_private for o in hierarchy.providers],
            "rhf": [hierarchy.rhf_of(o.orgnr).orgnr for o in hierarchy.providers],
        }
    )
    con.register("orgs", orgs)
    return con.execute(sql).fetchall()


@pytest.mark.slow
def test_realistic_figures(register_20k: Path) -> None:
    d = register_20k
    # Clinical-study participation: distinct patients with a study id in basis or measurement.
    [(share,)] = _query(
        d,
        """
        with records as (
            select patient_pseudonym p, provider_orgnr o, clinical_study_id s from basis
            union all select patient_pseudonym, provider_orgnr, clinical_study_id from measurement)
        select count(distinct p) filter (where s is not null) / count(distinct p) from records""",
    )
    assert 0.005 <= share <= 0.015
    high = _query(
        d,
        """
        with records as (
            select patient_pseudonym p, provider_orgnr o, clinical_study_id s from basis
            union all select patient_pseudonym, provider_orgnr, clinical_study_id from measurement)
        select o, count(distinct p) filter (where s is not null) / count(distinct p) r
        from records group by o having r >= 0.03""",
    )
    assert 2 <= len(high) <= 8
    # Private providers' share of courses in Helse Sør-Øst (DOMAIN.md: 64 % and 12 %).
    [(inpatient, outpatient)] = _query(
        d,
        """
        select avg(private::int) filter (where treatment_type in (2, 3)),
               avg(private::int) filter (where treatment_type = 1)
        from basis join orgs on provider_orgnr = orgnr where rhf = '991324968'""",
    )
    assert 0.55 <= inpatient <= 0.73
    assert 0.07 <= outpatient <= 0.17
    over_65 = _query(
        d,
        """
        select year(intake_date) y, avg((age >= 65)::int) from basis group by y order by y""",
    )
    assert [y for y, _ in over_65] == list(range(2019, 2025))
    assert over_65[-1][1] > over_65[0][1] + 0.02
    coverage = _query(
        d,
        """
        select b.provider_orgnr, b.y, b.n / npr.episodes
        from (select provider_orgnr, year(intake_date) y, count(*) n from basis group by all) b
        left join npr_counts npr on npr.provider_orgnr = b.provider_orgnr and npr.year = b.y""",
    )
    assert len(coverage) == len(_query(d, "select * from npr_counts"))
    assert all(0.40 <= c <= 0.95 for _, _, c in coverage)
    assert min(c for _, _, c in coverage) < 0.5
    assert max(c for _, _, c in coverage) > 0.9
    # Waiting days vary: some providers' median wait is far above the nation's, some far below.
    [(national,)] = _query(d, "select median(intake_date - referral_date) from basis")
    medians = [
        m
        for _, m in _query(
            d, "select provider_orgnr, median(intake_date - referral_date) from basis group by 1"
        )
    ]
    assert 15 <= national <= 45
    assert max(medians) > 2.5 * national
    assert min(medians) < national / 2
    [(followed,)] = _query(d, "select (select count(*) from followup) / count(*) from basis")
    assert 0.2 <= followed <= 0.4
    statuses = _query(d, "select distinct followup_status from followup order by 1")
    assert statuses == [(1,), (2,), (3,)]
    small = _query(
        d,
        """select provider_orgnr, year(intake_date) y, count(*) n from basis
                         group by all having n < 5""",
    )
    assert len(small) >= 1
    providers = _query(d, "select count(distinct provider_orgnr) from basis")
    assert providers == [(29,)]
    [(home_in_region,)] = _query(
        d,
        """
        select avg((h.rhf = p.rhf)::int) from basis
        join orgs p on provider_orgnr = p.orgnr join orgs h on home_hf_orgnr = h.orgnr""",
    )
    assert home_in_region >= 0.85


INDICATORS = {
    "screening": """select provider_orgnr o, (audit is not null or dudit is not null)::int x
                    from basis""",
    "research_consent": "select provider_orgnr o, research_consent x from basis",
    "followup_arranged": """select provider_orgnr o, followup_arranged x from discharge
                            where end_reason <> 4""",
    "mutual_end": """select provider_orgnr o, (end_reason = 1)::int x from discharge
                     where end_reason in (1, 2)""",
    "plan": """select provider_orgnr o, (treatment_plan = 2)::int x from measurement
               qualify row_number() over (partition by episode_id order by measure_date) = 1
               and status = 1""",
    "crisis_plan": """select provider_orgnr o, (crisis_plan = 2)::int x from measurement
               qualify row_number() over (partition by episode_id order by measure_date) = 1
               and status = 1""",
    "stable_housing": """select provider_orgnr o, (housing in (1, 2))::int x from followup
                         where followup_status = 1 and housing is not null""",
    "benefit": """select provider_orgnr o, (benefit >= 4)::int x from measurement
               qualify row_number() over (partition by episode_id order by measure_date) = 1
               and status = 1 and benefit is not null""",
    "reduced_use": """select f.provider_orgnr o, (f.use_days_30 < m.use_days_30)::int x
                      from followup f join (
                          select episode_id, use_days_30 from measurement
                          qualify row_number() over (
                              partition by episode_id order by measure_date) = 1) m
                      using (episode_id)
                      where f.followup_status = 1 and f.use_days_30 is not null
                        and m.use_days_30 is not null""",
}


@pytest.mark.slow
@pytest.mark.parametrize("indicator", sorted(INDICATORS))
def test_indicators_have_providers_outside_the_funnel(register_20k: Path, indicator: str) -> None:
    # Funnel limits θ ± 3.090232·√(θ(1−θ)/n) (99.8 %, DOMAIN.md), with θ the national value.
    [(above, below)] = _query(
        register_20k,
        f"""
        with events as ({INDICATORS[indicator]}),
        nation as (select avg(x) theta from events),
        providers as (select o, count(*) n, avg(x) p from events group by o)
        select count(*) filter (where p > theta + 3.090232 * sqrt(theta * (1 - theta) / n)),
               count(*) filter (where p < theta - 3.090232 * sqrt(theta * (1 - theta) / n))
        from providers, nation""",
    )
    assert above >= 1
    assert below >= 1
