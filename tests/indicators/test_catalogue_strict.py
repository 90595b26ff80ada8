"""Definitions are read as TOML wrote them: nothing converted, fractions in [0, 1].

In lax mode `value = true` became the code 1 (for treatment_plan: plan = no), `value = false`
was refused as a 0 nobody wrote, `[1, "2"]` became `[1, 2]`; `green = 80` labelled every result
low and `display_min_value = 60` suppressed every result as low_coverage.
"""

from __future__ import annotations

import pytest

from indicators.catalogue import load_catalogue, parse_definition
from tests.indicators.test_catalogue import VALID, refused

NUMERATOR = '[{ column = "treatment_plan", op = "eq", value = 2 }]'


def with_numerator(condition: str) -> str:
    return VALID.replace(NUMERATOR, f"[{condition}]")


def with_header(line: str) -> str:
    return VALID.replace("target = {", f"{line}\ntarget = {{")


EXPECTED = "expected an integer, a string, or a list of integers or of strings"


@pytest.mark.parametrize("written", ["true", "false"])
def test_boolean_value_is_refused_not_read_as_a_code(written: str) -> None:
    detail = refused(
        with_numerator(f'{{ column = "treatment_plan", op = "eq", value = {written} }}')
    )
    assert detail == f"x.toml: numerator.where.0.value: {EXPECTED}, not a boolean ({written})"


def test_boolean_is_refused_even_where_its_integer_would_be_a_code() -> None:
    # research_consent is coded 0/1 (NO_YES): `true` must still be written as 1.
    text = VALID.replace('table = "measurement"', 'table = "basis"').replace(
        'first_per_episode = "measure_date"\n', ""
    )
    text = text.replace('{ column = "status", op = "eq", value = 1 }', "")
    detail = refused(
        text.replace(NUMERATOR, '[{ column = "research_consent", op = "eq", value = true }]')
    )
    assert detail == f"x.toml: numerator.where.0.value: {EXPECTED}, not a boolean (true)"
    accepted = parse_definition(
        text.replace(NUMERATOR, '[{ column = "research_consent", op = "eq", value = 1 }]'), "x"
    )
    assert accepted.numerator is not None
    assert accepted.numerator.where[0].value == 1


def test_string_where_an_integer_code_is_meant_is_refused() -> None:
    detail = refused(with_numerator('{ column = "treatment_plan", op = "eq", value = "2" }'))
    assert detail == (
        "x.toml: numerator.where.0.value: column treatment_plan takes integers (codes: 1, 2, 3), "
        "not a string ('2')"
    )


def test_list_of_strings_for_an_integer_column_is_refused() -> None:
    detail = refused(with_numerator('{ column = "treatment_plan", op = "in", value = ["1", "2"] }'))
    assert "numerator.where.0.value: column treatment_plan takes integers" in detail


def test_mixed_list_is_refused_not_converted() -> None:
    detail = refused(with_numerator('{ column = "treatment_plan", op = "in", value = [1, "2"] }'))
    assert detail == (
        "x.toml: numerator.where.0.value: expected a list of integers or of strings, "
        "not a list mixing integers and strings"
    )


def test_boolean_inside_a_list_is_refused_by_position() -> None:
    detail = refused(with_numerator('{ column = "treatment_plan", op = "in", value = [1, true] }'))
    assert detail == (
        "x.toml: numerator.where.0.value: expected a list of integers or of strings, "
        "but item 1 is a boolean (true)"
    )


def test_decimal_number_is_refused_not_truncated() -> None:
    detail = refused(with_numerator('{ column = "treatment_plan", op = "eq", value = 2.0 }'))
    assert detail == f"x.toml: numerator.where.0.value: {EXPECTED}, not a decimal number (2.0)"


def test_unquoted_toml_date_is_refused_and_a_quoted_one_accepted() -> None:
    population = 'where = [{ column = "status", op = "eq", value = 1 }]'
    unquoted = VALID.replace(
        population, 'where = [{ column = "measure_date", op = "ge", value = 2023-01-01 }]'
    )
    detail = refused(unquoted)
    assert detail.startswith(
        f"x.toml: population.where.0.value: {EXPECTED}, not an unquoted TOML date or time "
        "(2023-01-01;"
    )
    quoted = parse_definition(unquoted.replace("2023-01-01", '"2023-01-01"'), "x.toml")
    assert quoted.population.where[0].value == "2023-01-01"


def test_integer_for_a_date_column_names_what_was_expected() -> None:
    detail = refused(
        VALID.replace(
            'where = [{ column = "status", op = "eq", value = 1 }]',
            'where = [{ column = "measure_date", op = "ge", value = 2023 }]',
        )
    )
    assert detail == (
        "x.toml: population.where.0.value: column measure_date takes ISO dates as strings "
        "(yyyy-mm-dd), not an integer"
    )


def test_nested_condition_is_named_by_its_path() -> None:
    detail = refused(
        with_numerator(
            '{ op = "any_of", any_of = [{ column = "benefit", op = "not_null" }, '
            '{ column = "treatment_plan", op = "eq", value = true }] }'
        )
    )
    assert detail == f"x.toml: numerator.where.0.any_of.1.value: {EXPECTED}, not a boolean (true)"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("min_denominator = true", "min_denominator: Input should be a valid integer"),
        ("min_denominator = 5.0", "min_denominator: Input should be a valid integer"),
        ('outcome = "yes"', "outcome: Input should be a valid boolean"),
        ("outcome = 1", "outcome: Input should be a valid boolean"),
    ],
)
def test_other_fields_are_not_converted_either(line: str, message: str) -> None:
    assert refused(with_header(line)) == f"x.toml: {message}"


def test_integers_are_still_numbers_for_float_fields() -> None:
    definition = parse_definition(
        VALID.replace("green = 0.8, yellow = 0.6", "green = 1, yellow = 0"), "x"
    )
    assert definition.target is not None
    assert (definition.target.green, definition.target.yellow) == (1.0, 0.0)


FRACTIONS = "target levels and display_min_value are fractions: 0.8 for 80 %)"


def test_percentage_target_is_refused() -> None:
    detail = refused(VALID.replace("green = 0.8, yellow = 0.6", "green = 80, yellow = 60"))
    assert detail == (
        "x.toml: target.green: 80 is outside [0, 1]; target.yellow: 60 is outside [0, 1] "
        f"(a proportion indicator's {FRACTIONS}"
    )


def test_negative_target_is_refused() -> None:
    detail = refused(VALID.replace("green = 0.8, yellow = 0.6", "green = 0.8, yellow = -0.1"))
    assert detail == (
        f"x.toml: target.yellow: -0.1 is outside [0, 1] (a proportion indicator's {FRACTIONS}"
    )


def test_not_a_number_target_is_refused_as_outside() -> None:
    detail = refused(VALID.replace("green = 0.8, yellow = 0.6", "green = nan, yellow = 0.6"))
    assert detail.startswith("x.toml: target.green: nan is outside [0, 1]")


@pytest.mark.parametrize("value", ["60", "-0.1", "1.5"])
def test_display_min_value_outside_zero_one_is_refused(value: str) -> None:
    detail = refused(with_header(f"display_min_value = {value}"))
    assert detail == (
        f"x.toml: display_min_value: {value} is outside [0, 1] "
        f"(a proportion indicator's {FRACTIONS}"
    )


def test_coverage_display_min_value_as_percentage_is_refused() -> None:
    coverage = next(d for d in load_catalogue() if d.id == "coverage")
    assert coverage.display_min_value == 0.6
    text = """
id = "coverage"
type = "coverage"
contexts = ["caregiver"]
display_min_value = 60
title = { no = "Dekning", en = "Coverage" }
description = { no = "Dekning", en = "Coverage" }

[population]
table = "basis"
"""
    assert refused(text) == (
        f"x.toml: display_min_value: 60 is outside [0, 1] (a coverage indicator's {FRACTIONS}"
    )


def test_edges_zero_and_one_are_fractions() -> None:
    definition = parse_definition(
        with_header("display_min_value = 0").replace(
            "green = 0.8, yellow = 0.6", "green = 1.0, yellow = 0.0"
        ),
        "x.toml",
    )
    assert definition.display_min_value == 0.0
    assert definition.target is not None
    assert (definition.target.green, definition.target.yellow) == (1.0, 0.0)


def test_median_targets_stay_on_the_measure_scale() -> None:
    # Days, not a fraction: the [0, 1] bound is for proportions and coverage only.
    text = """
id = "waiting_days"
type = "median"
measure = "waiting_days"
direction = "lower"
target = { green = 14, yellow = 42 }
title = { no = "Ventetid", en = "Waiting" }
description = { no = "Ventetid", en = "Waiting" }

[population]
table = "basis"
"""
    definition = parse_definition(text, "waiting_days.toml")
    assert definition.target is not None
    assert (definition.target.green, definition.target.yellow) == (14.0, 42.0)


def test_every_packaged_definition_still_loads() -> None:
    catalogue = load_catalogue()
    assert len(catalogue) == 12
    plan = next(d for d in catalogue if d.id == "plan")
    assert plan.numerator is not None
    assert plan.numerator.where[0].value == 2
    assert type(plan.numerator.where[0].value) is int
