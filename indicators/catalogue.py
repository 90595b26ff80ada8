"""The indicator catalogue: definitions as data, one TOML file per indicator.

Registry staff add an indicator by adding a file under `indicators/definitions/`; the engine needs
no change as long as the definition is expressible in `indicators.vocabulary`. Every file is
validated with pydantic when loaded; a malformed definition is refused with a `CatalogueError`
naming the file and the field.
"""

from __future__ import annotations

import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from indicators.vocabulary import (
    TABLE_VARIABLES,
    YEAR_DATES,
    Numerator,
    Population,
    check_condition,
)
from schemas.errors import RejectedInput

IndicatorType = Literal["proportion", "median", "mean", "count", "coverage"]
Context = Literal["caregiver", "resident"]
CaseMixVariable = Literal["age_group", "sex", "treatment_type"]
CONTEXTS: Final[tuple[Context, ...]] = ("caregiver", "resident")
# Types whose value is x/n: their target levels and display threshold are fractions.
FRACTION_TYPES: Final[frozenset[IndicatorType]] = frozenset({"proportion", "coverage"})

# DOMAIN.md: results are not shown where the denominator is under 5 ("fewer than 5 observations").
DEFAULT_MIN_DENOMINATOR: Final = 5


class CatalogueError(RejectedInput):
    """An indicator definition that does not validate."""

    title = "Invalid indicator definition"
    type_slug = "invalid-indicator-definition"


class Text(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    no: str = Field(min_length=1)
    en: str = Field(min_length=1)


class Target(BaseModel):
    """Target levels as the national portal: `green` reached → high, `yellow` not reached → low,
    moderate between. With direction `lower` the comparisons flip (≤ green high, > yellow low).

    The levels are on the indicator's own scale: for a proportion a fraction (0.8, not 80), which
    `IndicatorDefinition` checks since only it knows the type."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    green: float
    yellow: float

    def level(self, value: float, direction: Literal["higher", "lower"]) -> str:
        if direction == "higher":
            if value >= self.green:
                return "high"
            return "low" if value < self.yellow else "moderate"
        if value <= self.green:
            return "high"
        return "low" if value > self.yellow else "moderate"


class IndicatorDefinition(BaseModel):
    """One indicator. Strict, as TOML types are exact: `min_denominator = true` or
    `outcome = "yes"` is refused, not read as 1 or True (an integer is still taken for a float)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: Text
    description: Text
    type: IndicatorType
    unit: Literal["episode", "patient"] = "episode"
    population: Population
    numerator: Numerator | None = None
    measure: str | None = Field(default=None, description="Column summarised by median / mean")
    year_date: str | None = Field(
        default=None, description="Date column placing a row in a year; default the table's"
    )
    contexts: list[Context] = Field(default_factory=lambda: list(CONTEXTS))
    direction: Literal["higher", "lower"] = "higher"
    target: Target | None = None
    min_denominator: int = Field(default=DEFAULT_MIN_DENOMINATOR, ge=1)
    outcome: bool = Field(default=False, description="Outcome indicator: case-mix adjusted")
    case_mix: list[CaseMixVariable] = Field(default_factory=list)
    display_min_value: float | None = Field(
        default=None, description="Values below are suppressed as low_coverage (coverage: 0.6)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> IndicatorDefinition:
        table = self.population.table
        variables = TABLE_VARIABLES[table]
        for index, condition in enumerate(self.population.where):
            check_condition(condition, table, f"population.where.{index}")
        if self.population.first_per_episode is not None:
            self._date_column(self.population.first_per_episode, "population.first_per_episode")
        if self.year_date is not None:
            self._date_column(self.year_date, "year_date")
        if self.type == "proportion":
            if self.numerator is None:
                raise ValueError("numerator: a proportion needs a numerator")
        elif self.numerator is not None:
            raise ValueError(f"numerator: a {self.type} indicator takes no numerator")
        if self.numerator is not None:
            for index, condition in enumerate(self.numerator.where):
                check_condition(condition, table, f"numerator.where.{index}")
        if self.type in ("median", "mean"):
            if self.measure is None:
                raise ValueError(f"measure: a {self.type} needs a measure column")
            variable = variables.get(self.measure)
            if variable is None or variable.kind != "integer":
                raise ValueError(f"measure: {self.measure!r} is not an integer column of {table}")
            if self.unit != "episode":
                raise ValueError(f"unit: a {self.type} is computed over episodes")
        elif self.measure is not None:
            raise ValueError(f"measure: a {self.type} indicator takes no measure")
        if self.type == "coverage" and (table != "basis" or self.contexts != ["caregiver"]):
            raise ValueError("type: coverage is over basis episodes, caregiver context only")
        if self.unit == "patient" and self.population.first_per_episode is not None:
            raise ValueError("population.first_per_episode: not with unit patient")
        if self.type in FRACTION_TYPES:
            self._fractions()
        if self.target is not None:
            ordered = (
                self.target.green >= self.target.yellow
                if self.direction == "higher"
                else self.target.green <= self.target.yellow
            )
            if not ordered:
                raise ValueError(
                    f"target: green must be {'≥' if self.direction == 'higher' else '≤'} yellow "
                    f"when {self.direction} is better"
                )
        if self.case_mix and not self.outcome:
            raise ValueError("case_mix: only outcome indicators are case-mix adjusted")
        if not self.contexts:
            raise ValueError("contexts: at least one context")
        return self

    def _fractions(self) -> None:
        """Targets and display threshold of a proportion or coverage are fractions in [0, 1].

        The engine compares them with x/n: `green = 80` (a percentage) would label every result
        low, `display_min_value = 60` would suppress every result as low_coverage.
        """
        fields = {"display_min_value": self.display_min_value}
        if self.target is not None:
            fields |= {"target.green": self.target.green, "target.yellow": self.target.yellow}
        outside = [
            f"{where}: {value:g} is outside [0, 1]"
            for where, value in fields.items()
            if value is not None and not 0.0 <= value <= 1.0
        ]
        if outside:
            raise ValueError(
                f"{'; '.join(outside)} (a {self.type} indicator's target levels and "
                f"display_min_value are fractions: 0.8 for 80 %)"
            )

    def _date_column(self, name: str, where: str) -> None:
        variable = TABLE_VARIABLES[self.population.table].get(name)
        if variable is None or variable.kind != "date":
            raise ValueError(f"{where}: {name!r} is not a date column of {self.population.table}")

    @property
    def year_column(self) -> str:
        return self.year_date or YEAR_DATES[self.population.table]


def parse_definition(text: str, source: str) -> IndicatorDefinition:
    """Parse and validate one TOML definition; `source` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CatalogueError(f"{source}: not valid TOML ({error})") from None
    try:
        return IndicatorDefinition.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{field}: {message}" if field else message)
        raise CatalogueError(f"{source}: {'; '.join(problems)}") from None


def load_catalogue(directory: Path | None = None) -> list[IndicatorDefinition]:
    """All definitions, in file-name order, from `directory` (default: the packaged ones)."""
    if directory is None:
        root = files("indicators").joinpath("definitions")
        sources = sorted(
            (entry.name, entry.read_text(encoding="utf-8"))
            for entry in root.iterdir()
            if entry.name.endswith(".toml")
        )
    else:
        sources = sorted(
            (path.name, path.read_text(encoding="utf-8")) for path in directory.glob("*.toml")
        )
    catalogue = [parse_definition(text, name) for name, text in sources]
    seen: set[str] = set()
    for (name, _), definition in zip(sources, catalogue, strict=True):
        if definition.id in seen:
            raise CatalogueError(f"{name}: id: duplicate indicator id {definition.id!r}")
        if name != f"{definition.id}.toml":
            raise CatalogueError(f"{name}: id: the file must be named {definition.id}.toml")
        seen.add(definition.id)
    return catalogue
