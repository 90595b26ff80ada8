"""Write a whole synthetic register, chunk by chunk, in bounded memory."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Final

import numpy as np

from etl.generate.columns import ID_DIGITS, ID_PREFIX, Rows
from etl.generate.episodes import (
    Episodes,
    basis_rows,
    days,
    discharge_rows,
    end_reasons,
    followup_candidates,
    followup_rows,
    measurement_rows,
    simulate,
    year_of,
)
from etl.generate.planting import ORPHAN_EPISODES_FROM, Context, Planted, kinds, plant
from etl.generate.providers import ProviderProfile, build_profile
from etl.generate.rejects import write_rejects
from etl.generate.writers import FileFormat, FormWriter, open_writer
from schemas.forms import FORMS, Form
from schemas.organisations import Hierarchy

# Streams of the seed: one for the providers, one per chunk, the rest for the small files.
_PROFILE, _CHUNK, _NPR, _REJECTS, _KEY, _OPTOUT = range(6)
# A handful of opt-outs: one per this many patients, at least 3, at most 50.
OPTOUT_PER_PATIENTS: Final = 4_000
# Coverage is kept within these bounds even after rounding the NPR count (DOMAIN.md: coverage is
# registered / NPR episodes; the real register's providers lie between about 40 % and 95 %).
COVERAGE_BOUNDS: Final = (0.40, 0.95)
ROW_FORMS: Final = (Form.BASIS, Form.MEASUREMENT, Form.DISCHARGE, Form.FOLLOWUP)


@dataclass(frozen=True)
class GenerationSummary:
    """What `generate_register` wrote: rows and file per form, planted errors and reject files."""

    rows: dict[Form, int]
    paths: dict[Form, Path]
    planted: dict[Form, int]
    planted_errors: Path
    rejects: dict[str, Path]
    as_of: date


def as_of_date(years: tuple[int, int]) -> date:
    """Nothing in the register is dated after the last day of its last year."""
    return date(years[1], 12, 31)


def generate_register(
    out: Path,
    *,
    episodes: int,
    seed: int,
    file_format: FileFormat = "csv",
    error_rate: float = 0.0,
    years: tuple[int, int] = (2019, 2024),
    chunk_episodes: int = 100_000,
    progress: Callable[[int], None] | None = None,
) -> GenerationSummary:
    """Write a synthetic register of `episodes` treatment courses to `out` (see the package
    docstring). `progress` is called with the number of episodes finished after every chunk."""
    if episodes < 1:
        raise ValueError("episodes must be at least 1")
    if seed < 0:
        raise ValueError("seed must not be negative")
    if file_format not in ("csv", "xlsx", "parquet"):
        raise ValueError("file_format must be csv, xlsx or parquet")
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError("error_rate must lie between 0 and 1")
    if not 2000 <= years[0] <= years[1] <= 2100:
        raise ValueError("years must be first <= last, within 2000-2100")
    if chunk_episodes < 1:
        raise ValueError("chunk_episodes must be at least 1")

    out.mkdir(parents=True, exist_ok=True)
    hierarchy = Hierarchy.default()
    profile = build_profile(hierarchy, np.random.default_rng([seed, _PROFILE]))
    key = int(np.random.default_rng([seed, _KEY]).integers(0, 2**63 - 1))
    as_of = as_of_date(years)
    stamp = datetime(as_of.year, as_of.month, as_of.day)
    typed = file_format == "parquet"

    writers: dict[Form, FormWriter] = {
        form: open_writer(
            out, form.value, form, FORMS[form].column_names, file_format, key=key, stamp=stamp
        )
        for form in (*ROW_FORMS, Form.OPTOUT)
    }
    state = _State(error_rate=error_rate, typed=typed, as_of=days(as_of), years=years)
    npr_tally = np.zeros((profile.size, years[1] - years[0] + 1), dtype=np.int64)
    try:
        done = 0
        chunk = 0
        first_patient = 0
        while done < episodes:
            n = min(chunk_episodes, episodes - done)
            rng = np.random.default_rng([seed, _CHUNK, chunk])
            ep = simulate(
                rng,
                profile,
                n,
                first_episode=done + 1,
                first_patient=first_patient,
                years=years,
                as_of=as_of,
            )
            np.add.at(npr_tally, (ep.provider, year_of(ep.intake) - years[0]), 1)
            state.write_chunk(rng, ep, profile, writers)
            if chunk == 0:
                _write_optouts(
                    np.random.default_rng([seed, _OPTOUT]), ep, profile, writers[Form.OPTOUT], as_of
                )
            first_patient = int(ep.patient.max()) + 1
            done += n
            chunk += 1
            if progress is not None:
                progress(n)
    finally:
        for writer in writers.values():
            writer.close()

    npr_writer = open_writer(
        out,
        Form.NPR_COUNTS.value,
        Form.NPR_COUNTS,
        FORMS[Form.NPR_COUNTS].column_names,
        file_format,
        key=key,
        stamp=stamp,
    )
    npr_writer.write(_npr_counts(np.random.default_rng([seed, _NPR]), npr_tally, profile, years))
    npr_writer.close()

    planted_path = out / "planted_errors.json"
    planted_path.write_text(
        json.dumps(state.planted_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    rejects = write_rejects(
        out / "rejects",
        file_format,
        rng=np.random.default_rng([seed, _REJECTS]),
        profile=profile,
        hierarchy=hierarchy,
        years=years,
        as_of=as_of,
        key=key,
        stamp=stamp,
    )
    all_writers = {**writers, Form.NPR_COUNTS: npr_writer}
    return GenerationSummary(
        rows={form: all_writers[form].rows for form in Form},
        paths={form: all_writers[form].path for form in Form},
        planted={
            form: sum(sum(a.size for a in p) for p in state.planted[form].values()) for form in Form
        },
        planted_errors=planted_path,
        rejects=rejects,
        as_of=as_of,
    )


class _State:
    """Counters that run across chunks: record numbers per form, orphan episode numbers, and the
    planted record numbers per form and check."""

    def __init__(self, *, error_rate: float, typed: bool, as_of: int, years: tuple[int, int]):
        self.error_rate = error_rate
        self.as_of = as_of
        self.years = years
        self.kinds = {form: kinds(form, typed_format=typed) for form in ROW_FORMS}
        self.next_record = dict.fromkeys(Form, 1)
        self.next_orphan = ORPHAN_EPISODES_FROM
        self.planted: dict[Form, dict[str, list[np.ndarray]]] = {form: {} for form in Form}

    def write_chunk(
        self,
        rng: np.random.Generator,
        ep: Episodes,
        profile: ProviderProfile,
        writers: dict[Form, FormWriter],
    ) -> None:
        n = len(ep)
        everyone = np.arange(n)
        # An episode whose intake carries an error gets no further forms: its measurement points
        # would otherwise fail cross.no_intake without an error of their own.
        basis_error = rng.random(n) < self.error_rate
        basis = basis_rows(ep, everyone, profile)
        self._finish(rng, basis, basis_error, ep.intake, None, writers)

        reason = end_reasons(rng, ep, profile)
        alive = everyone[~basis_error]
        measurements, m_episode = measurement_rows(rng, ep, alive, profile, reason, self.as_of)
        self._finish(
            rng,
            measurements,
            rng.random(len(measurements)) < self.error_rate,
            ep.intake[m_episode],
            None,
            writers,
        )
        discharged = ~basis_error & (ep.discharge <= self.as_of)
        index = np.flatnonzero(discharged)
        discharges = discharge_rows(rng, ep, index, profile, reason)
        discharge_error = np.zeros(n, dtype=bool)
        discharge_error[index] = rng.random(index.size) < self.error_rate
        self._finish(rng, discharges, discharge_error[index], ep.intake[index], None, writers)
        index = np.flatnonzero(discharged & followup_candidates(rng, ep, reason, self.as_of))
        followups, discharge_day = followup_rows(rng, ep, index, profile)
        self._finish(
            rng,
            followups,
            rng.random(index.size) < self.error_rate,
            ep.intake[index],
            discharge_day,
            writers,
            discharge_clean=~discharge_error[index],
        )

    def _finish(
        self,
        rng: np.random.Generator,
        rows: Rows,
        selected: np.ndarray,
        intake: np.ndarray,
        discharge: np.ndarray | None,
        writers: dict[Form, FormWriter],
        discharge_clean: np.ndarray | None = None,
    ) -> None:
        """Plant the errors, number the records and write the rows."""
        form = rows.form
        context = Context(intake, discharge, self.as_of, self.next_orphan, discharge_clean)
        planted: Planted = plant(rows, selected, rng, context, self.kinds[form])
        self.next_orphan = context.next_orphan
        copies = np.ones(len(rows), dtype=np.int64)
        copies[planted.duplicates] = 2
        positions = np.repeat(np.arange(len(rows)), copies)
        if planted.duplicates.size:
            rows = rows.take(positions)
        first = self.next_record[form]
        rows.columns["record_id"] = first + np.arange(len(rows), dtype=np.int64)
        self.next_record[form] = first + len(rows)
        # Record number of each original row (its first copy) after the duplication.
        start = first + np.cumsum(copies) - copies
        for check, at in planted.positions.items():
            numbers = start[at]
            if check == "cross.duplicate_discharge":
                numbers = np.concatenate([numbers, numbers + 1])
            self.planted[form].setdefault(check, []).append(numbers)
        writers[form].write(rows)

    def planted_json(self) -> dict[str, dict[str, list[str]]]:
        result: dict[str, dict[str, list[str]]] = {}
        for form in Form:
            prefix = ID_PREFIX.get(form.value, "")
            result[form.value] = {
                check: [f"{prefix}{number:0{ID_DIGITS}d}" for number in np.sort(np.concatenate(p))]
                for check, p in sorted(self.planted[form].items())
            }
        return result


def _write_optouts(
    rng: np.random.Generator,
    ep: Episodes,
    profile: ProviderProfile,
    writer: FormWriter,
    as_of: date,
) -> None:
    """A handful of opt-outs of patients of the first chunk, dated in the last half year."""
    patients = np.unique(ep.patient)
    count = int(np.clip(patients.size // OPTOUT_PER_PATIENTS, 3, 50))
    count = min(count, patients.size)
    chosen = np.sort(rng.choice(patients, count, replace=False))
    first_episode = np.searchsorted(ep.patient, chosen)  # episodes are ordered by patient
    rows = Rows(
        Form.OPTOUT,
        {
            "record_id": np.arange(1, count + 1, dtype=np.int64),
            "patient_pseudonym": chosen,
            "provider_orgnr": ep.provider[first_episode],
            "optout_date": days(as_of) - rng.integers(0, 183, count),
        },
        {},
        {"provider_orgnr": list(profile.orgnrs)},
    )
    writer.write(rows)


def _npr_counts(
    rng: np.random.Generator, tally: np.ndarray, profile: ProviderProfile, years: tuple[int, int]
) -> Rows:
    """NPR's episode counts per provider and year where the register has any: registered / NPR is
    the provider's coverage (with yearly noise), kept within COVERAGE_BOUNDS after rounding."""
    provider, year = np.nonzero(tally)
    registered = tally[provider, year]
    coverage = np.clip(
        profile.coverage[provider] + rng.normal(0.0, 0.02, provider.size),
        COVERAGE_BOUNDS[0] + 0.02,
        COVERAGE_BOUNDS[1] - 0.01,
    )
    counted = np.ceil(registered / coverage).astype(np.int64)
    counted = np.minimum(counted, np.floor(registered / COVERAGE_BOUNDS[0]).astype(np.int64))
    counted = np.maximum(counted, np.ceil(registered / COVERAGE_BOUNDS[1]).astype(np.int64))
    return Rows(
        Form.NPR_COUNTS,
        {"provider_orgnr": provider, "year": year + years[0], "episodes": counted},
        {},
        {"provider_orgnr": list(profile.orgnrs)},
    )
