"""The realistic synthetic register: extract files of every form, as registration systems send them.

`generate_register(out, episodes=..., seed=...)` writes `out/{form}.{csv|xlsx|parquet}` for basis,
measurement, discharge, followup, optout and npr_counts (EXTRACT_SPEC.md conventions), plus
`out/planted_errors.json` (the row-level errors planted with `error_rate`, by form and check id)
and `out/rejects/` (one small file per kind of fatal error). The same arguments give the same bytes.
"""

from etl.generate.register import GenerationSummary, as_of_date, generate_register
from etl.generate.writers import FileFormat, GenerationError

__all__ = ["FileFormat", "GenerationError", "GenerationSummary", "as_of_date", "generate_register"]
