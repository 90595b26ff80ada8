"""One error family for the register.

Every domain error is a `KvarusError`: the API renders it as RFC 9457 problem+json with its
`status` and `title`, the CLI prints `detail` and exits with `exit_code`. A `detail` never holds a
pseudonym, an identity number or any record value: it names columns, checks, counts, record ids.
"""

from typing import ClassVar


class KvarusError(Exception):
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    # Problem type slug: rendered as the problem's `type` URI.
    type_slug: ClassVar[str] = "internal"
    exit_code: ClassVar[int] = 1

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RejectedInput(KvarusError):
    """A file or request that the register refuses as a whole."""

    status = 422
    title = "Input rejected"
    type_slug = "rejected-input"


class PrivacyViolation(RejectedInput):
    """Input that carries (or may carry) a direct identifier."""

    title = "Input rejected: possible direct identifier"
    type_slug = "privacy-violation"


class NotFound(KvarusError):
    status = 404
    title = "Not found"
    type_slug = "not-found"


class Conflict(KvarusError):
    status = 409
    title = "Conflict"
    type_slug = "conflict"


class Unauthorised(KvarusError):
    status = 401
    title = "Not authenticated"
    type_slug = "unauthorised"


class Forbidden(KvarusError):
    status = 403
    title = "Forbidden"
    type_slug = "forbidden"


class ConfigurationError(KvarusError):
    status = 500
    title = "Configuration error"
    type_slug = "configuration"
    exit_code = 2
