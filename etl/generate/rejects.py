"""Small extracts that the register must reject whole, one per fatal kind.

Each file is a handful of otherwise valid rows with one defect, named after its kind: basis files
`record_id.unique`, `provider_orgnr.known`, `intake_date.future`, `identity_number` (a value that
passes both check digits of a fødselsnummer) and `unknown_column`, and an npr_counts file
`provider_year.unique` (one provider's year on two rows).
"""

from datetime import date, datetime
from pathlib import Path
from typing import Final

import numpy as np

from etl.generate.columns import Rows
from etl.generate.episodes import basis_rows, days, simulate
from etl.generate.providers import ProviderProfile
from etl.generate.writers import FileFormat, open_writer
from schemas.forms import Form
from schemas.organisations import Hierarchy, is_valid_orgnr

REJECT_KINDS: Final = (
    "record_id.unique",
    "provider_orgnr.known",
    "intake_date.future",
    "identity_number",
    "unknown_column",
)
# Reject files of another form than basis, by kind.
OTHER_FORM_REJECTS: Final = {"provider_year.unique": Form.NPR_COUNTS}
ROWS: Final = 8
# Check-digit weights of the fødselsnummer (Skatteetaten): k1 over digits 1-9, k2 over 1-10.
_K1: Final = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2: Final = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def _check_digit(digits: list[int], weights: tuple[int, ...]) -> int:
    check = 11 - sum(d * w for d, w in zip(digits, weights, strict=True)) % 11
    return 0 if check == 11 else check  # 10: no valid check digit


def identity_number_like(rng: np.random.Generator) -> str:
    """A synthetic 11-digit value that passes both mod-11 check digits (birth date + individual
    number + k1 + k2): what the privacy guard must catch. It belongs to nobody we know of."""
    while True:
        day, month, year = rng.integers(1, 29), rng.integers(1, 13), rng.integers(0, 100)
        digits = [int(c) for c in f"{day:02d}{month:02d}{year:02d}{rng.integers(0, 1000):03d}"]
        k1 = _check_digit(digits, _K1)
        if k1 == 10:
            continue
        k2 = _check_digit([*digits, k1], _K2)
        if k2 != 10:
            return "".join(map(str, [*digits, k1, k2]))


def unknown_orgnr(hierarchy: Hierarchy) -> str:
    """A well-formed organisation number (valid check digit) that the register does not know."""
    for candidate in range(999_999_999, 900_000_000, -1):
        text = str(candidate)
        if is_valid_orgnr(text) and text not in hierarchy:
            return text
    raise AssertionError("no free organisation number")  # pragma: no cover


def write_rejects(
    directory: Path,
    file_format: FileFormat,
    *,
    rng: np.random.Generator,
    profile: ProviderProfile,
    hierarchy: Hierarchy,
    years: tuple[int, int],
    as_of: date,
    key: int,
    stamp: datetime,
) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    episodes = simulate(
        rng, profile, ROWS, first_episode=1, first_patient=0, years=years, as_of=as_of
    )
    paths: dict[str, Path] = {}
    for kind in REJECT_KINDS:
        rows = basis_rows(episodes, np.arange(ROWS), profile)
        rows.columns["record_id"] = np.arange(1, ROWS + 1, dtype=np.int64)
        rows.texts = {name: list(vocabulary) for name, vocabulary in rows.texts.items()}
        if kind == "record_id.unique":
            rows.columns["record_id"][ROWS - 1] = rows.columns["record_id"][0]
        elif kind == "provider_orgnr.known":
            rows.texts["provider_orgnr"].append(unknown_orgnr(hierarchy))
            rows.columns["provider_orgnr"][2] = len(rows.texts["provider_orgnr"]) - 1
        elif kind == "intake_date.future":
            future = date(as_of.year + 75, as_of.month, as_of.day)
            rows.columns["intake_date"][3] = days(future)
        elif kind == "identity_number":
            rows.texts["clinical_study_id"].append(identity_number_like(rng))
            rows.columns["clinical_study_id"][4] = len(rows.texts["clinical_study_id"]) - 1
            rows.null("clinical_study_id")[4] = False
        else:
            rows = _with_extra_column(rows)
        writer = open_writer(
            directory, kind, Form.BASIS, tuple(rows.columns), file_format, key=key, stamp=stamp
        )
        writer.write(rows)
        writer.close()
        paths[kind] = writer.path
    paths["provider_year.unique"] = _npr_counts_twice(
        directory, file_format, rng=rng, profile=profile, years=years, key=key, stamp=stamp
    )
    return paths


def _npr_counts_twice(
    directory: Path,
    file_format: FileFormat,
    *,
    rng: np.random.Generator,
    profile: ProviderProfile,
    years: tuple[int, int],
    key: int,
    stamp: datetime,
) -> Path:
    """npr_counts rows of distinct providers and years but the last, which repeats the first's
    provider and year (the table's key)."""
    providers = len(profile.orgnrs)
    index = np.arange(ROWS)
    provider = index % providers
    year = years[0] + (index // providers) % (years[1] - years[0] + 1)
    provider[-1], year[-1] = provider[0], year[0]
    rows = Rows(
        Form.NPR_COUNTS,
        {"provider_orgnr": provider, "year": year, "episodes": rng.integers(20, 500, ROWS)},
        {},
        {"provider_orgnr": list(profile.orgnrs)},
    )
    writer = open_writer(
        directory, "provider_year.unique", Form.NPR_COUNTS, tuple(rows.columns), file_format,
        key=key, stamp=stamp,
    )  # fmt: skip
    writer.write(rows)
    writer.close()
    return writer.path


def _with_extra_column(rows: Rows) -> Rows:
    """An unexpected free-text column ("merknad": remark): the kind that may carry identifiers."""
    rows.columns["merknad"] = np.zeros(len(rows), dtype=np.int64)
    rows.texts["merknad"] = ["Ingen merknad"]
    return rows
