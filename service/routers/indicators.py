"""Published indicators: catalogue, results (JSON or CSV), profiles, variation, participation."""

from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from indicators.catalogue import load_catalogue
from schemas.api import (
    IndicatorPublic,
    IndicatorResultPage,
    IndicatorResultPublic,
    ProviderProfile,
    ResearchParticipation,
    VariationPublic,
)
from schemas.organisations import Hierarchy
from service import audit, indicator_views, published
from service.auth import Principal
from service.database import MAX_CATALOG_ID
from service.deps import PrincipalDep, SessionDep, SettingsDep, served_release
from service.errors import problem_responses
from service.settings import Settings

router = APIRouter(tags=["indicators"])

ReleaseQuery = Annotated[
    int | None,
    Query(ge=1, le=MAX_CATALOG_ID, description="Release number; default the latest"),
]
Year = Annotated[int, Field(ge=1900, le=2200)]
ContextQuery = Annotated[Literal["caregiver", "resident"], Query()]


@router.get("/indicators", response_model=list[IndicatorPublic], responses=problem_responses(401))
def list_indicators(request: Request, _: PrincipalDep) -> list[IndicatorPublic]:
    """The indicator catalogue."""
    items = [
        IndicatorPublic(
            id=d.id,
            title=d.title.en,
            description=d.description.en,
            unit=d.unit,
            direction=d.direction,
            target_high=d.target.green if d.target else None,
            target_moderate=d.target.yellow if d.target else None,
        )
        for d in load_catalogue()
    ]
    audit.note(request, rows=len(items))
    return items


@router.get(
    "/indicators/results",
    response_model=IndicatorResultPage,
    responses={
        **problem_responses(401, 404, 422),
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        304: {"description": "Not modified (If-None-Match matched the ETag)"},
    },
)
async def list_results(
    request: Request,
    principal: PrincipalDep,
    settings: SettingsDep,
    release: ReleaseQuery = None,
    indicator: Annotated[str | None, Query(max_length=64)] = None,
    year: Annotated[list[Year] | None, Query(description="Repeatable")] = None,
    level: Annotated[Literal["nation", "rhf", "hf", "provider", "unit"] | None, Query()] = None,
    orgnr: Annotated[str | None, Query(pattern=r"^[0-9]{1,9}$")] = None,
    context: Annotated[Literal["caregiver", "resident"] | None, Query()] = None,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
    accept: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Precomputed indicator results of a release, filtered; JSON or CSV, with an ETag. In CSV
    a text cell a spreadsheet would evaluate as a formula (a unit code starting with =, +, -,
    @, a tab or a carriage return) is written after an apostrophe."""
    # The catalog is asked on every request (a release retired by an erasure is not served);
    # a rendered answer is then served from memory on the event loop, a new one is rendered
    # in the threadpool.
    number = await served_release(request, release)
    query = published.ResultQuery(
        indicator=indicator, years=tuple(year or ()), level=level, orgnr=orgnr, context=context
    )
    as_csv = format == "csv" or (format is None and "text/csv" in (accept or ""))
    # Stat'ed before the tag is made: a rewritten results file changes the tag.
    file = published.results_path(settings, number)
    tag = published.etag(number, query, principal, file[1])
    # ";csv2": since CSV writes formula-like text after an apostrophe (`published.to_csv`), a
    # tag of the CSV before it ("...;csv") no longer matches.
    tag = tag[:-1] + (';csv2"' if as_csv else '"')
    audit.note(request, release=number)
    # The answer depends on the key (scope) and on Accept (JSON or CSV): a shared cache must
    # not serve a CSV to a JSON request.
    vary = "Authorization, Accept"
    if if_none_match is not None and tag in {t.strip() for t in if_none_match.split(",")}:
        audit.note(request, rows=0)
        return Response(status_code=304, headers={"ETag": tag, "Vary": vary})
    headers = {"ETag": tag, "Cache-Control": "private, max-age=60", "Vary": vary}
    media_type = "text/csv" if as_csv else "application/json"
    answer = published.cached_answer(file, tag)
    if answer is None:
        answer = await run_in_threadpool(
            published.answer_once,
            file,
            tag,
            partial(_render_results, settings, number, query, principal, as_csv=as_csv),
        )
    audit.note(request, rows=answer.rows)
    return Response(answer.body, media_type=media_type, headers=headers)


def _render_results(
    settings: Settings,
    number: int,
    query: published.ResultQuery,
    principal: Principal,
    *,
    as_csv: bool,
) -> published.Answer:
    table = published.results_table(settings, number)
    rows = sorted(published.select_results(table, query, principal), key=published.sort_key)
    if as_csv:
        body = published.to_csv(rows).encode()
    else:
        page = IndicatorResultPage(release=number, items=[IndicatorResultPublic(**r) for r in rows])
        body = page.model_dump_json().encode()
    return published.Answer(body=body, rows=len(rows))


@router.get(
    "/providers/{orgnr}/profile",
    response_model=ProviderProfile,
    responses=problem_responses(401, 404, 422),
)
def provider_profile(
    request: Request,
    orgnr: Annotated[str, Path(pattern=r"^[0-9]{9}$")],
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    release: ReleaseQuery = None,
    context: ContextQuery = "caregiver",
) -> ProviderProfile:
    """Every indicator of one provider beside its RHF and the nation, with the trend over years."""
    number = published.get_release(session, release).number
    rows = published.select_results(
        published.results_table(settings, number),
        published.ResultQuery(context=context),
        principal,
    )
    profile = indicator_views.provider_profile(
        rows, release=number, orgnr=orgnr, hierarchy=Hierarchy.default()
    )
    audit.note(request, rows=sum(len(i.provider) for i in profile.indicators), release=number)
    return profile


@router.get(
    "/indicators/{indicator_id}/variation",
    response_model=VariationPublic,
    responses=problem_responses(401, 404, 422),
)
def indicator_variation(
    request: Request,
    indicator_id: Annotated[str, Path(max_length=64)],
    year: Annotated[int, Query(ge=1900, le=2200)],
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    release: ReleaseQuery = None,
    context: ContextQuery = "caregiver",
    overdispersion: Annotated[
        bool,
        Query(
            description="Funnel limits with Spiegelhalter's additive random-effects "
            "over-dispersion adjustment (and signals against them) instead of the normal limits"
        ),
    ] = False,
) -> VariationPublic:
    """Variation between providers in one year: statistics, funnel points and limits.

    Providers are the `provider` rows in the caregiver context and the `hf` rows in the
    resident context, those shown (suppressed ones never enter any figure); signals use the
    engine's labels (`high_0.001`, `high_0.025`, `low_0.025`, `low_0.001`, `not_significant`).
    With `overdispersion=true` the limits and signals are Spiegelhalter's additive
    random-effects ones (arcsine-square-root scale, 10 % winsorised z-scores), with φ and τ² in
    the answer; the stored results' `funnel_signal` stays normal.

    `eq1`, `eq2`, `eq3` (extremal quotients), `cv` and `scv` (McPherson's systematic component):
    for outcome indicators on rates indirectly standardised by age group, sex and treatment type
    (`standardised: true`), computed with the release's results; null when the release's results
    were computed before these figures were stored, and in the resident context (standardised
    over treating providers only). For other indicators on the crude proportions. The funnel and
    `extremal_quotient` / `coefficient_of_variation` are on the crude proportions.
    """
    number = published.get_release(session, release).number
    table = published.results_table(settings, number)
    rows = published.select_results(
        table,
        published.ResultQuery(indicator=indicator_id, years=(year,), context=context),
        principal,
    )
    result = indicator_views.variation(
        rows,
        release=number,
        indicator=indicator_id,
        year=year,
        context=context,
        overdispersion=overdispersion,
        case_mix_adjusted=indicator_id in published.case_mix_adjusted_ids(),
        stored=published.stored_variation(table, indicator_id, year, context),
    )
    audit.note(request, rows=len(result.points), release=number)
    return result


@router.get(
    "/research-participation",
    response_model=ResearchParticipation,
    responses=problem_responses(401, 404, 422),
)
def research_participation(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    release: ReleaseQuery = None,
) -> ResearchParticipation:
    """Clinical-study participation by provider against the 5 % target, with the trend."""
    number = published.get_release(session, release).number
    rows = published.select_results(
        published.results_table(settings, number),
        published.ResultQuery(indicator=indicator_views.STUDY_INDICATOR, context="caregiver"),
        principal,
    )
    items = indicator_views.research_participation(rows, release=number)
    audit.note(request, rows=len(items), release=number)
    return ResearchParticipation(
        release=number,
        indicator_id=indicator_views.STUDY_INDICATOR,
        target=indicator_views.STUDY_TARGET,
        items=items,
    )
