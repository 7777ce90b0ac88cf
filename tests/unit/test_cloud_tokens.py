"""GCP identity token claims and Azure signer checks, on evidence the tests mint."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from services.gateway.evidence.azure import verify_azure
from services.gateway.evidence.base import EvidenceError
from services.gateway.evidence.gcp import verify_gcp
from tests import cloud_fixtures as fx

AUDIENCE = "strongroom:challenge-0123456789abcdef:" + "0" * 64


def _gcp(token: str, **kwargs):
    kwargs.setdefault("jwks", fx.gcp_jwks())
    kwargs.setdefault("now", fx.NOW)
    return verify_gcp(token, audience=AUDIENCE, **kwargs)


def _refused(call, *args, **kwargs) -> str:
    with pytest.raises(EvidenceError) as refused:
        call(*args, **kwargs)
    return refused.value.reason


@pytest.mark.parametrize(("claims", "reason"), [
    ({"iss": "accounts.google.com.evil"}, "identity token issuer is not Google"),
    ({"iss": None}, "identity token issuer is not Google"),
    ({"aud": [AUDIENCE, "other"]}, "identity token audience does not match the challenge"),
    ({"aud": AUDIENCE + "x"}, "identity token audience does not match the challenge"),
    ({"lifetime": 7200}, "identity token lifetime is not valid"),
    ({"now": fx.NOW + timedelta(minutes=10)}, "identity token lifetime is not valid"),
    ({"exp": None}, "identity token lacks exp or iat"),
    ({"iat": "today"}, "identity token lacks exp or iat"),
    ({"nbf": int(fx.NOW.timestamp()) + 600}, "identity token not yet valid"),
    ({"google": {}}, "identity token lacks instance details (format=full)"),
    ({"google": {"compute_engine": {"project_id": "p", "zone": "z"}}}, "identity token field project_number missing or malformed"),
])
def test_gcp_refuses_a_genuine_token_with_wrong_claims(claims, reason):
    claims = {k: v for k, v in claims.items()}
    extra = {"now": claims.pop("now")} if "now" in claims else {}
    lifetime = {"lifetime": claims.pop("lifetime")} if "lifetime" in claims else {}
    payload = fx.gcp_claims(AUDIENCE, **extra, **lifetime)
    payload.update(claims)
    token = jwt.encode({"alg": "RS256", "kid": "gcp-1"}, {k: v for k, v in payload.items() if v is not None}, fx.gcp_key())
    assert _refused(_gcp, token) == reason


def test_gcp_refuses_algorithm_confusion_and_unsigned_tokens():
    public_jwk = fx.gcp_jwks()["keys"][0]
    hmac_key = OctKey.import_key(json.dumps(public_jwk).encode(), {"kid": "gcp-1"})
    hs256 = jwt.encode({"alg": "HS256", "kid": "gcp-1"}, fx.gcp_claims(AUDIENCE), hmac_key)
    assert _refused(_gcp, hs256) == "identity token signature does not verify"
    assert _refused(_gcp, hs256, jwks={"keys": [public_jwk, {"kty": "oct", "kid": "gcp-1", "k": "c2VjcmV0"}]}) == (
        "identity token signature does not verify")
    header = base64.urlsafe_b64encode(b'{"alg":"none","kid":"gcp-1"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(fx.gcp_claims(AUDIENCE)).encode()).rstrip(b"=").decode()
    assert _refused(_gcp, f"{header}.{body}.") == "identity token missing or malformed"
    assert _refused(_gcp, f"{header}.{body}.AAAA") == "identity token signature does not verify"


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "x" * 9000, 42])
def test_gcp_refuses_what_is_not_a_compact_jwt(token):
    assert _refused(_gcp, token) == "identity token missing or malformed"


def test_gcp_refuses_when_the_configured_jwks_is_unusable():
    token = fx.gcp_token(AUDIENCE)
    assert _refused(_gcp, token, jwks={"nothing": []}) == "configured JWKS has no keys"
    assert _refused(_gcp, token, jwks={"keys": []}) == "configured JWKS is unreadable"
    private = {"keys": [{**fx.gcp_key().as_dict(private=True)}]}  # private halves are dropped, so nothing is left
    assert _refused(_gcp, token, jwks=private) == "configured JWKS is unreadable"


def test_gcp_refusals_never_echo_the_token():
    token = jwt.encode({"alg": "RS256", "kid": "gcp-1"}, fx.gcp_claims("secret-audience-value"), fx.gcp_key())
    with pytest.raises(EvidenceError) as refused:
        _gcp(token)
    assert "secret" not in str(refused.value) and token not in repr(refused.value)


# --- Azure --------------------------------------------------------------------------------


def _azure(signature: str, **kwargs):
    root, intermediate, _ = fx.azure_chain()
    kwargs.setdefault("roots", [fx.pem(root)])
    return verify_azure(signature, intermediates=[fx.pem(intermediate)], nonce="abc123", now=fx.NOW, **kwargs)


def test_azure_refuses_a_signer_that_is_not_the_metadata_service():
    root_key, leaf_key = fx.rsa_key("azure:mid"), fx.rsa_key("other:leaf")
    leaf = fx.certificate("www.example.com", leaf_key, issuer=("azure TLS Issuing CA", root_key), dns=("www.example.com",))
    signature = fx.cms_sign(fx.azure_document("abc123"), leaf, leaf_key, with_certs=True)
    assert _refused(_azure, signature) == "signer is not the metadata service"


def test_azure_refuses_without_a_carried_signer_or_configured_roots():
    _, _, leaf = fx.azure_chain()
    bare = fx.cms_sign(fx.azure_document("abc123"), leaf, fx.rsa_key("azure:leaf"))
    assert _refused(_azure, bare) == "signature carries no signer certificate"
    assert _refused(_azure, fx.azure_sign(fx.azure_document("abc123")), roots=[]) == "no trusted roots configured"


@pytest.mark.parametrize(("nonce", "overrides", "reason"), [
    ("abc123", {"vmId": "not-a-guid"}, "document lacks vmId or subscriptionId"),
    ("abc123", {"timeStamp": {"createdOn": "yesterday"}}, "document timeStamp missing or malformed"),
    ("abc1234", {}, "document nonce does not match the challenge"),
    (None, {}, "document nonce does not match the challenge"),
])
def test_azure_refuses_a_signed_document_with_bad_fields(nonce, overrides, reason):
    assert _refused(_azure, fx.azure_sign(fx.azure_document(nonce, **overrides))) == reason


def test_azure_refuses_a_document_created_in_the_future():
    document = fx.azure_document("abc123", now=fx.NOW + timedelta(hours=1))
    assert _refused(_azure, fx.azure_sign(document)) == "document is not valid now"
