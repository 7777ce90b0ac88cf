"""Signing and verification of agent requests with RFC 9421 HTTP Message Signatures."""

import datetime
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms
from multidict import CIMultiDict

from shared.crypto import httpsig
from shared.crypto.httpsig import (
    SIGNATURE_TAG,
    SignatureError,
    VerifiedSignature,
    sign_request,
    verify_request,
)

DEVICE_ID = "device-7f3a"
NOW = 1_750_000_000
URL = "https://strongroom.example/v1/keys/vol-1/release?version=3"
BODY = b'{"attestation": "quote"}'


@pytest.fixture
def device_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def resolve(device_key: Ed25519PrivateKey) -> Callable[[str], Ed25519PublicKey | None]:
    return {DEVICE_ID: device_key.public_key()}.get


def signed_headers(device_key: Ed25519PrivateKey, **overrides) -> dict[str, str]:
    args = dict(method="POST", url=URL, headers={"Content-Type": "application/json"}, body=BODY,
                key_id=DEVICE_ID, private_key=device_key, created=NOW, nonce="n-123")
    args.update(overrides)
    return {"Content-Type": "application/json", **sign_request(**args)}


def verify(headers, resolve, *, method="POST", url=URL, body=BODY, now=NOW + 5, **kwargs) -> VerifiedSignature:
    return verify_request(method=method, url=url, headers=headers, body=body,
                          resolve_public_key=resolve, now=now, **kwargs)


def library_signed_headers(device_key: Ed25519PrivateKey, *, components, nonce: str | None) -> dict[str, str]:
    """Sign with the library directly, to produce signatures our signer never would."""
    class Request:
        def __init__(self) -> None:
            self.method = "POST"
            self.url = URL
            self.headers: dict[str, str] = {}

    request = Request()
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={DEVICE_ID: device_key}),
    )
    signer.sign(request, key_id=DEVICE_ID, created=datetime.datetime.fromtimestamp(NOW, datetime.UTC),
                nonce=nonce, tag=SIGNATURE_TAG, covered_component_ids=components, body=BODY)
    return request.headers


def test_sign_request_returns_only_the_headers_to_add(device_key) -> None:
    headers = sign_request(method="POST", url=URL, headers={"Content-Type": "application/json"}, body=BODY,
                           key_id=DEVICE_ID, private_key=device_key, created=NOW, nonce="n-123")

    assert set(headers) == {"Content-Digest", "Signature-Input", "Signature"}
    assert headers["Content-Digest"].startswith("sha-256=:")
    signature_input = headers["Signature-Input"]
    for part in ('"@method"', '"@path"', '"@query"', '"content-digest"', f"created={NOW}",
                 f'keyid="{DEVICE_ID}"', 'nonce="n-123"', f'tag="{SIGNATURE_TAG}"', 'alg="ed25519"'):
        assert part in signature_input


def test_good_signature_verifies(device_key, resolve) -> None:
    verified = verify(signed_headers(device_key), resolve)

    assert verified == VerifiedSignature(key_id=DEVICE_ID, created=NOW, nonce="n-123")


def test_default_nonce_is_random_and_created_is_now(device_key, resolve) -> None:
    first = sign_request(method="GET", url=URL, headers={}, body=b"", key_id=DEVICE_ID, private_key=device_key)
    second = sign_request(method="GET", url=URL, headers={}, body=b"", key_id=DEVICE_ID, private_key=device_key)

    a = verify_request(method="GET", url=URL, headers=first, body=b"", resolve_public_key=resolve)
    b = verify_request(method="GET", url=URL, headers=second, body=b"", resolve_public_key=resolve)
    assert a.nonce != b.nonce and len(a.nonce) >= 22


def test_proxy_changing_scheme_and_host_does_not_break_verification(device_key, resolve) -> None:
    headers = signed_headers(device_key)

    verified = verify(headers, resolve, url="http://10.0.0.5:8080/v1/keys/vol-1/release?version=3")

    assert verified.key_id == DEVICE_ID


def test_headers_may_arrive_with_any_case(device_key, resolve) -> None:
    headers = {name.lower(): value for name, value in signed_headers(device_key).items()}

    assert verify(headers, resolve).nonce == "n-123"


def test_tampered_body_is_rejected(device_key, resolve) -> None:
    with pytest.raises(SignatureError, match="Content-Digest") as excinfo:
        verify(signed_headers(device_key), resolve, body=BODY + b" ")
    assert "body" in excinfo.value.reason


def test_replaced_content_digest_is_rejected(device_key, resolve) -> None:
    headers = signed_headers(device_key)
    headers["Content-Digest"] = sign_request(method="POST", url=URL, headers={}, body=b"other", key_id=DEVICE_ID,
                                             private_key=device_key)["Content-Digest"]

    with pytest.raises(SignatureError, match="does not verify"):
        verify(headers, resolve, body=b"other")


@pytest.mark.parametrize("url", [
    "https://strongroom.example/v1/keys/vol-2/release?version=3",
    "https://strongroom.example/v1/keys/vol-1/release?version=4",
    "https://strongroom.example/v1/keys/vol-1/release",
])
def test_tampered_path_or_query_is_rejected(device_key, resolve, url) -> None:
    with pytest.raises(SignatureError, match="does not verify"):
        verify(signed_headers(device_key), resolve, url=url)


def test_tampered_method_is_rejected(device_key, resolve) -> None:
    with pytest.raises(SignatureError, match="does not verify"):
        verify(signed_headers(device_key), resolve, method="PUT")


def test_signature_by_another_key_is_rejected(resolve) -> None:
    with pytest.raises(SignatureError, match="does not verify"):
        verify(signed_headers(Ed25519PrivateKey.generate()), resolve)


def test_unknown_key_id_is_rejected(device_key, resolve) -> None:
    with pytest.raises(SignatureError, match="unknown key id 'device-unknown'"):
        verify(signed_headers(device_key, key_id="device-unknown"), resolve)


def test_key_store_failure_is_not_disguised_as_a_bad_signature(device_key) -> None:
    def broken_store(key_id: str) -> Ed25519PublicKey | None:
        raise ConnectionError("key store unavailable")

    with pytest.raises(ConnectionError):
        verify(signed_headers(device_key), broken_store)


def test_stale_signature_is_rejected(device_key, resolve) -> None:
    with pytest.raises(SignatureError, match="301s old"):
        verify(signed_headers(device_key), resolve, now=NOW + 301)


def test_max_age_is_configurable(device_key, resolve) -> None:
    assert verify(signed_headers(device_key), resolve, now=NOW + 500, max_age_seconds=600).created == NOW
    with pytest.raises(SignatureError, match="older than the 10s limit"):
        verify(signed_headers(device_key), resolve, now=NOW + 11, max_age_seconds=10)


def test_small_clock_skew_is_tolerated(device_key, resolve) -> None:
    assert verify(signed_headers(device_key), resolve, now=NOW - 60).created == NOW


def test_signature_from_the_future_is_rejected(device_key, resolve) -> None:
    with pytest.raises(SignatureError, match="in the future"):
        verify(signed_headers(device_key), resolve, now=NOW - 61)


def test_missing_nonce_is_rejected(device_key, resolve) -> None:
    headers = library_signed_headers(device_key, components=("@method", "@path", "@query"), nonce=None)

    with pytest.raises(SignatureError, match="no nonce"):
        verify(headers, resolve)


def test_required_components_must_be_covered(device_key, resolve) -> None:
    headers = library_signed_headers(device_key, components=("@method", "@path"), nonce="n-1")

    with pytest.raises(SignatureError, match=r"does not cover required component.*@query"):
        verify(headers, resolve)


def test_signature_without_our_tag_is_rejected(device_key, resolve) -> None:
    headers = signed_headers(device_key)
    headers["Signature-Input"] = headers["Signature-Input"].replace(SIGNATURE_TAG, "someone-else")

    with pytest.raises(SignatureError, match="tag"):
        verify(headers, resolve)


@pytest.mark.parametrize("header", ["Signature", "Signature-Input", "Content-Digest"])
def test_missing_header_is_rejected(device_key, resolve, header) -> None:
    headers = signed_headers(device_key)
    del headers[header]

    with pytest.raises(SignatureError, match=f"missing header.*{header}") as excinfo:
        verify(headers, resolve)
    assert excinfo.value.reason.startswith("missing header")


def test_malformed_signature_header_is_rejected(device_key, resolve) -> None:
    headers = signed_headers(device_key)
    headers["Signature"] = "not a structured field ("

    with pytest.raises(SignatureError, match="invalid signature"):
        verify(headers, resolve)


# --- the direct path: requests spelled as sign_request spells them skip the library's parser ---

URLS = ["https://h.example/v1/agent/heartbeat", "https://h.example/v1/agent/key-requests/req_1?wait=3&a=b",
        "http://10.0.0.5:8080/p%20q/r?", "https://h.example", "https://h.example/v1/keys/vol-1/release?version=3"]


@pytest.mark.parametrize("url", URLS)
def test_a_signature_made_by_the_library_verifies_directly_with_the_same_result(device_key, resolve, url) -> None:
    """The library signs its own signature base, so a direct verification that passes has built
    the same base; both paths return the same parameters."""
    headers = {"Content-Type": "application/json", **httpsig._sign_with_library(
        "POST", url, {}, BODY, key_id=DEVICE_ID, private_key=device_key, created=NOW, nonce="n-123")}

    canonical = httpsig._canonical_signature("POST", url, headers)
    assert canonical is not None
    direct = httpsig._verify_canonical(canonical, body=BODY, resolve_public_key=resolve)
    library = httpsig._verify_with_library("POST", url, headers, BODY, resolve)
    assert {k: library[k] for k in direct} == direct
    assert verify(headers, resolve, url=url) == VerifiedSignature(key_id=DEVICE_ID, created=NOW, nonce="n-123")


def test_a_multi_dict_with_one_line_each_verifies_directly(device_key, resolve) -> None:
    headers = CIMultiDict(signed_headers(device_key))

    assert httpsig._canonical_signature("POST", URL, headers) is not None
    assert verify(headers, resolve).nonce == "n-123"


@pytest.mark.parametrize("respell", [
    lambda h: h.update({"Signature-Input": h["Signature-Input"].replace(";alg", "; alg")}),
    lambda h: h.update({"Signature-Input": h["Signature-Input"] + ", other=()"}),
    lambda h: h.update({"Content-Digest": " " + h["Content-Digest"]}),
])
def test_any_other_spelling_goes_through_the_library_and_is_judged_there(device_key, resolve, respell) -> None:
    headers = signed_headers(device_key)
    respell(headers)

    assert httpsig._canonical_signature("POST", URL, headers) is None
    try:
        outcome: object = verify(headers, resolve)
    except SignatureError as exc:
        outcome = exc.reason
    try:
        expected: object = httpsig._fresh(httpsig._verify_with_library("POST", URL, headers, BODY, resolve),
                                          max_age_seconds=httpsig.DEFAULT_MAX_AGE_SECONDS, now=NOW + 5)
    except SignatureError as exc:
        expected = exc.reason
    assert outcome == expected


def test_a_repeated_signature_line_goes_through_the_library(device_key, resolve) -> None:
    headers = CIMultiDict(signed_headers(device_key))
    headers.add("Signature", headers["Signature"])

    assert httpsig._canonical_signature("POST", URL, headers) is None
    with pytest.raises(SignatureError):
        verify(headers, resolve)


@pytest.mark.parametrize("tamper", [
    lambda h: h.update({"Signature-Input": h["Signature-Input"].replace("created=", "created=1")}),
    lambda h: h.update({"Signature-Input": h["Signature-Input"].replace('nonce="n-123"', 'nonce="n-124"')}),
    lambda h: h.update({"Signature": h["Signature"][:20] + ("A" if h["Signature"][20] != "A" else "B")
                        + h["Signature"][21:]}),
    lambda h: h.update({"Content-Digest": sign_request(method="POST", url=URL, headers={}, body=b"other",
                                                        key_id=DEVICE_ID, private_key=Ed25519PrivateKey.generate())
                        ["Content-Digest"]}),
])
def test_a_tampered_request_in_our_spelling_is_refused_directly(device_key, resolve, tamper) -> None:
    headers = signed_headers(device_key)
    tamper(headers)

    assert httpsig._canonical_signature("POST", URL, headers) is not None
    with pytest.raises(SignatureError, match="does not verify"):
        verify(headers, resolve)


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_direct_signing_gives_the_libraries_headers_to_the_byte(device_key, url, method) -> None:
    """Ed25519 is deterministic: the same base signed by the same key is the same signature."""
    args = dict(key_id=DEVICE_ID, private_key=device_key, created=NOW, nonce="n-123")

    direct = httpsig._sign_directly(method, url, BODY, **args)

    assert direct == httpsig._sign_with_library(method, url, {"Accept": "application/json"}, BODY, **args)


@pytest.mark.parametrize("overrides", [dict(key_id='dev"1'), dict(nonce="n\\1"), dict(created=-1)])
def test_values_outside_our_spelling_are_signed_by_the_library(device_key, overrides) -> None:
    args = dict(key_id=DEVICE_ID, private_key=device_key, created=NOW, nonce="n-123") | overrides

    assert httpsig._sign_directly("POST", URL, BODY, **args) is None
    assert sign_request(method="POST", url=URL, headers={}, body=BODY, **args) == httpsig._sign_with_library(
        "POST", URL, {}, BODY, **args)
