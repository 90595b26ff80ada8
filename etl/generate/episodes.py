"""Simulate a chunk of treatment courses (episodes) and their forms, vectorised with numpy.

One chunk holds whole patients: a patient's episodes follow one another in disjoint time slots of
the register's years (so that inpatient stays of one patient do not overlap), each intake at the
provider chosen for the episode's region and treatment type. Dates are days since 1970-01-01.
"""

from dataclasses import dataclass
from datetime import date
from typing import Final

import numpy as np

from etl.generate.columns import Rows
from etl.generate.providers import ProviderProfile
from schemas.forms import Form

EPOCH: Final = date(1970, 1, 1).toordinal()

EPISODES_PER_PATIENT: Final = (np.array([1, 2, 3, 4]), np.array([0.72, 0.18, 0.07, 0.03]))
# Treatment types 1..5 (outpatient, inpatient short, inpatient long, ambulant, LAR).
TREATMENT_TYPES: Final = (np.array([1, 2, 3, 4, 5]), np.array([0.52, 0.12, 0.10, 0.08, 0.18]))
SEXES: Final = (np.array([1, 2, 9]), np.array([0.68, 0.31, 0.01]))
SUBSTANCES: Final = (
    np.array([1, 2, 3, 4, 5, 6, 9]),
    np.array([0.38, 0.14, 0.14, 0.12, 0.05, 0.15, 0.02]),
)
# ICD-10 F1x by primary substance: alcohol F10, cannabis F12, opioids F11, stimulants F15,
# sedatives F13, polysubstance F19, other F18.
ICD10_OF_SUBSTANCE: Final = np.array([0, 0, 2, 1, 5, 3, 9, 0, 0, 8])  # index: substance code
HOUSING: Final = (np.array([1, 2, 3, 4, 5, 9]), np.array([0.35, 0.30, 0.12, 0.07, 0.08, 0.08]))
UNSTABLE_HOUSING: Final = (np.array([3, 4, 5, 9]), np.array([0.35, 0.2, 0.25, 0.2]))
EMPLOYMENT: Final = (np.array([1, 2, 3, 4, 9]), np.array([0.25, 0.05, 0.40, 0.22, 0.08]))
SEVERITY: Final = (np.array([1, 2, 3, 4, 5]), np.array([0.05, 0.15, 0.35, 0.30, 0.15]))
SATISFACTION: Final = (np.array([1, 2, 3, 4, 5]), np.array([0.04, 0.08, 0.2, 0.38, 0.3]))
FOLLOWUP_STATUS: Final = (np.array([1, 2, 3]), np.array([0.70, 0.22, 0.08]))
# Probability that a discharged, eligible episode is followed up (tuned to ~30 % of all episodes).
FOLLOWUP_SHARE: Final = 0.5
MEASUREMENT_INTERVAL: Final = 91  # days: "every ~3 months"
MAX_MEASUREMENTS: Final = 40


def pick(rng: np.random.Generator, choices: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    values, weights = choices
    return values[np.searchsorted(np.cumsum(weights) / weights.sum(), rng.random(n), "right")]


def days(day: date) -> int:
    return day.toordinal() - EPOCH


def year_of(day_numbers: np.ndarray) -> np.ndarray:
    return day_numbers.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970


@dataclass
class Episodes:
    """Episode-level arrays of one chunk (index = episode within the chunk)."""

    number: np.ndarray  # global episode number
    patient: np.ndarray  # global patient number
    provider: np.ndarray
    unit: np.ndarray
    intake: np.ndarray
    referral: np.ndarray
    referral_missing: np.ndarray
    age: np.ndarray
    sex: np.ndarray
    home_hf: np.ndarray
    home_hf_missing: np.ndarray
    treatment_type: np.ndarray
    substance: np.ndarray
    icd10: np.ndarray
    audit: np.ndarray
    audit_missing: np.ndarray
    dudit: np.ndarray
    dudit_missing: np.ndarray
    housing: np.ndarray
    employment: np.ndarray
    injecting: np.ndarray
    injecting_missing: np.ndarray
    severity: np.ndarray
    consent: np.ndarray
    study: np.ndarray  # study index or -1
    study_in_basis: np.ndarray
    discharge: np.ndarray  # planned discharge day (may lie after as-of: still in treatment)
    use_days: np.ndarray  # days of use before treatment (baseline for reduced_use)

    def __len__(self) -> int:
        return int(self.number.size)


def simulate(
    rng: np.random.Generator,
    profile: ProviderProfile,
    n: int,
    *,
    first_episode: int,
    first_patient: int,
    years: tuple[int, int],
    as_of: date,
) -> Episodes:
    """`n` episodes of whole patients, numbered from `first_episode` and `first_patient`."""
    per_patient = pick(rng, EPISODES_PER_PATIENT, n)
    cumulative = np.cumsum(per_patient)
    patients = int(np.searchsorted(cumulative, n)) + 1
    per_patient = per_patient[:patients].copy()
    per_patient[-1] -= int(cumulative[patients - 1]) - n
    patient_local = np.repeat(np.arange(patients), per_patient)
    starts = np.concatenate([[0], np.cumsum(per_patient)[:-1]])
    order = np.arange(n) - starts[patient_local]
    slots = per_patient[patient_local]

    # Time: each of a patient's episodes starts in its own slot of the register's years.
    start_day = days(date(years[0], 1, 1))
    span = days(as_of) - start_day + 1
    width = span / slots
    intake = start_day + np.floor(width * (order + rng.random(n))).astype(np.int64)
    intake = np.minimum(intake, days(as_of))
    slot_end = start_day + np.floor(width * (order + 1)).astype(np.int64)

    # Patient attributes: home region and HF, sex, age at the first episode.
    region_p = np.searchsorted(np.cumsum(profile.region_share), rng.random(patients), "right")
    region_p = np.minimum(region_p, len(profile.regions) - 1)
    home_p = (rng.random(patients)[:, None] >= profile.home_hf_cumulative[region_p]).sum(1)
    sex_p = pick(rng, SEXES, patients)
    first_intake = intake[starts]
    first_year = year_of(first_intake)
    # The share of patients over 65 grows across the years: 5 % in the first, 12 % in the last.
    share_65 = 0.05 + 0.07 * (first_year - years[0]) / max(1, years[1] - years[0])
    u = rng.random(patients)
    adult = np.clip(np.round(rng.normal(37.0, 11.5, patients)), 18, 64)
    young = rng.integers(13, 18, patients)
    old = np.minimum(65 + np.floor(rng.exponential(6.0, patients)), 110)
    age_first = np.where(u < 0.03, young, np.where(u < 0.03 + share_65, old, adult))
    age = np.minimum(age_first[patient_local] + (intake - first_intake[patient_local]) // 365, 110)

    # Treatment type, region of treatment (mostly the home region) and provider.
    treatment = pick(rng, TREATMENT_TYPES, n)
    treatment = np.where((age < 18) & (treatment == 5), 1, treatment)
    inpatient = (treatment == 2) | (treatment == 3)
    region = np.where(
        rng.random(n) < 0.92,
        region_p[patient_local],
        np.minimum(
            np.searchsorted(np.cumsum(profile.region_share), rng.random(n), "right"),
            len(profile.regions) - 1,
        ),
    )
    private = rng.random(n) < profile.private_share[region, inpatient.astype(np.int64)]
    group = region * 2 + private
    provider = (rng.random(n)[:, None] >= profile.group_cumulative[group]).sum(1)
    unit = profile.units[provider, inpatient.astype(np.int64), rng.integers(0, 3, n)]

    waiting = np.floor(rng.lognormal(np.log(profile.waiting_median[provider]), 0.6))
    waiting = waiting.astype(np.int64) + np.where(inpatient, 7, 0)
    referral = intake - waiting

    substance = pick(rng, SUBSTANCES, n)
    substance = np.where(treatment == 5, 3, substance)
    icd_base = ICD10_OF_SUBSTANCE[substance]
    decimal = np.where(rng.random(n) < 0.7, 2, np.where(rng.random(n) < 0.8, 1, 10))
    icd10 = icd_base * 11 + decimal  # index into ICD10_CODES

    screened = rng.random(n) < profile.propensity["screening"][provider]
    alcohol = substance == 1
    audit = np.clip(np.round(rng.normal(np.where(alcohol, 22, 8), 7)), 0, 40)
    dudit = np.clip(np.round(rng.normal(np.where(alcohol, 4, 26), 8)), 0, 44)
    audit_missing = ~screened | (~alcohol & (rng.random(n) < 0.5))
    dudit_missing = ~screened | (alcohol & (rng.random(n) < 0.6))

    injecting = (rng.random(n) < np.where((substance == 3) | (substance == 4), 0.3, 0.04)).astype(
        np.int64
    )
    study_enrolled = rng.random(n) < profile.study[provider]
    study = np.where(study_enrolled, provider * 3 + rng.integers(0, 3, n), -1)

    duration = np.select(
        [treatment == 1, treatment == 2, treatment == 3, treatment == 4],
        [
            rng.lognormal(np.log(200), 0.8, n),
            rng.uniform(7, 60, n),
            rng.uniform(60, 365, n),
            rng.lognormal(np.log(150), 0.6, n),
        ],
        rng.lognormal(np.log(900), 0.7, n),
    )
    duration = np.maximum(np.floor(duration).astype(np.int64), 1)
    duration = np.where(inpatient, np.minimum(duration, np.maximum(slot_end - intake, 1)), duration)

    return Episodes(
        number=first_episode + np.arange(n, dtype=np.int64),
        patient=first_patient + patient_local.astype(np.int64),
        provider=provider,
        unit=unit,
        intake=intake,
        referral=referral,
        referral_missing=rng.random(n) < 0.04,
        age=age.astype(np.int64),
        sex=sex_p[patient_local],
        home_hf=home_p[patient_local],
        home_hf_missing=rng.random(n) < 0.03,
        treatment_type=treatment,
        substance=substance,
        icd10=icd10,
        audit=audit.astype(np.int64),
        audit_missing=audit_missing,
        dudit=dudit.astype(np.int64),
        dudit_missing=dudit_missing,
        housing=pick(rng, HOUSING, n),
        employment=pick(rng, EMPLOYMENT, n),
        injecting=injecting,
        injecting_missing=rng.random(n) < 0.15,
        severity=pick(rng, SEVERITY, n),
        consent=(rng.random(n) < profile.propensity["research_consent"][provider]).astype(np.int64),
        study=study,
        study_in_basis=study_enrolled & (rng.random(n) < 0.7),
        discharge=intake + duration,
        use_days=np.where(rng.random(n) < 0.2, 0, rng.integers(1, 31, n)),
    )


ICD10_CODES: Final = [
    f"F1{chapter}" + ("" if decimal == 10 else f".{decimal}")
    for chapter in range(10)
    for decimal in range(11)
]


def common_columns(
    ep: Episodes, index: np.ndarray, profile: ProviderProfile
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """The five common columns for rows of episodes `index` (record_id numbered later)."""
    columns = {
        "record_id": np.zeros(index.size, dtype=np.int64),
        "episode_id": ep.number[index],
        "patient_pseudonym": ep.patient[index],
        "provider_orgnr": ep.provider[index],
        "unit_code": ep.unit[index],
    }
    texts = {"provider_orgnr": list(profile.orgnrs), "unit_code": list(profile.unit_codes)}
    return columns, texts


def study_ids(profile: ProviderProfile) -> list[str]:
    return [f"KS-{study:04d}" for study in range(profile.size * 3)]


def basis_rows(ep: Episodes, index: np.ndarray, profile: ProviderProfile) -> Rows:
    columns, texts = common_columns(ep, index, profile)
    texts |= {
        "home_hf_orgnr": list(profile.home_hfs),
        "icd10": list(ICD10_CODES),
        "clinical_study_id": study_ids(profile),
    }
    study = ep.study[index]
    in_basis = (study >= 0) & ep.study_in_basis[index]
    columns |= {
        "intake_date": ep.intake[index],
        "referral_date": ep.referral[index],
        "age": ep.age[index],
        "sex": ep.sex[index],
        "home_hf_orgnr": ep.home_hf[index],
        "treatment_type": ep.treatment_type[index],
        "primary_substance": ep.substance[index],
        "icd10": ep.icd10[index],
        "audit": ep.audit[index],
        "dudit": ep.dudit[index],
        "housing": ep.housing[index],
        "employment": ep.employment[index],
        "injecting_6m": ep.injecting[index],
        "severity": ep.severity[index],
        "research_consent": ep.consent[index],
        "clinical_study_id": np.maximum(study, 0),
    }
    nulls = {
        "referral_date": ep.referral_missing[index],
        "home_hf_orgnr": ep.home_hf_missing[index],
        "audit": ep.audit_missing[index],
        "dudit": ep.dudit_missing[index],
        "injecting_6m": ep.injecting_missing[index],
        "clinical_study_id": ~in_basis,
    }
    return Rows(Form.BASIS, columns, nulls, texts)


def end_reasons(rng: np.random.Generator, ep: Episodes, profile: ProviderProfile) -> np.ndarray:
    """End reason of every episode (used where it is discharged): deaths more often in the old."""
    n = len(ep)
    mutual = rng.random(n) < profile.propensity["mutual_end"][ep.provider]
    u = rng.random(n)
    died = u < np.where(ep.age >= 65, 0.05, 0.012)
    return np.select([died, u < 0.11, u < 0.14], [4, 3, 9], np.where(mutual, 1, 2)).astype(np.int64)


def measurement_rows(
    rng: np.random.Generator,
    ep: Episodes,
    index: np.ndarray,
    profile: ProviderProfile,
    end_reason: np.ndarray,
    as_of_day: int,
) -> tuple[Rows, np.ndarray]:
    """Measurement points of episodes `index`, about every 3 months until discharge or as-of.
    Returns the rows and, per row, the episode's position in the chunk."""
    duration = ep.discharge[index] - ep.intake[index]
    count = np.minimum((duration - 1) // MEASUREMENT_INTERVAL, MAX_MEASUREMENTS)
    count = np.where((count == 0) & (duration >= 30), 1, count)
    episode = np.repeat(index, count)
    k = np.arange(episode.size) - np.repeat(np.cumsum(count) - count, count) + 1
    offset = k * MEASUREMENT_INTERVAL + rng.integers(-10, 11, episode.size)
    offset = np.clip(offset, 1, ep.discharge[episode] - ep.intake[episode] - 1)
    measure = ep.intake[episode] + offset
    keep = measure <= as_of_day
    episode, k, measure = episode[keep], k[keep], measure[keep]
    m = episode.size
    first = k == 1
    last_of_episode = np.append(episode[1:] != episode[:-1], True) & (
        ep.discharge[episode] <= as_of_day
    )
    ending_status = np.select(
        [end_reason[episode] == 1, end_reason[episode] == 2, end_reason[episode] == 3], [4, 3, 2], 1
    )
    status = np.where(last_of_episode & (rng.random(m) < 0.5), ending_status, 1)

    provider = ep.provider[episode]

    def plan(propensity: np.ndarray) -> np.ndarray:
        p = np.where(first, propensity[provider], np.minimum(propensity[provider] + 0.1, 0.98))
        return np.where(rng.random(m) < p, 2, np.where(rng.random(m) < 0.8, 1, 3))

    large = rng.random(m) < profile.propensity["benefit"][provider]
    benefit = np.where(large, rng.integers(4, 6, m), rng.integers(1, 4, m))
    baseline = ep.use_days[episode]
    use = np.where(first, baseline, np.floor(baseline * rng.uniform(0.3, 1.0, m)))
    study = ep.study[episode]

    columns, texts = common_columns(ep, episode, profile)
    texts["clinical_study_id"] = study_ids(profile)
    columns |= {
        "measure_date": measure,
        "status": status,
        "treatment_plan": plan(profile.propensity["plan"]),
        "crisis_plan": plan(profile.propensity["crisis_plan"]),
        "benefit": benefit,
        "use_days_30": use.astype(np.int64),
        "clinical_study_id": np.maximum(study, 0),
    }
    nulls = {
        "benefit": rng.random(m) < 0.12,
        "use_days_30": rng.random(m) < 0.10,
        "clinical_study_id": study < 0,
    }
    return Rows(Form.MEASUREMENT, columns, nulls, texts), episode


def discharge_rows(
    rng: np.random.Generator,
    ep: Episodes,
    index: np.ndarray,
    profile: ProviderProfile,
    end_reason: np.ndarray,
) -> Rows:
    n = index.size
    reason = end_reason[index]
    screened = ~(ep.audit_missing[index] & ep.dudit_missing[index]) & (rng.random(n) < 0.4)
    arranged = rng.random(n) < profile.propensity["followup_arranged"][ep.provider[index]]
    columns, texts = common_columns(ep, index, profile)
    columns |= {
        "discharge_date": ep.discharge[index],
        "end_reason": reason,
        "audit": np.maximum(ep.audit[index] - rng.integers(0, 8, n), 0),
        "dudit": np.maximum(ep.dudit[index] - rng.integers(0, 8, n), 0),
        "housing": np.where(rng.random(n) < 0.85, ep.housing[index], pick(rng, HOUSING, n)),
        "employment": np.where(rng.random(n) < 0.9, ep.employment[index], pick(rng, EMPLOYMENT, n)),
        "followup_arranged": np.where((reason != 4) & arranged, 1, 0),
        "satisfaction": pick(rng, SATISFACTION, n),
    }
    nulls = {
        "audit": ~screened | ep.audit_missing[index],
        "dudit": ~screened | ep.dudit_missing[index],
        "satisfaction": (rng.random(n) < 0.3) | (reason == 4),
    }
    return Rows(Form.DISCHARGE, columns, nulls, texts)


def followup_rows(
    rng: np.random.Generator,
    ep: Episodes,
    index: np.ndarray,
    profile: ProviderProfile,
) -> tuple[Rows, np.ndarray]:
    """Follow-ups of the discharged episodes `index` (already selected and dated before as-of).
    Returns the rows and their follow-up dates' discharge days."""
    n = index.size
    provider = ep.provider[index]
    discharge = ep.discharge[index]
    followup = discharge + 365 + rng.integers(-20, 61, n)
    status = pick(rng, FOLLOWUP_STATUS, n)
    reached = status == 1
    reduced = rng.random(n) < profile.propensity["reduced_use"][provider]
    baseline = ep.use_days[index]
    use = np.where(
        reduced & (baseline > 0),
        np.floor(baseline * rng.random(n)),
        np.minimum(baseline + rng.integers(0, 4, n), 30),
    )
    stable = rng.random(n) < profile.propensity["stable_housing"][provider]
    housing = np.where(stable, rng.integers(1, 3, n), pick(rng, UNSTABLE_HOUSING, n))
    columns, texts = common_columns(ep, index, profile)
    columns |= {
        "followup_date": followup,
        "followup_status": status,
        "use_days_30": use.astype(np.int64),
        "housing": housing,
        "employment": pick(rng, EMPLOYMENT, n),
        "readmitted": (rng.random(n) < 0.2).astype(np.int64),
    }
    nulls = {
        "use_days_30": ~reached | (rng.random(n) < 0.08),
        "housing": ~reached | (rng.random(n) < 0.05),
        "employment": ~reached | (rng.random(n) < 0.05),
        "readmitted": ~reached | (rng.random(n) < 0.1),
    }
    return Rows(Form.FOLLOWUP, columns, nulls, texts), discharge


def followup_candidates(
    rng: np.random.Generator, ep: Episodes, end_reason: np.ndarray, as_of_day: int
) -> np.ndarray:
    """Mask of episodes that get a follow-up: discharged alive, a year since (the latest possible
    follow-up date before as-of), and selected (not every discharged patient is followed up)."""
    selected: np.ndarray = (
        (ep.discharge + 365 + 60 <= as_of_day)
        & (end_reason != 4)
        & (rng.random(len(ep)) < FOLLOWUP_SHARE)
    )
    return selected
