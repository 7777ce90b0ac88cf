"""The agent SDK: enrol a VM with the gateway and request data keys under policy.

Every key request is signed with the device key (RFC 9421) and carries a fresh X25519 public
key; the gateway returns the data key sealed to it with HPKE, bound to this tenant, request, key
and version. Gateway refusals arrive as application/problem+json and surface as `AgentError`
subclasses.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.cloud import Cloud
from agent.errors import (
    ENROLL_ERRORS,
    KEY_REQUEST_ERRORS,
    RETRY_AFTER_KEY,
    AgentError,
    ApprovalPending,
    EnrollmentRejected,
    EvidenceUnavailable,
    KeyDenied,
    KeyNotActive,
    KeyNotFound,
    NotAuthenticated,
    ProtocolError,
    ServiceUnavailable,
    TooManyRequests,
    error_from,
    retry_after_seconds,
)
from agent.evidence import CloudEvidence, EvidenceSource, EvidenceUnavailableError
from agent.identity import AgentIdentity, IdentityError, generate_device_key, is_enrolled, public_key_b64
from agent.retry import DEFAULT_RETRIES, MAX_RETRY_WAIT_SECONDS, RETRY_STATUSES, retry_delay
from shared.crypto.httpsig import sign_request
from shared.crypto.release import SUITE_NAME, ReleaseError, open_sealed, release_info

# Callers catch the gateway's refusals from here, with the client that raises them.
__all__ = [
    "AgentClient", "AgentError", "ApprovalPending", "EnrollmentRejected", "EvidenceUnavailable", "KeyDenied",
    "KeyNotActive", "KeyNotFound", "NotAuthenticated", "ProtocolError", "ReleasedKey", "ServiceUnavailable",
    "TooManyRequests",
]

ENROLL_PATH = "/v1/agent/enroll"
KEY_REQUESTS_PATH = "/v1/agent/key-requests"
HEARTBEAT_PATH = "/v1/agent/heartbeat"
CHALLENGES_PATH = "/v1/agent/challenges"
ENROLL_CHALLENGES_PATH = "/v1/agent/enroll/challenges"
MAX_LONG_POLL_SECONDS = 60.0
DEFAULT_TIMEOUT_SECONDS = 30.0
DATA_KEY_LENGTHS = (16, 24, 32)
_MAX_TEXT_DETAIL = 200
_ACCEPT = "application/json, application/problem+json"


@dataclass(frozen=True)
class ReleasedKey:
    """A data key released to this VM; the key bytes never appear in its repr."""

    key_id: str
    key_version: int
    algorithm: str
    request_id: str
    # Security invariant: hidden from repr and comparison so it cannot leak into logs or test output.
    key: bytes = field(repr=False, compare=False)


class AgentClient:
    """Talks to one gateway as one device. Use as ``async with AgentClient(identity) as client``.

    Pass `session` to reuse an aiohttp session (it is then not closed here); otherwise one is
    opened on entry with `timeout_seconds` as the total per-request timeout.

    With `cloud` set, enrolment, key requests and heartbeats carry this VM's identity evidence from
    the cloud's metadata service (at `metadata_url`, or the cloud's own address): GCP and Azure
    evidence answers a single-use challenge the client fetches first, bound to the device key.
    Or pass another `evidence` source (``agent/evidence.py``), e.g. ``TpmEvidence(Tpm(tcti))``.

    A key request the gateway refuses for now (503, 429) is tried again up to `retries` times, never
    sooner than its Retry-After and never after waiting more than `max_retry_wait_seconds`.
    """

    def __init__(
        self,
        identity: AgentIdentity | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        cloud: Cloud | None = None,
        metadata_url: str | None = None,
        evidence: EvidenceSource | None = None,
        retries: int = DEFAULT_RETRIES,
        max_retry_wait_seconds: float = MAX_RETRY_WAIT_SECONDS,
    ) -> None:
        self._retries, self._max_retry_wait = retries, max_retry_wait_seconds
        self._identity = identity
        self._evidence_source = evidence or (CloudEvidence(cloud, metadata_url) if cloud is not None else None)
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds, connect=min(10.0, timeout_seconds))

    @classmethod
    def from_state_dir(cls, state_dir: Path | str, **kwargs: Any) -> AgentClient:
        return cls(AgentIdentity.load(state_dir), **kwargs)

    @property
    def identity(self) -> AgentIdentity | None:
        return self._identity

    async def __aenter__(self) -> AgentClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def enroll(
        self, gateway_url: str, enrollment_token: str, name: str, state_dir: Path | str
    ) -> AgentIdentity:
        """Register a new device key with the gateway and save the identity in `state_dir`."""
        if not gateway_url.startswith(("https://", "http://")):
            raise ValueError(f"gateway URL must start with https:// or http://, got {gateway_url!r}")
        state = Path(state_dir)
        # Checked before the token is spent, since a used token cannot be retried.
        if is_enrolled(state):
            raise IdentityError(f"{state} already holds an agent identity; remove it first to enroll this VM again")
        private_key = generate_device_key()

        async def challenge() -> str:
            url = _join(gateway_url, ENROLL_CHALLENGES_PATH)
            return await self._challenge(url, _json_bytes({"enrollment_token": enrollment_token}), {})

        proof = await self._evidence(base64.b64decode(public_key_b64(private_key)), challenge, enrolling=True)
        body = _json_bytes(
            {"enrollment_token": enrollment_token, "name": name, "public_key": public_key_b64(private_key), **proof}
        )
        status, document = await self._post(_join(gateway_url, ENROLL_PATH), body, {})
        if status != 201:
            raise error_from(status, document, ENROLL_ERRORS)
        tenant_id, device_id, key_id = (_string(document, name) for name in ("tenant_id", "device_id", "key_id"))
        identity = AgentIdentity(
            gateway_url=gateway_url.rstrip("/"),
            tenant_id=tenant_id,
            device_id=device_id,
            key_id=key_id,
            private_key=private_key,
        )
        await asyncio.to_thread(identity.save, state)
        self._identity = identity
        return identity

    async def request_key(
        self, key_id: str, *, facts: Mapping[str, Any], key_version: int | None = None,
        wait_for_approval_seconds: float = 0.0, volume: Mapping[str, str] | None = None,
    ) -> ReleasedKey:
        """Ask for a data key under policy, presenting `facts`; the latest version unless one is named.
        `volume` ({"volume_id", "luks_uuid"}) names the registered volume the key is to unlock.

        If policy requires an approval, wait up to `wait_for_approval_seconds` for operators (long-polling
        the request with the same one-time key), else raise `ApprovalPending` at once.

        A 503 or 429 (the gateway shedding load, a backing service away) is retried up to `retries`
        times, waiting as `agent/retry.py` says; the last refusal is raised."""
        identity = self._require_identity()
        attempt = 0
        while True:
            ephemeral, status, document = await self._send_key_request(identity, key_id, facts, key_version, volume)
            attempt += 1
            delay = retry_delay(attempt, document.get(RETRY_AFTER_KEY), cap=self._max_retry_wait) \
                if status in RETRY_STATUSES and attempt <= self._retries else None
            if delay is None:
                break
            await asyncio.sleep(delay)
        if status == 202:
            request_id = _string(document, "request_id")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_for_approval_seconds
            while status == 202 and (left := deadline - loop.time()) > 0:
                status, document = await self._poll(identity, request_id, min(left, MAX_LONG_POLL_SECONDS))
            if status == 202:
                raise ApprovalPending(request_id, problem=document)
        if status != 200:
            raise error_from(status, document, KEY_REQUEST_ERRORS)
        return _open_release(document, identity, ephemeral, requested_key_id=key_id, requested_version=key_version)

    async def _send_key_request(
        self, identity: AgentIdentity, key_id: str, facts: Mapping[str, Any], key_version: int | None,
        volume: Mapping[str, str] | None,
    ) -> tuple[X25519PrivateKey, int, dict[str, Any]]:
        """One signed attempt, all of it fresh (one-time key, evidence and its challenge, signature)."""
        # A fresh X25519 key per request: a sealed key captured in transit opens for nobody else, ever.
        ephemeral = X25519PrivateKey.generate()
        ephemeral_public = ephemeral.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        url = _join(identity.gateway_url, KEY_REQUESTS_PATH)
        body = _json_bytes(
            {
                "key_id": key_id,
                "key_version": key_version,
                "facts": dict(facts),
                "ephemeral_public_key": base64.b64encode(ephemeral_public).decode("ascii"),
                **await self._device_evidence(identity, ephemeral_public),
                **({"volume": dict(volume)} if volume is not None else {}),
            }
        )
        headers = {"Content-Type": "application/json", "Accept": _ACCEPT}
        headers.update(sign_request(method="POST", url=url, headers=headers, body=body,
                                    key_id=identity.key_id, private_key=identity.private_key))
        status, document = await self._post(url, body, headers)
        return ephemeral, status, document

    async def heartbeat(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        """Report fresh facts (signed); the answer says whether this device is active or quarantined."""
        identity = self._require_identity()
        return await self.post_signed(HEARTBEAT_PATH, {"facts": dict(facts), **await self._device_evidence(identity)})

    async def _poll(self, identity: AgentIdentity, request_id: str, wait: float) -> tuple[int, dict[str, Any]]:
        url = _join(identity.gateway_url, f"{KEY_REQUESTS_PATH}/{request_id}?wait={max(wait, 1.0):.0f}")
        if self._session is None:
            raise RuntimeError("AgentClient must be used as an async context manager")
        headers = {"Accept": _ACCEPT, **self._signed("GET", url, b"", identity)}
        try:
            async with self._session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=wait + 30)) as response:
                return response.status, _parse_body(response.status, await response.text(errors="replace"))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ServiceUnavailable(None, "gateway unreachable", f"{url}: {exc}") from None

    async def _device_evidence(self, identity: AgentIdentity, one_time_key: bytes | None = None) -> dict[str, Any]:
        async def challenge() -> str:
            url = _join(identity.gateway_url, CHALLENGES_PATH)
            return await self._challenge(url, b"", self._signed("POST", url, b"", identity))

        raw = identity.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return await self._evidence(raw, challenge, one_time_key)

    async def _evidence(self, public_key: bytes, challenge: Callable[[], Awaitable[str]],
                        one_time_key: bytes | None = None, *, enrolling: bool = False) -> dict[str, Any]:
        """``evidence`` and the ``challenge`` it answers, for a request body; nothing without a source."""
        if self._evidence_source is None:
            return {}
        try:
            return await self._evidence_source.evidence(challenge, device_key=public_key, one_time_key=one_time_key,
                                                        enrolling=enrolling)
        except EvidenceUnavailableError as exc:
            raise EvidenceUnavailable(None, "no evidence to send", str(exc)) from None

    async def post_signed(self, path: str, document: Mapping[str, Any], *, expect: int = 200) -> dict[str, Any]:
        """A signed POST of `document` to `path` as this device; the answer, or the AgentError it maps to."""
        identity = self._require_identity()
        url, body = _join(identity.gateway_url, path), _json_bytes(dict(document))
        status, answer = await self._post(url, body, self._signed("POST", url, body, identity))
        if status != expect:
            raise error_from(status, answer, KEY_REQUEST_ERRORS)
        return answer

    async def _challenge(self, url: str, body: bytes, headers: Mapping[str, str]) -> str:
        status, document = await self._post(url, body, headers)
        if status != 201:
            raise error_from(status, document, KEY_REQUEST_ERRORS)
        return _string(document, "challenge")

    @staticmethod
    def _signed(method: str, url: str, body: bytes, identity: AgentIdentity) -> dict[str, str]:
        headers = {"Content-Type": "application/json"} if body else {}
        headers.update(sign_request(method=method, url=url, headers=headers, body=body,
                                    key_id=identity.key_id, private_key=identity.private_key))
        return headers

    def _require_identity(self) -> AgentIdentity:
        if self._identity is None:
            raise IdentityError("this client has no identity: enroll first or pass one to AgentClient")
        return self._identity

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """The answer's status and JSON body; a Retry-After header is kept in the body as RETRY_AFTER_KEY."""
        if self._session is None:
            raise RuntimeError("AgentClient must be used as an async context manager")
        send_headers = {"Content-Type": "application/json", "Accept": _ACCEPT, **headers}
        try:
            async with self._session.post(url, data=body, headers=send_headers, timeout=self._timeout) as response:
                text = await response.text(errors="replace")
                document = _parse_body(response.status, text)
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                if retry_after is not None and response.status >= 400:
                    document[RETRY_AFTER_KEY] = retry_after
                return response.status, document
        except TimeoutError:
            raise ServiceUnavailable(None, "gateway timed out", f"no answer from {url} in time") from None
        except aiohttp.ClientError as exc:
            raise ServiceUnavailable(None, "gateway unreachable", f"{url}: {exc}") from None


def _open_release(
    document: Mapping[str, Any],
    identity: AgentIdentity,
    ephemeral: X25519PrivateKey,
    *,
    requested_key_id: str,
    requested_version: int | None,
) -> ReleasedKey:
    request_id = _string(document, "request_id")
    key_id = _string(document, "key_id")
    key_version = document.get("key_version")
    algorithm = _string(document, "algorithm")
    if not isinstance(key_version, int) or isinstance(key_version, bool) or key_version < 1:
        raise ProtocolError(200, "malformed key release", "key_version must be an integer >= 1")
    if key_id != requested_key_id or (requested_version is not None and key_version != requested_version):
        raise ProtocolError(
            200,
            "wrong key released",
            f"asked for {requested_key_id} version {requested_version or 'latest'}, got {key_id} version {key_version}",
        )
    suite = document.get("hpke_suite", SUITE_NAME)
    if suite != SUITE_NAME:
        raise ProtocolError(200, "unsupported HPKE suite", f"expected {SUITE_NAME}, got {suite!r}")
    try:
        sealed = base64.b64decode(_string(document, "sealed_key"), validate=True)
    except binascii.Error:
        raise ProtocolError(200, "malformed key release", "sealed_key is not base64") from None
    # The info binds what the gateway claims (tenant, request, key, version): if any of it was
    # altered, or the key was sealed for another request, it does not open.
    info = release_info(
        tenant_id=identity.tenant_id, request_id=request_id, key_id=key_id, key_version=key_version
    )
    try:
        data_key = open_sealed(sealed, ephemeral, info)
    except ReleaseError as exc:
        raise ProtocolError(200, "sealed key does not open", str(exc)) from None
    if len(data_key) not in DATA_KEY_LENGTHS:
        raise ProtocolError(200, "malformed key release", "data key has an unsupported length")
    return ReleasedKey(
        key_id=key_id, key_version=key_version, algorithm=algorithm, request_id=request_id, key=data_key
    )


def _parse_body(status: int, text: str) -> dict[str, Any]:
    try:
        document = json.loads(text) if text else {}
    except ValueError:
        document = None
    if isinstance(document, dict):
        return document
    if 200 <= status < 300:
        raise ProtocolError(status, "malformed gateway response", "expected a JSON object")
    # A proxy's HTML error page, for instance: keep a short excerpt for the operator.
    return {"title": f"HTTP {status}", "detail": " ".join(text.split())[:_MAX_TEXT_DETAIL]}


def _string(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise ProtocolError(None, "malformed gateway response", f"{name} must be a non-empty string")
    return value


def _json_bytes(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _join(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path
