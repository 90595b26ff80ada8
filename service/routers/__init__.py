"""The API's routers, one per domain."""

import re
from typing import Any, Final

from fastapi import Query
from pydantic import AfterValidator

# C0 controls, DEL and C1 controls. No status, subject or route holds one, and PostgreSQL refuses
# a NUL in text outright (a DataError, so a 500) where SQLite finds no row.
_CONTROL_CHARACTERS: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
# The same, as the OpenAPI schema states it (ECMA-262 syntax; Python's `re` reads it too).
_NO_CONTROL_CHARACTERS: Final = r"^[^\u0000-\u001F\u007F-\u009F]*$"


def _refuse_control_characters(value: str | None) -> str | None:
    if value is not None and _CONTROL_CHARACTERS.search(value):
        raise ValueError("control characters are not allowed")  # the value is not echoed
    return value


# Metadata of a free-text query parameter that reaches a catalog query: with `text_query`,
# `Annotated[str | None, text_query(max_length=20), PLAIN_TEXT]`. A control character in it is a
# 422 on every database.
PLAIN_TEXT: Final = AfterValidator(_refuse_control_characters)


def text_query(*, max_length: int, **kwargs: Any) -> Any:
    """`Query(...)` of a free-text parameter: the schema says control characters are refused."""
    return Query(
        max_length=max_length, json_schema_extra={"pattern": _NO_CONTROL_CHARACTERS}, **kwargs
    )
