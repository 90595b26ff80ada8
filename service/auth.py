"""Who is asking: API keys and OIDC bearer tokens, both as `Authorization: Bearer …`.

API keys look like `kvk_<prefix>_<secret>`: the prefix (8 hex characters, public) finds the
catalog row, the whole key is compared by hash with `hmac.compare_digest`. The key itself is
printed once at creation and never stored. Anything else after `Bearer` is taken as an OIDC
token (JWT) and verified against the issuer's JWKS (signature, issuer, audience, expiry).

Roles: registry (everything), trust (scoped to one provider), researcher (aggregates and
published indicators), anonymous (no credentials: published indicators only).
"""

import hashlib
import hmac
import secrets
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final, Literal, Protocol

import jwt
from sqlalchemy import Connection, Engine, bindparam
from sqlmodel import Session, col, select

from etl.privacy import holds_identity_number
from schemas.catalog import ApiClient
from schemas.errors import ConfigurationError, Forbidden, NotFound, RejectedInput, Unauthorised
from schemas.organisations import Hierarchy, is_valid_orgnr
from service.settings import Settings

Role = Literal["registry", "trust", "researcher", "anonymous"]
CLIENT_ROLES: Final = ("registry", "trust", "researcher")
KEY_MARK: Final = "kvk_"
# Accepted JWT signature algorithms: asymmetric only (a symmetric one would let anyone holding
# the public JWKS forge tokens).
JWT_ALGORITHMS: Final = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


@cache
def _providers() -> frozenset[str]:
    return frozenset(o.orgnr for o in Hierarchy.default().providers)


def is_provider(orgnr: str) -> bool:
    """Whether `orgnr` is a provider (an HF or a private provider) of the register's list: what
    a trust key or token may be scoped to (not an RHF, not an unknown organisation)."""
    return orgnr in _providers()


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    provider: str | None = None

    def may_see_provider(self, orgnr: str) -> bool:
        """Unit-level and unpublished detail of `orgnr`: registry, or the trust itself (a
        provider of the register's list: a key scoped to an RHF, made before keys were checked
        against the list, must not see the RHF's suppressed rows, which the engine's
        complementary suppression assumes no trust knows)."""
        if self.role == "registry":
            return True
        return self.role == "trust" and self.provider == orgnr and is_provider(orgnr)

    def may_see_result(self, orgnr: str, context: str) -> bool:
        """Unit-level rows and the numbers behind suppressed indicator results of `orgnr` in
        `context`: registry; a trust for its own provider's caregiver rows only (provider, its
        caregiver hf twin and its units: its own patients, whose records it holds). Never for a
        resident row, although its orgnr is the trust's: an HF's resident row counts the
        patients living in its catchment area, most of them treated by other providers."""
        if self.role == "registry":
            return True
        return context == "caregiver" and self.may_see_provider(orgnr)


ANONYMOUS: Final = Principal(subject="anonymous", role="anonymous")


def hash_key(key: str) -> str:
    # SHA-256 without salt or stretching is enough here: the key is 32 random bytes
    # (token_urlsafe(32), 256 bits), so neither a dictionary nor brute force over the hash is
    # feasible; slow password hashes exist for low-entropy, human-chosen secrets.
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    session: Session, *, role: str, provider: str | None = None, name: str = ""
) -> tuple[ApiClient, str]:
    """A new API client and its key (returned once, stored only as a hash)."""
    if role not in CLIENT_ROLES:
        raise RejectedInput(f"role must be one of {', '.join(CLIENT_ROLES)}")
    if role == "trust":
        if provider is None or not is_valid_orgnr(provider):
            raise RejectedInput("a trust key needs --provider with a valid organisation number")
        if not is_provider(provider):
            raise RejectedInput(
                "a trust key's --provider must be a provider of the register's list (an HF or "
                "a private provider, not an RHF)"
            )
    elif provider is not None:
        raise RejectedInput("only trust keys are scoped to a provider")
    prefix = secrets.token_hex(4)
    key = f"{KEY_MARK}{prefix}_{secrets.token_urlsafe(32)}"
    client = ApiClient(
        name=name, key_prefix=prefix, key_hash=hash_key(key), role=role, provider_orgnr=provider
    )
    session.add(client)
    session.flush()
    return client, key


def list_keys(session: Session) -> list[ApiClient]:
    return list(session.exec(select(ApiClient).order_by(col(ApiClient.id))))


def revoke_key(session: Session, client_id: int) -> ApiClient:
    client = session.get(ApiClient, client_id)
    if client is None:
        raise NotFound(f"no API client with id {client_id}")
    if client.revoked_at is None:
        client.revoked_at = datetime.now(UTC)
        session.add(client)
    return client


# Built once: every keyed request runs it (revocation takes effect on the next request, also
# when another process, such as `kvarus keys revoke`, revoked the key).
_ACTIVE_CLIENTS: Final = select(
    ApiClient.id, ApiClient.key_hash, ApiClient.role, ApiClient.provider_orgnr
).where(col(ApiClient.key_prefix) == bindparam("prefix"), col(ApiClient.revoked_at).is_(None))
_REVOKED_CLIENTS: Final = select(ApiClient.id, ApiClient.key_hash).where(
    col(ApiClient.key_prefix) == bindparam("prefix"), col(ApiClient.revoked_at).is_not(None)
)


class RevokedKey(Unauthorised):
    """A revoked API key: answered as an unknown one, but its client is named in the audit log
    (`subject`, as a principal's: `key:{id}`), so that the use of a revoked key can be traced."""

    def __init__(self, detail: str, subject: str) -> None:
        super().__init__(detail)
        self.subject = subject


def principal_from_key(connection: Connection, key: str) -> Principal:
    """The principal of an API key (`kvk_…`) that is known and not revoked."""
    parts = key[len(KEY_MARK) :].split("_", 1)
    if len(parts) != 2 or len(parts[0]) != 8:
        raise Unauthorised("malformed API key")
    candidates = connection.execute(_ACTIVE_CLIENTS, {"prefix": parts[0]}).all()
    digest = hash_key(key)
    for client_id, key_hash, role, provider in candidates:
        if hmac.compare_digest(key_hash, digest):
            return Principal(subject=f"key:{client_id}", role=role, provider=provider)
    for client_id, key_hash in connection.execute(_REVOKED_CLIENTS, {"prefix": parts[0]}).all():
        if hmac.compare_digest(key_hash, digest):
            raise RevokedKey("unknown or revoked API key", subject=f"key:{client_id}")
    raise Unauthorised("unknown or revoked API key")


class SigningKeySource(Protocol):
    """What we need of PyJWT's `PyJWKClient` (tests pass a local one)."""

    def get_signing_key_from_jwt(self, token: str) -> Any: ...


class OidcVerifier:
    """Verifies OIDC bearer tokens; configured from the settings' issuer, audience and JWKS URL."""

    def __init__(self, settings: Settings, keys: SigningKeySource | None = None) -> None:
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.enabled = bool(settings.oidc_issuer and settings.oidc_audience)
        self.max_lifetime = settings.oidc_max_token_lifetime
        if keys is None and self.enabled:
            if not settings.oidc_jwks_url:
                raise ConfigurationError("KVARUS_OIDC_JWKS_URL is required with an OIDC issuer")
            keys = jwt.PyJWKClient(settings.oidc_jwks_url, cache_keys=True, lifespan=300)
        self.keys = keys

    def principal(self, token: str) -> Principal:
        if not self.enabled or self.keys is None:
            raise Unauthorised("bearer token is not an API key and OIDC is not configured")
        try:
            signing_key = self.keys.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                signing_key.key,
                algorithms=JWT_ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as error:
            # The exception's class names the failed check (expired, audience, signature...).
            raise Unauthorised(f"invalid bearer token ({type(error).__name__})") from None
        if float(claims["exp"]) - time.time() > self.max_lifetime:
            # Identity providers issue tokens for minutes or hours: one valid for years is a
            # misconfiguration, and a leaked copy would open the register until then.
            raise Unauthorised(
                "invalid bearer token (valid for longer than KVARUS_OIDC_MAX_TOKEN_LIFETIME, "
                f"{self.max_lifetime} s)"
            )
        return _principal_from_claims(claims)


# The longest OIDC subject taken (OpenID Connect Core: "It MUST NOT exceed 255 ASCII characters").
MAX_SUBJECT: Final = 255


def _principal_from_claims(claims: dict[str, Any]) -> Principal:
    offered: list[str] = []
    if isinstance(claims.get("kvarus_role"), str):
        offered.append(claims["kvarus_role"])
    roles = claims.get("roles")
    if isinstance(roles, list):
        offered.extend(r for r in roles if isinstance(r, str))
    # Several roles: the token holder has the widest one they were granted.
    role = next((r for r in CLIENT_ROLES if r in offered), None)
    if role is None:
        raise Forbidden("the token grants no Kvarus role")
    provider = claims.get("kvarus_provider")
    if role == "trust" and not (isinstance(provider, str) and is_valid_orgnr(provider)):
        raise Forbidden("a trust token needs a valid kvarus_provider claim")
    if role == "trust" and not is_provider(str(provider)):
        raise Forbidden("a trust token's kvarus_provider is not a provider of the register's list")
    sub = claims["sub"]
    if (
        not isinstance(sub, str)
        or len(sub) > MAX_SUBJECT
        or any(unicodedata.category(c) == "Cc" for c in sub)
    ):
        # Stored in audit rows and shown as uploader or publisher: a short line of text (a
        # 200 KB subject, or one holding a newline, was stored as sent).
        raise Forbidden(
            f"the token's sub claim must be text of at most {MAX_SUBJECT} characters without "
            "control characters"
        )
    subject = f"oidc:{sub}"
    if holds_identity_number(subject):
        # The subject is stored (audit rows, uploaded_by, published_by) and shown: a provider
        # that puts a national identity number there (ID-porten's `pid`, not its `sub`) is
        # misconfigured, and its token is refused, never the subject echoed.
        raise Forbidden(
            "the token's sub claim looks like a national identity number: the identity provider "
            "must send a pseudonymous subject"
        )
    return Principal(
        subject=subject,
        role=role,
        provider=provider if role == "trust" else None,
    )


def bearer_token(authorization: str) -> str:
    """The token of an `Authorization: Bearer <token>` header; 401 for any other form."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorised("use Authorization: Bearer <API key or token>")
    return token


def authenticate(
    authorization: str | None, catalog: Session | Connection, oidc: OidcVerifier
) -> Principal:
    """The principal behind an `Authorization` header; anonymous without one."""
    if authorization is None or not authorization.strip():
        return ANONYMOUS
    token = bearer_token(authorization)
    if token.startswith(KEY_MARK):
        connection = catalog.connection() if isinstance(catalog, Session) else catalog
        return principal_from_key(connection, token)
    return oidc.principal(token)


def authenticate_in(engine: Engine, authorization: str, oidc: OidcVerifier) -> Principal:
    """`authenticate` on a pooled connection of its own (for requests without a session)."""
    with engine.connect() as connection:
        return authenticate(authorization, connection, oidc)


def require(principal: Principal, *roles: Role) -> Principal:
    """The principal if its role is one of `roles`; 401 when anonymous, else 403."""
    if principal.role in roles:
        return principal
    if principal.role == "anonymous":
        raise Unauthorised("this route needs credentials")
    raise Forbidden(f"the {principal.role} role may not use this route")
