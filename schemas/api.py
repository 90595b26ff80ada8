"""Models of the HTTP API (what goes over the wire), named in the XPublic / XCreate style.

No model here carries a pseudonym, a patient key or a record value: uploads and releases are
described by counts, indicators by aggregated numerators and denominators, aggregates by
perturbed and suppressed counts.
"""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["registry", "trust", "researcher", "anonymous"]


class Problem(BaseModel):
    """An RFC 9457 problem detail (served as application/problem+json)."""

    type: str = Field(description="URI of the problem type")
    title: str
    status: int = Field(ge=100, le=599)
    detail: str | None = None
    instance: str | None = Field(default=None, description="The request path")


class HealthPublic(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, bool] = Field(default_factory=dict)


class UploadPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    form: str
    filename: str
    status: str
    providers: list[str] = Field(description="Providers (orgnr) found in the file")
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    rows_superseded: int
    uploaded_by: str
    started_at: datetime
    finished_at: datetime | None


class UploadAccepted(BaseModel):
    id: int
    status: str


class UploadDetail(UploadPublic):
    error: str | None = None
    report: dict[str, object] | None = Field(
        default=None, description="The latest quality report of the upload"
    )


class UploadPage(BaseModel):
    items: list[UploadPublic]
    total: int
    limit: int
    offset: int


class TablePublic(BaseModel):
    name: str
    delta_version: int
    row_count: int


class ReleasePublic(BaseModel):
    number: int
    created_at: datetime
    note: str | None
    retired: bool
    published_by: str


class ReleaseDetail(ReleasePublic):
    spec_version: int
    tables: list[TablePublic]


class ReleaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(
        default=None,
        max_length=500,
        description="Kept with the release and shown to anyone; a note that looks like it holds "
        "a national identity number is refused (422)",
    )


class IndicatorPublic(BaseModel):
    id: str
    title: str
    description: str = ""
    unit: str = Field(default="episode", description="episode or patient")
    direction: str = Field(default="higher", description="higher or lower is better")
    target_high: float | None = None
    target_moderate: float | None = None


class IndicatorResultPublic(BaseModel):
    indicator_id: str
    release: int
    year: int
    context: str
    level: str
    orgnr: str
    unit_code: str | None = None
    name: str | None
    numerator: int | None
    denominator: int | None
    value: float | None
    ci95_low: float | None
    ci95_high: float | None
    ci998_low: float | None
    ci998_high: float | None
    target_level: str | None
    suppressed: bool
    suppression_reason: str | None
    funnel_signal: str | None
    previous_value: float | None


class IndicatorResultPage(BaseModel):
    release: int
    items: list[IndicatorResultPublic]


class ProfileIndicator(BaseModel):
    indicator_id: str
    provider: list[IndicatorResultPublic] = Field(description="The provider, one row per year")
    rhf: list[IndicatorResultPublic] = Field(description="Its RHF, one row per year")
    nation: list[IndicatorResultPublic] = Field(description="The nation, one row per year")


class ProviderProfile(BaseModel):
    release: int
    orgnr: str
    name: str
    rhf_orgnr: str | None
    indicators: list[ProfileIndicator]


class FunnelPoint(BaseModel):
    orgnr: str
    name: str
    numerator: float
    denominator: float
    value: float
    lower95: float
    upper95: float
    lower998: float
    upper998: float
    signal: str


class VariationPublic(BaseModel):
    release: int
    indicator_id: str
    year: int
    context: str
    providers: int = Field(description="Providers with a shown (not suppressed) result")
    national_value: float | None
    extremal_quotient: float | None = Field(
        description="Max / min of the crude proportions (kept for compatibility; see eq1)"
    )
    coefficient_of_variation: float | None = Field(
        description="CV of the crude proportions (kept for compatibility; see cv)"
    )
    # The variation statistics (DOMAIN.md): on indirectly standardised rates for outcome
    # indicators (`standardised`), on the crude proportions otherwise. Null where a statistic does
    # not exist (EQk needs 2k providers and a k-th lowest rate above 0; CV 2 providers) and, for an
    # outcome indicator, where no standardised figures were stored with the release's results
    # (computed before they were, or the resident context, which is not standardised).
    eq1: float | None = Field(default=None, description="Extremal quotient: highest / lowest")
    eq2: float | None = Field(default=None, description="2nd highest / 2nd lowest")
    eq3: float | None = Field(default=None, description="3rd highest / 3rd lowest")
    cv: float | None = Field(default=None, description="Coefficient of variation (sd n−1 / mean)")
    scv: float | None = Field(
        default=None,
        description="McPherson's systematic component of variation, ×100 (can be negative)",
    )
    standardised: bool = Field(
        default=False,
        description="eq1-scv are on rates indirectly standardised by the indicator's case-mix "
        "variables (observed / expected by age group, sex, treatment type)",
    )
    # normal: θ ± z·√(θ(1−θ)/n) (the engine's funnel_signal); overdispersed: Spiegelhalter's
    # additive random-effects limits, with the over-dispersion ratio φ and the between-provider
    # variance τ² (arcsine-square-root scale; τ² = 0 when φ shows no over-dispersion).
    funnel: Literal["normal", "overdispersed"] = "normal"
    phi: float | None = None
    tau2: float | None = None
    points: list[FunnelPoint]


class ParticipationPoint(BaseModel):
    year: int
    value: float | None
    numerator: int | None
    denominator: int | None


class ParticipationProvider(BaseModel):
    orgnr: str
    name: str
    level: str
    target: float
    latest_value: float | None
    reaches_target: bool | None
    trend: list[ParticipationPoint]


class ResearchParticipation(BaseModel):
    release: int
    indicator_id: str
    target: float = Field(description="National action plan target: 5 % of patients in studies")
    items: list[ParticipationProvider]


Measure = Literal["episodes", "patients", "mutual_end", "followup_arranged", "study"]
Dimension = Literal[
    "year",
    "rhf",
    "provider",
    "sex",
    "age_group",
    "treatment_type",
    "primary_substance",
    "end_reason",
]


class AggregateCreate(BaseModel):
    """A researcher's aggregate: counts of measures by dimensions, over one release."""

    model_config = ConfigDict(extra="forbid")

    # 2^31 − 1: the catalog's largest id (`service.database.MAX_CATALOG_ID`; schemas/ imports
    # nothing of ours), as every other route's release.
    release: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="Default: the latest release"
    )
    measures: list[Measure] = Field(min_length=1, max_length=5)
    dimensions: list[Dimension] = Field(min_length=1, max_length=3)
    filters: dict[Dimension, list[str]] = Field(
        default_factory=dict,
        description="Show only the cells of these categories of a requested dimension. The "
        "table is computed and protected over the release's full population: a filter never "
        "changes what a cell or a margin counts, and margins stay the full-population margins.",
    )


class AggregateCell(BaseModel):
    dimensions: dict[str, str | None] = Field(description="None marks a margin (all categories)")
    values: dict[str, int | None] = Field(description="Perturbed counts; None when suppressed")
    suppressed: dict[str, bool]


class AggregatePublic(BaseModel):
    release: int
    measures: list[str]
    dimensions: list[str]
    threshold: int
    method: str
    cells: list[AggregateCell]


class AuditEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    subject: str
    role: str
    method: str
    route: str
    query: str
    status: int
    rows: int | None
    release: int | None


class AuditPage(BaseModel):
    items: list[AuditEventPublic]
    total: int
    limit: int
    offset: int
