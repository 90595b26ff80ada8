"""The catalogue: every DOMAIN.md indicator present, malformed definitions refused by field."""

from __future__ import annotations

from pathlib import Path

import pytest

from indicators.catalogue import CatalogueError, load_catalogue, parse_definition

VALID = """
id = "plan"
type = "proportion"
title = { no = "Plan", en = "Plan" }
description = { no = "Plan", en = "Plan" }
target = { green = 0.8, yellow = 0.6 }

[population]
table = "measurement"
first_per_episode = "measure_date"
where = [{ column = "status", op = "eq", value = 1 }]

[numerator]
where = [{ column = "treatment_plan", op = "eq", value = 2 }]
"""


def refused(text: str) -> str:
    with pytest.raises(CatalogueError) as caught:
        parse_definition(text, "x.toml")
    return caught.value.detail


def test_packaged_catalogue_holds_every_domain_indicator() -> None:
    catalogue = {d.id: d for d in load_catalogue()}
    assert set(catalogue) == {
        "plan",
        "crisis_plan",
        "benefit",
        "mutual_end",
        "screening",
        "followup_arranged",
        "reduced_use",
        "stable_housing",
        "study",
        "research_consent",
        "waiting_days",
        "coverage",
    }
    assert catalogue["study"].unit == "patient"
    assert (catalogue["study"].target.green, catalogue["study"].target.yellow) == (0.05, 0.025)  # type: ignore[union-attr]
    assert catalogue["waiting_days"].direction == "lower"
    assert catalogue["waiting_days"].type == "median"
    assert catalogue["coverage"].display_min_value == 0.6
    assert catalogue["reduced_use"].case_mix == ["age_group", "sex", "treatment_type"]
    assert all(d.min_denominator == 5 for d in catalogue.values())
    assert catalogue["mutual_end"].year_column == "discharge_date"
    assert catalogue["plan"].year_column == "measure_date"


def test_valid_definition_parses() -> None:
    definition = parse_definition(VALID, "plan.toml")
    assert definition.population.first_per_episode == "measure_date"
    assert definition.contexts == ["caregiver", "resident"]


def test_unknown_table_is_refused() -> None:
    detail = refused(VALID.replace('table = "measurement"', 'table = "admissions"'))
    assert detail.startswith("x.toml: population.table:")


def test_unknown_column_is_refused() -> None:
    detail = refused(VALID.replace('column = "treatment_plan"', 'column = "plan_ok"'))
    assert "numerator.where.0.column: unknown column 'plan_ok' of table 'measurement'" in detail


def test_unknown_op_is_refused() -> None:
    detail = refused(VALID.replace('op = "eq", value = 2', 'op = "like", value = 2'))
    assert "numerator.where.0.op" in detail


def test_value_outside_code_list_is_refused() -> None:
    detail = refused(VALID.replace("value = 2 }", "value = 7 }"))
    assert "numerator.where.0.value: 7 is not a code of column treatment_plan" in detail


def test_value_of_wrong_type_is_refused() -> None:
    detail = refused(VALID.replace("value = 1 }", 'value = "active" }'))
    assert "population.where.0.value: column status takes integers" in detail


def test_missing_field_is_refused() -> None:
    detail = refused(VALID.replace('title = { no = "Plan", en = "Plan" }\n', ""))
    assert "x.toml: title: Field required" in detail


def test_proportion_without_numerator_is_refused() -> None:
    detail = refused(VALID.split("[numerator]")[0])
    assert "numerator: a proportion needs a numerator" in detail


def test_inverted_target_is_refused() -> None:
    detail = refused(VALID.replace("green = 0.8, yellow = 0.6", "green = 0.5, yellow = 0.6"))
    assert "target: green must be ≥ yellow when higher is better" in detail


def test_first_per_episode_must_be_a_date() -> None:
    detail = refused(VALID.replace('first_per_episode = "measure_date"', 'first_per_episode = "x"'))
    assert "population.first_per_episode: 'x' is not a date column of measurement" in detail


def test_malformed_any_of_is_refused() -> None:
    detail = refused(
        VALID.replace(
            '[{ column = "treatment_plan", op = "eq", value = 2 }]',
            '[{ op = "any_of", any_of = [{ column = "benefit", op = "in", value = [4, 9] }] }]',
        )
    )
    assert "numerator.where.0.any_of.0.value: 9 is outside the range of column benefit" in detail


def test_file_must_be_named_by_id(tmp_path: Path) -> None:
    (tmp_path / "other.toml").write_text(VALID, encoding="utf-8")
    with pytest.raises(CatalogueError, match=r"other.toml: id: the file must be named plan.toml"):
        load_catalogue(tmp_path)


def test_invalid_toml_is_refused() -> None:
    assert refused("id = ").startswith("x.toml: not valid TOML")
