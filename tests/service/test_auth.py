"""API keys (CLI and look-up) and OIDC bearer tokens, verified against a local RSA key."""

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session
from typer.testing import CliRunner

from schemas.catalog import ApiClient
from schemas.errors import Forbidden, RejectedInput, Unauthorised
from service import auth
from service.cli import app as cli
from service.settings import Settings
from tests.conftest import PROVIDER_A, TEST_KEY

HELSE_NORD_RHF = "883658752"

ISSUER = "https://login.example/realms/kvarus"
AUDIENCE = "kvarus-api"
UPLOADS = "/api/v1/uploads"


class TestKeysCli:
    def env(self, settings: Settings) -> dict[str, str]:
        return {"KVARUS_DATA_DIR": str(settings.data_dir), "KVARUS_PSEUDONYM_KEY": TEST_KEY}

    def test_create_prints_key_last_and_stores_only_its_hash(
        self, settings: Settings, app: FastAPI, client: TestClient
    ) -> None:
        runner = CliRunner()
        result = runner.invoke(
            cli,
            ["keys", "create", "--role", "trust", "--provider", PROVIDER_A, "--name", "UNN"],
            env=self.env(settings),
        )
        assert result.exit_code == 0, result.output
        key = result.output.strip().splitlines()[-1]
        assert key.startswith("kvk_")
        assert len(key) > 40
        with Session(app.state.engine) as session:
            stored = session.get(ApiClient, 1)
            assert stored is not None
            assert stored.role == "trust"
            assert stored.provider_orgnr == PROVIDER_A
            assert key not in stored.key_hash
            assert stored.key_prefix == key.split("_")[1]
        ok = client.get(UPLOADS, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200

        listing = runner.invoke(cli, ["keys", "list"], env=self.env(settings))
        assert listing.exit_code == 0
        assert "1\t" in listing.output
        assert "active" in listing.output
        assert key not in listing.output

        revoked = runner.invoke(cli, ["keys", "revoke", "1"], env=self.env(settings))
        assert revoked.exit_code == 0
        refused = client.get(UPLOADS, headers={"Authorization": f"Bearer {key}"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"

    def test_bad_role_or_no_provider_is_a_usage_error_and_unknown_id_exit_1(
        self, settings: Settings
    ) -> None:
        runner = CliRunner()
        bad = runner.invoke(cli, ["keys", "create", "--role", "admin"], env=self.env(settings))
        assert bad.exit_code == 2
        assert "expected one of registry, trust, researcher" in " ".join(bad.output.split())
        trust = runner.invoke(cli, ["keys", "create", "--role", "trust"], env=self.env(settings))
        assert trust.exit_code == 2
        missing = runner.invoke(cli, ["keys", "revoke", "42"], env=self.env(settings))
        assert missing.exit_code == 1


class TestApiKeys:
    def test_tampered_key_is_refused(self, app: FastAPI) -> None:
        with Session(app.state.engine) as own:
            _, key = auth.create_key(own, role="registry")
            own.commit()
            principal = auth.authenticate(f"Bearer {key}", own, app.state.oidc)
            assert principal.role == "registry"
            with pytest.raises(Unauthorised):
                auth.authenticate(f"Bearer {key[:-1]}x", own, app.state.oidc)
            with pytest.raises(Unauthorised):
                auth.authenticate(f"Basic {key}", own, app.state.oidc)

    def test_scope_rules(self, app: FastAPI) -> None:
        with Session(app.state.engine) as own:
            with pytest.raises(RejectedInput):
                auth.create_key(own, role="researcher", provider=PROVIDER_A)
            with pytest.raises(RejectedInput):
                auth.create_key(own, role="trust", provider="123456789")
            # A valid organisation number, but an RHF: it would see the RHF's suppressed rows.
            with pytest.raises(RejectedInput, match="not an RHF"):
                auth.create_key(own, role="trust", provider=HELSE_NORD_RHF)

    def test_a_trust_scoped_to_an_rhf_sees_nothing_unpublished(self) -> None:
        # A key made before create_key checked the list (the catalog row holds the RHF).
        principal = auth.Principal(subject="key:1", role="trust", provider=HELSE_NORD_RHF)
        assert not principal.may_see_provider(HELSE_NORD_RHF)
        own = auth.Principal(subject="key:2", role="trust", provider=PROVIDER_A)
        assert own.may_see_provider(PROVIDER_A)
        assert not own.may_see_provider(HELSE_NORD_RHF)


class LocalKeys:
    """Stands in for PyJWKClient: hands out the public half of a local RSA key."""

    def __init__(self, public_key: Any) -> None:
        self.public_key = public_key

    def get_signing_key_from_jwt(self, token: str) -> Any:
        return jwt.PyJWK.from_dict(
            jwt.algorithms.RSAAlgorithm.to_jwk(self.public_key, as_dict=True) | {"alg": "RS256"}
        )


@pytest.fixture
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def oidc_client(app: FastAPI, settings: Settings, private_key: rsa.RSAPrivateKey) -> TestClient:
    configured = settings.model_copy(
        update={"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE, "oidc_jwks_url": "unused"}
    )
    app.state.oidc = auth.OidcVerifier(configured, keys=LocalKeys(private_key.public_key()))
    return TestClient(app, raise_server_exceptions=False)


def token(private_key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now, "exp": now + 300}
    return jwt.encode(body | claims, private_key, algorithm="RS256")


class TestOidc:
    def test_trust_token_sees_own_uploads(
        self, oidc_client: TestClient, private_key: rsa.RSAPrivateKey
    ) -> None:
        bearer = token(private_key, kvarus_role="trust", kvarus_provider=PROVIDER_A)
        response = oidc_client.get(UPLOADS, headers={"Authorization": f"Bearer {bearer}"})
        assert response.status_code == 200
        assert response.json()["total"] == 0

    def test_roles_claim_list(
        self, oidc_client: TestClient, private_key: rsa.RSAPrivateKey
    ) -> None:
        bearer = token(private_key, roles=["offline_access", "researcher"])
        response = oidc_client.get(UPLOADS, headers={"Authorization": f"Bearer {bearer}"})
        assert response.status_code == 403  # a researcher may not list uploads

    @pytest.mark.parametrize(
        ("claims", "status"),
        [
            ({"aud": "someone-else"}, 401),
            ({"iss": "https://evil.example"}, 401),
            ({"exp": 1_000_000_000}, 401),
            ({"exp": int(time.time()) + 10 * 365 * 24 * 3600}, 401),  # valid for ten years
            ({"exp": str(int(time.time()) + 2 * 24 * 3600)}, 401),  # two days, as text
            ({"kvarus_role": "admin"}, 403),
            ({"kvarus_role": "trust"}, 403),  # no provider claim
            ({"kvarus_role": "trust", "kvarus_provider": HELSE_NORD_RHF}, 403),  # not a provider
        ],
    )
    def test_bad_tokens(
        self,
        oidc_client: TestClient,
        private_key: rsa.RSAPrivateKey,
        claims: dict[str, Any],
        status: int,
    ) -> None:
        bearer = token(private_key, **({"kvarus_role": "registry"} | claims))
        response = oidc_client.get(UPLOADS, headers={"Authorization": f"Bearer {bearer}"})
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"

    def test_token_signed_by_another_key(self, oidc_client: TestClient) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        bearer = token(other, kvarus_role="registry")
        response = oidc_client.get(UPLOADS, headers={"Authorization": f"Bearer {bearer}"})
        assert response.status_code == 401
        assert response.json()["detail"] == "invalid bearer token (InvalidSignatureError)"

    def test_a_token_valid_longer_than_the_maximum_is_refused(
        self, app: FastAPI, settings: Settings, private_key: rsa.RSAPrivateKey
    ) -> None:
        configured = settings.model_copy(
            update={
                "oidc_issuer": ISSUER,
                "oidc_audience": AUDIENCE,
                "oidc_jwks_url": "unused",
                "oidc_max_token_lifetime": 600,
            }
        )
        app.state.oidc = auth.OidcVerifier(configured, keys=LocalKeys(private_key.public_key()))
        client = TestClient(app, raise_server_exceptions=False)
        now = int(time.time())
        for exp, status in [(now + 300, 200), (now + 3600, 401)]:
            bearer = token(private_key, kvarus_role="registry", exp=exp)
            response = client.get(UPLOADS, headers={"Authorization": f"Bearer {bearer}"})
            assert response.status_code == status
        assert response.json()["detail"] == (
            "invalid bearer token (valid for longer than KVARUS_OIDC_MAX_TOKEN_LIFETIME, 600 s)"
        )

    def test_without_oidc_configured_a_jwt_is_refused(
        self, client: TestClient, private_key: rsa.RSAPrivateKey
    ) -> None:
        bearer = token(private_key, kvarus_role="registry")
        response = client.get(UPLOADS, headers={"Authorization": f"Bearer {bearer}"})
        assert response.status_code == 401


@pytest.mark.parametrize("sub", ["01019000083", "010190-00083", "user 01019000083"])
def test_a_subject_holding_an_identity_number_is_refused_unechoed(sub: str) -> None:
    # The subject is stored in audit rows and as uploader/publisher: never a fødselsnummer
    # (01019000083 passes both check digits).
    with pytest.raises(Forbidden) as refused:
        auth._principal_from_claims({"sub": sub, "kvarus_role": "registry"})
    assert refused.value.detail == (
        "the token's sub claim looks like a national identity number: the identity provider "
        "must send a pseudonymous subject"
    )
    ordinary = auth._principal_from_claims({"sub": "12345678901", "kvarus_role": "registry"})
    assert ordinary.subject == "oidc:12345678901"  # fails the check digits


def test_claims_pick_widest_role() -> None:
    principal = auth._principal_from_claims({"sub": "x", "roles": ["researcher", "registry"]})
    assert principal.role == "registry"
    with pytest.raises(Forbidden):
        auth._principal_from_claims({"sub": "x", "roles": []})


@pytest.mark.parametrize("sub", ["x" * 256, "user\nadmin", "tab\there", 42])
def test_a_subject_too_long_or_with_control_characters_is_refused(sub: object) -> None:
    """The subject is stored in audit rows and shown as uploader or publisher: a 200 KB subject
    or one holding a newline was stored as sent. OpenID Connect caps sub at 255 characters."""
    with pytest.raises(Forbidden) as refused:
        auth._principal_from_claims({"sub": sub, "kvarus_role": "registry"})
    assert refused.value.detail == (
        "the token's sub claim must be text of at most 255 characters without control characters"
    )
    longest = auth._principal_from_claims({"sub": "x" * 255, "kvarus_role": "registry"})
    assert longest.subject == "oidc:" + "x" * 255
