"""The synthetic register's providers: volumes, treating units and per-provider propensities.

Every provider of `Hierarchy.default()` treats patients (the HFs, including the private non-profit
hospitals, and the private contracted providers). The figures below are the generator's own model,
chosen so that the indicators of DOMAIN.md have something to find:
- private providers in Helse Sør-Øst hold 64 % of inpatient and 12 % of outpatient courses
  (DOMAIN.md, Organisation);
- per indicator two large providers lie clearly above and two clearly below the rest (outside the
  99.8 % funnel limits at a 20,000-episode register), the others vary mildly;
- two providers are so small that some of their years have fewer than 5 episodes.
"""

from dataclasses import dataclass
from typing import Final

import numpy as np

from schemas.organisations import Hierarchy, Organisation

# Share of all episodes by region (RHF orgnr), roughly the regions' shares of TSB activity.
REGION_SHARES: Final[dict[str, float]] = {
    "991324968": 0.56,  # Helse Sør-Øst
    "983658725": 0.21,  # Helse Vest
    "983658776": 0.13,  # Helse Midt-Norge
    "883658752": 0.10,  # Helse Nord
}
HELSE_SOR_OST: Final = "991324968"

# Private share of (inpatient, other) courses per region. Helse Sør-Øst: DOMAIN.md (64 % / 12 %).
# Helse Nord's is tiny so that its one private provider is a small provider (< 5 episodes a year at
# 20,000 episodes over six years).
PRIVATE_SHARES: Final[dict[str, tuple[float, float]]] = {
    "991324968": (0.64, 0.12),
    "983658725": (0.30, 0.04),
    "983658776": (0.25, 0.03),
    "883658752": (0.06, 0.004),
}
DEFAULT_PRIVATE_SHARE: Final = (0.30, 0.05)

# Relative volume of a provider within its (region, public/private) group; 1.0 where not listed.
# Haraldsplass treats few TSB patients here: the second small provider.
VOLUME_WEIGHTS: Final[dict[str, float]] = {
    "983971636": 1.3,  # Ahus
    "993467049": 1.4,  # OUS
    "983975259": 0.6,  # Vestfold
    "983971709": 0.9,  # Innlandet
    "983975267": 0.5,  # Telemark
    "983971768": 0.8,  # Østfold
    "983975240": 0.8,  # Sørlandet
    "894166762": 1.2,  # Vestre Viken
    "983974732": 0.5,  # Førde
    "983974724": 1.5,  # Bergen
    "983974694": 0.7,  # Fonna
    "983974678": 1.1,  # Stavanger
    "984027737": 0.03,  # Haraldsplass
    "983974791": 0.6,  # Nord-Trøndelag
    "883974832": 1.4,  # St. Olav
    "997005562": 1.0,  # Møre og Romsdal
    "983974880": 0.4,  # Finnmark
    "983974899": 1.3,  # UNN
    "983974910": 0.9,  # Nordland
    "983974929": 0.5,  # Helgeland
}

# National level of each proportion indicator (probability of the numerator event), on which the
# providers vary. `study` is the per-episode enrolment probability: TSB stood at 1 % of patients in
# 2021 (DOMAIN.md).
BASE_PROPENSITY: Final[dict[str, float]] = {
    "plan": 0.78,
    "crisis_plan": 0.55,
    "benefit": 0.65,
    "mutual_end": 0.68,
    "screening": 0.82,
    "followup_arranged": 0.80,
    "reduced_use": 0.55,
    "stable_housing": 0.60,
    "research_consent": 0.60,
}
# Logit-scale spread between ordinary providers, and the shift of the clear outliers.
ORDINARY_SPREAD: Final = 0.15
OUTLIER_SHIFT: Final = 1.6
STUDY_BASE: Final = 0.004
STUDY_HIGH: Final = 0.045
WAITING_MEDIAN_DAYS: Final = (14.0, 40.0)  # ordinary providers' median wait, uniform between
WAITING_HIGH: Final = 95.0
WAITING_LOW: Final = 4.0
COVERAGE_ORDINARY: Final = (0.62, 0.90)
COVERAGE_HIGH: Final = 0.93
COVERAGE_LOW: Final = 0.45

# Treating units: a unit code is "<kind>-<site>"; sites with æøå as registration systems have them.
UNIT_KINDS_INPATIENT: Final = ("DØGN", "AVRUS")
UNIT_KINDS_OTHER: Final = ("POL", "AMB", "LAR")
UNIT_SITES: Final = ("Sentrum", "Åsen", "Bjørkeli", "Sjøsiden", "Lia", "Øvre", "Nord", "Skåla")


@dataclass(frozen=True)
class ProviderProfile:
    """Per-provider parameters, arrays indexed by provider position (providers sorted by orgnr)."""

    orgnrs: tuple[str, ...]
    rhf_orgnrs: tuple[str, ...]
    regions: tuple[str, ...]  # RHF orgnrs in REGION order
    region_of: np.ndarray  # provider → region index
    private: np.ndarray  # bool
    group_cumulative: np.ndarray  # (regions * 2, providers): cumulative choice probabilities
    private_share: np.ndarray  # (regions, 2): P(private | region, inpatient?) [other, inpatient]
    region_share: np.ndarray
    home_hfs: tuple[str, ...]  # HF orgnrs (catchment areas)
    home_hf_region: np.ndarray
    home_hf_cumulative: np.ndarray  # (regions, home_hfs)
    propensity: dict[str, np.ndarray]
    study: np.ndarray
    waiting_median: np.ndarray
    coverage: np.ndarray
    unit_codes: tuple[str, ...]
    # (providers, 2, 3): indices into unit_codes per [other, inpatient] class, 3 slots (repeats).
    units: np.ndarray

    @property
    def size(self) -> int:
        return len(self.orgnrs)


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def build_profile(hierarchy: Hierarchy, rng: np.random.Generator) -> ProviderProfile:
    """Draw the provider parameters of one synthetic register (deterministic for `rng`)."""
    providers: list[Organisation] = sorted(hierarchy.providers, key=lambda o: o.orgnr)
    orgnrs = tuple(o.orgnr for o in providers)
    rhfs = tuple(hierarchy.rhf_of(o.orgnr).orgnr for o in providers)
    regions = tuple(sorted({*rhfs}, key=lambda r: (-REGION_SHARES.get(r, 0.05), r)))
    region_of = np.array([regions.index(r) for r in rhfs], dtype=np.int64)
    private = np.array([o.is_private for o in providers], dtype=bool)
    weights = np.array([VOLUME_WEIGHTS.get(o, 1.0) for o in orgnrs])
    n = len(providers)

    share = np.array([REGION_SHARES.get(r, 0.05) for r in regions])
    region_share = share / share.sum()
    private_share = np.zeros((len(regions), 2))
    cumulative = np.zeros((len(regions) * 2, n))
    for r_index, region in enumerate(regions):
        inpatient, other = PRIVATE_SHARES.get(region, DEFAULT_PRIVATE_SHARE)
        for is_private in (False, True):
            members = (region_of == r_index) & (private == is_private)
            w = np.where(members, weights, 0.0)
            if w.sum() > 0:
                row = np.cumsum(w)
                cumulative[r_index * 2 + int(is_private)] = row / row[-1]  # exactly 1 at the end
        has_private = bool(((region_of == r_index) & private).any())
        has_public = bool(((region_of == r_index) & ~private).any())
        if not has_private:
            inpatient = other = 0.0
        elif not has_public:
            inpatient = other = 1.0
        private_share[r_index] = (other, inpatient)

    home = sorted(hierarchy.hfs, key=lambda o: o.orgnr)
    home_hfs = tuple(o.orgnr for o in home)
    home_region = np.array([regions.index(hierarchy.rhf_of(o.orgnr).orgnr) for o in home])
    home_weights = np.array([VOLUME_WEIGHTS.get(o, 1.0) for o in home_hfs])
    home_cumulative = np.zeros((len(regions), len(home_hfs)))
    for r_index in range(len(regions)):
        w = np.where(home_region == r_index, np.maximum(home_weights, 0.3), 0.0)
        if w.sum() > 0:
            row = np.cumsum(w)
            home_cumulative[r_index] = row / row[-1]

    # The outliers are chosen among the larger providers so that they stand out beyond chance.
    expected = _expected_share(region_share, private_share, cumulative)
    large = np.flatnonzero(expected > 0.025)

    def outliers() -> tuple[np.ndarray, np.ndarray]:
        chosen = rng.permutation(large)[:4]
        return chosen[:2], chosen[2:]

    propensity: dict[str, np.ndarray] = {}
    for name, base in BASE_PROPENSITY.items():
        logits = _logit(base) + rng.normal(0.0, ORDINARY_SPREAD, n)
        high, low = outliers()
        logits[high] += OUTLIER_SHIFT
        logits[low] -= OUTLIER_SHIFT
        propensity[name] = 1.0 / (1.0 + np.exp(-logits))

    # Study enrolment: two large providers enrol nobody, four mid-sized ones 3–6 % of patients
    # (mid-sized so that the national share stays near 1 %).
    study = STUDY_BASE * rng.lognormal(0.0, 0.3, n)
    _, low = outliers()
    study[low] = 0.0
    mid = np.flatnonzero((expected > 0.008) & (expected <= 0.04))
    study[rng.permutation(np.setdiff1d(mid, low))[:4]] = STUDY_HIGH

    waiting = rng.uniform(*WAITING_MEDIAN_DAYS, n)
    high, low = outliers()
    waiting[high] = WAITING_HIGH
    waiting[low] = WAITING_LOW

    coverage = rng.uniform(*COVERAGE_ORDINARY, n)
    high, low = outliers()
    coverage[high] = COVERAGE_HIGH
    coverage[low] = COVERAGE_LOW

    unit_codes: list[str] = []
    units = np.zeros((n, 2, 3), dtype=np.int64)
    for p in range(n):
        sites = [UNIT_SITES[int(i)] for i in rng.choice(len(UNIT_SITES), 2, replace=False)]
        for is_inpatient, kinds in ((0, UNIT_KINDS_OTHER), (1, UNIT_KINDS_INPATIENT)):
            codes = [f"{kind}-{site}" for kind in kinds[:2] for site in sites][:3]
            for slot in range(3):
                code = codes[slot % len(codes)]
                if code not in unit_codes:
                    unit_codes.append(code)
                units[p, is_inpatient, slot] = unit_codes.index(code)

    return ProviderProfile(
        orgnrs=orgnrs,
        rhf_orgnrs=rhfs,
        regions=regions,
        region_of=region_of,
        private=private,
        group_cumulative=cumulative,
        private_share=private_share,
        region_share=region_share,
        home_hfs=home_hfs,
        home_hf_region=home_region,
        home_hf_cumulative=home_cumulative,
        propensity=propensity,
        study=study,
        waiting_median=waiting,
        coverage=coverage,
        unit_codes=tuple(unit_codes),
        units=units,
    )


def _expected_share(
    region_share: np.ndarray,
    private_share: np.ndarray,
    cumulative: np.ndarray,
) -> np.ndarray:
    """Each provider's expected share of all episodes (inpatient share of courses about 22 %)."""
    probabilities = np.diff(np.concatenate([np.zeros((cumulative.shape[0], 1)), cumulative], 1), 1)
    probabilities = np.maximum(probabilities, 0.0)
    share = np.zeros(cumulative.shape[1])
    for r_index in range(len(region_share)):
        p_private = 0.78 * private_share[r_index, 0] + 0.22 * private_share[r_index, 1]
        public, private = probabilities[r_index * 2], probabilities[r_index * 2 + 1]
        share += region_share[r_index] * ((1 - p_private) * public + p_private * private)
    return share
