"""Validation of extracts: GX suites per form, cross-record checks, quality reports."""

from validation.run import CheckResult, ValidationResult, validate_extract

__all__ = ["CheckResult", "ValidationResult", "validate_extract"]
