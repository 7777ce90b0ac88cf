"""HTTP Message Signatures (RFC 9421) with Ed25519 for agent requests, over `http-message-signatures`.

An agent signs each request with its device's Ed25519 key; the key id is the device id. The
signature covers ``@method``, ``@path``, ``@query`` and ``content-digest`` (SHA-256 of the body,
RFC 9530), with the parameters ``created``, ``keyid``, ``alg="ed25519"``, a random ``nonce`` and
``tag="strongroom-agent"``.

``@authority``, ``@scheme`` and ``@target-uri`` are deliberately not covered: behind a
TLS-terminating proxy the server sees a different scheme and host than the agent used, which
would break every signature. The path and query must reach the server unchanged (no prefix
stripping). The cost: within the max-age window a captured request could be replayed to another
host that trusts the same device key, so register each device key with one deployment only.

Replay detection is the caller's job: store the returned nonce until ``created + max_age``
has passed and reject any repeat.
"""

import base64
import datetime
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature as InvalidCryptographicSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)
from http_message_signatures._url import URLParts, parse_url

SIGNATURE_TAG = "strongroom-agent"
SIGNATURE_LABEL = "strongroom"
COVERED_COMPONENTS = ("@method", "@path", "@query", "content-digest")
MAX_CLOCK_SKEW_SECONDS = 60
DEFAULT_MAX_AGE_SECONDS = 300

_SIGNATURE_HEADERS = frozenset({"content-digest", "signature-input", "signature"})
_REQUIRED_HEADERS = ("Signature-Input", "Signature", "Content-Digest")

# The exact spelling `sign_request` gives its three headers (Structured Field strings without
# escapes, an integer without sign or leading zero, base64 with its padding): such a request's
# signature base is built here directly; any other spelling goes through the library's parser.
_SF_CHARS = r"[\x20\x21\x23-\x5b\x5d-\x7e]"
_CANONICAL_INPUT = re.compile(
    rf'{SIGNATURE_LABEL}=(\("@method" "@path" "@query" "content-digest"\);created=(0|[1-9][0-9]{{0,14}});'
    rf'keyid="({_SF_CHARS}{{1,200}})";alg="ed25519";nonce="({_SF_CHARS}{{1,200}})";tag="{SIGNATURE_TAG}")'
)
_CANONICAL_SIGNATURE = re.compile(rf"{SIGNATURE_LABEL}=:([A-Za-z0-9+/]{{86}}==):")
_CANONICAL_DIGEST = re.compile(r"sha-256=:([A-Za-z0-9+/]{43}=):")


class SignatureError(Exception):
    """A request's signature was not accepted; `reason` says why, in words fit for the audit log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedSignature:
    """Who signed a request and the values the caller needs for replay detection."""

    key_id: str
    created: int
    nonce: str


def sign_request(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    key_id: str,
    private_key: Ed25519PrivateKey,
    created: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Return the Content-Digest, Signature-Input and Signature headers to add to the request.

    `url` is the absolute URL the agent requests. The returned headers replace any existing
    headers of the same names.
    """
    created_at = int(time.time()) if created is None else created
    nonce = secrets.token_urlsafe(16) if nonce is None else nonce
    signed = _sign_directly(method, url, body, key_id=key_id, private_key=private_key, created=created_at, nonce=nonce)
    if signed is not None:
        return signed
    return _sign_with_library(method, url, headers, body, key_id=key_id, private_key=private_key, created=created_at,
                              nonce=nonce)


def _sign_directly(method: str, url: str, body: bytes, *, key_id: str, private_key: Ed25519PrivateKey, created: int,
                   nonce: str) -> dict[str, str] | None:
    """The headers in the spelling `_canonical_signature` reads, the signature base built here;
    None when a value falls outside that spelling (the library signs those)."""
    digest = f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"
    signature_input = (f'{SIGNATURE_LABEL}=("@method" "@path" "@query" "content-digest");created={created};'
                       f'keyid="{key_id}";alg="ed25519";nonce="{nonce}";tag="{SIGNATURE_TAG}"')
    if not method.isalpha() or not method.isupper() or _CANONICAL_INPUT.fullmatch(signature_input) is None:
        return None
    try:
        parts = parse_url(str(url))
    except HTTPMessageSignaturesException:
        return None
    base = _signature_base(method, parts, digest, signature_input.removeprefix(f"{SIGNATURE_LABEL}="))
    signature = base64.b64encode(private_key.sign(base.encode())).decode()
    return {"Content-Digest": digest, "Signature-Input": signature_input, "Signature": f"{SIGNATURE_LABEL}=:{signature}:"}


def _signature_base(method: str, parts: URLParts, digest: str, signature_params: str) -> str:
    """RFC 9421's signature base over our covered components, as the library builds it."""
    return (f'"@method": {method}\n"@path": {parts.path or "/"}\n"@query": ?{parts.query or ""}\n'
            f'"content-digest": {digest}\n"@signature-params": {signature_params}')


def _sign_with_library(method: str, url: str, headers: Mapping[str, str], body: bytes, *, key_id: str,
                       private_key: Ed25519PrivateKey, created: int, nonce: str) -> dict[str, str]:
    # Only our own signature headers are dropped: the digest must be the one computed here.
    message = _Request(
        method=method,
        url=str(url),
        headers={name: value for name, value in headers.items() if name.lower() not in _SIGNATURE_HEADERS},
    )
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519, key_resolver=_SigningKey(key_id, private_key)
    )
    try:
        signer.sign(
            message,
            key_id=key_id,
            created=datetime.datetime.fromtimestamp(created, tz=datetime.UTC),
            nonce=nonce,
            label=SIGNATURE_LABEL,
            tag=SIGNATURE_TAG,
            covered_component_ids=COVERED_COMPONENTS,
            body=body,
        )
    except HTTPMessageSignaturesException as exc:
        raise ValueError(f"cannot sign request: {exc}") from exc
    return {name: value for name, value in message.headers.items() if name.lower() in _SIGNATURE_HEADERS}


def verify_request(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    resolve_public_key: Callable[[str], Ed25519PublicKey | None],
    max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
    now: float | None = None,
) -> VerifiedSignature:
    """Check a request's Strongroom agent signature and body digest, or raise SignatureError.

    `url` is the absolute URL as the server sees it (aiohttp's ``str(request.url)``) and
    `headers` may be a multi-dict; repeated field lines are combined as RFC 9421 requires.
    `resolve_public_key` returns None for an unknown device id; anything it raises propagates
    unchanged, so an outage of the key store is not reported as a bad signature.
    """
    present = {name.lower() for name in headers}
    missing = [name for name in _REQUIRED_HEADERS if name.lower() not in present]
    if missing:
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    canonical = _canonical_signature(method, url, headers)
    if canonical is not None:
        params: Mapping[str, object] = _verify_canonical(canonical, body=body, resolve_public_key=resolve_public_key)
    else:
        params = _verify_with_library(method, url, headers, body, resolve_public_key)
    return _fresh(params, max_age_seconds=max_age_seconds, now=now)


class _Canonical(NamedTuple):
    base: str  # the RFC 9421 signature base
    key_id: str
    created: int
    nonce: str
    signature: bytes
    digest: bytes  # the body's SHA-256 as Content-Digest gives it


def _canonical_signature(method: str, url: str, headers: Mapping[str, str]) -> _Canonical | None:
    """A request whose headers are spelled exactly as `sign_request` spells them, one line each,
    with its signature base built directly; None for any other request."""
    values = [_only_line(headers, name) for name in ("signature-input", "signature", "content-digest")]
    if None in values or not method.isalpha() or not method.isupper():
        return None
    signature_input, signature, digest = values
    params, sig, digested = (_CANONICAL_INPUT.fullmatch(signature_input), _CANONICAL_SIGNATURE.fullmatch(signature),
                             _CANONICAL_DIGEST.fullmatch(digest))
    if params is None or sig is None or digested is None:
        return None
    try:
        parts = parse_url(str(url))  # the library's own URL grammar: the same @path and @query as its resolver
    except HTTPMessageSignaturesException:
        return None
    base = _signature_base(method, parts, digest, params.group(1))
    return _Canonical(base, params.group(3), int(params.group(2)), params.group(4), base64.b64decode(sig.group(1)),
                      base64.b64decode(digested.group(1)))


def _only_line(headers: Mapping[str, str], name: str) -> str | None:
    getall = getattr(headers, "getall", None)
    lines = getall(name, []) if getall is not None else [v for k, v in headers.items() if k.lower() == name]
    return lines[0] if len(lines) == 1 else None


def _verify_canonical(canonical: _Canonical, *, body: bytes,
                      resolve_public_key: Callable[[str], Ed25519PublicKey | None]) -> Mapping[str, object]:
    """The checks the library makes of such a request, in its order: the key, the signature over
    the base, then the body against the signed digest. The signature's parameters."""
    key = resolve_public_key(canonical.key_id)
    if key is None:
        raise SignatureError(f"unknown key id {canonical.key_id!r}")
    try:
        key.verify(canonical.signature, canonical.base.encode())
    except InvalidCryptographicSignature:
        raise SignatureError("signature does not verify with the registered key for this key id") from None
    if not hmac.compare_digest(canonical.digest, hashlib.sha256(body).digest()):
        raise SignatureError("body does not match the signed Content-Digest: the sha-256 digest differs")
    return {"keyid": canonical.key_id, "created": canonical.created, "nonce": canonical.nonce}


def _verify_with_library(method: str, url: str, headers: Mapping[str, str], body: bytes,
                         resolve_public_key: Callable[[str], Ed25519PublicKey | None]) -> Mapping[str, object]:
    """Any spelling RFC 9421 allows, parsed and checked by the library; the signature's parameters."""
    key_resolver = _PublicKeyLookup(resolve_public_key)
    verifier = _SignedTimeVerifier(signature_algorithm=algorithms.ED25519, key_resolver=key_resolver)
    try:
        results = verifier.verify(
            _Request(method=method, url=str(url), headers=headers),
            max_age=None,
            expect_tag=SIGNATURE_TAG,
        )
    except InvalidSignature as exc:
        if key_resolver.lookup_error is not None:
            raise key_resolver.lookup_error from None
        if key_resolver.unknown_key_id is not None:
            raise SignatureError(f"unknown key id {key_resolver.unknown_key_id!r}") from None
        if isinstance(exc.__cause__, InvalidCryptographicSignature):
            raise SignatureError("signature does not verify with the registered key for this key id") from None
        raise SignatureError(f"invalid signature: {exc}") from None
    except HTTPMessageSignaturesException as exc:
        raise SignatureError(f"invalid signature: {exc}") from None
    if len(results) != 1:
        raise SignatureError(f"expected exactly one signature tagged {SIGNATURE_TAG!r}, found {len(results)}")
    result = results[0]

    # Everything below reads values the signature has authenticated.
    covered = {name.strip('"') for name in result.covered_components} - {"@signature-params"}
    not_covered = [component for component in COVERED_COMPONENTS if component not in covered]
    if not_covered:
        raise SignatureError(f"signature does not cover required component(s): {', '.join(not_covered)}")
    try:
        # Recomputes the body's digest and compares in constant time.
        ContentDigest.verify(result.covered_components['"content-digest"'], body)
    except InvalidSignature as exc:
        raise SignatureError(f"body does not match the signed Content-Digest: {exc}") from None
    return result.parameters


def _fresh(params: Mapping[str, object], *, max_age_seconds: int, now: float | None) -> VerifiedSignature:
    """The authenticated parameters, once they carry a nonce and a time that is neither too far
    ahead nor too old."""
    nonce = params.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise SignatureError("signature has no nonce, so replay cannot be detected")
    created = params.get("created")
    if not isinstance(created, int):
        raise SignatureError("signature has no created timestamp")
    current = time.time() if now is None else now
    if created > current + MAX_CLOCK_SKEW_SECONDS:
        raise SignatureError(
            f"signature created {created - current:.0f}s in the future, beyond the {MAX_CLOCK_SKEW_SECONDS}s clock skew"
        )
    if current - created > max_age_seconds:
        raise SignatureError(f"signature is {current - created:.0f}s old, older than the {max_age_seconds}s limit")
    expires = params.get("expires")
    if isinstance(expires, int) and expires < current:
        raise SignatureError("signature has expired")
    return VerifiedSignature(key_id=str(params["keyid"]), created=created, nonce=nonce)


@dataclass
class _Request:
    """The request view the library reads: an uppercase method, an absolute URL and headers."""

    method: str
    url: str
    headers: Mapping[str, str]


class _SigningKey(HTTPSignatureKeyResolver):
    def __init__(self, key_id: str, private_key: Ed25519PrivateKey) -> None:
        self._key_id = key_id
        self._private_key = private_key

    def __repr__(self) -> str:
        return f"_SigningKey(key_id={self._key_id!r})"

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        if key_id != self._key_id:
            raise KeyError(key_id)
        return self._private_key


class _PublicKeyLookup(HTTPSignatureKeyResolver):
    """Records why a lookup failed, because the library folds every failure into one exception."""

    def __init__(self, resolve_public_key: Callable[[str], Ed25519PublicKey | None]) -> None:
        self._resolve_public_key = resolve_public_key
        self.unknown_key_id: str | None = None
        self.lookup_error: Exception | None = None

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        try:
            key = self._resolve_public_key(key_id)
        except Exception as exc:
            self.lookup_error = exc
            raise
        if key is None:
            self.unknown_key_id = key_id
        return key


class _SignedTimeVerifier(HTTPMessageVerifier):
    """Defers freshness checks to verify_request, which applies them to authenticated values
    with an injectable clock and our own skew, instead of the library's wall clock and 5 s."""

    def validate_created_and_expires(self, sig_input, max_age=None):  # type: ignore[no-untyped-def]
        return None
