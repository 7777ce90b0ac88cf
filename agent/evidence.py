"""What the agent sends to prove facts: its VM's cloud identity or a quote from its TPM.

A source's ``evidence(challenge, device_key=..., one_time_key=...)`` returns the fields to add to a
request body, ``{"evidence": ..., "challenge": ...}`` (or nothing); ``challenge()`` fetches a
single-use challenge from the gateway, called only when the evidence must answer one.

* `CloudEvidence`: the cloud's identity document or token (``agent/cloud.py``). GCP and Azure bind
  the challenge and the device key; AWS documents cannot (the gateway trusts their first use).
* `TpmEvidence`: a quote over `pcrs` with qualifying data SHA-256(challenge nonce ‖ one-time key),
  the request's ephemeral key (a heartbeat's: the device key). The TPM must have been registered
  first: `register_tpm(client, tpm)` runs MakeCredential/ActivateCredential with the gateway.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agent.cloud import Cloud, CloudMetadataError, fetch_evidence
from agent.tpm import Tpm, TpmError

if TYPE_CHECKING:
    from agent.client import AgentClient

Challenge = Callable[[], Awaitable[str]]
DEFAULT_PCRS = (0, 1, 2, 3, 4, 5, 6, 7)
TPM_ENROL_PATH = "/v1/agent/tpm/enrol"
TPM_ACTIVATE_PATH = "/v1/agent/tpm/activate"


class EvidenceUnavailableError(Exception):
    """No evidence could be had from the metadata service or the TPM; says which and why."""


class EvidenceSource(Protocol):
    async def evidence(self, challenge: Challenge, *, device_key: bytes, one_time_key: bytes | None,
                       enrolling: bool = False) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CloudEvidence:
    cloud: Cloud
    metadata_url: str | None = None

    async def evidence(self, challenge: Challenge, *, device_key: bytes, one_time_key: bytes | None,
                       enrolling: bool = False) -> dict[str, Any]:
        # An AWS identity document carries no nonce (the gateway trusts its first use instead).
        nonce = await challenge() if self.cloud != "aws" else ""
        try:
            found = await fetch_evidence(self.cloud, challenge=nonce, public_key=device_key, base_url=self.metadata_url)
        except CloudMetadataError as exc:
            raise EvidenceUnavailableError(str(exc)) from None
        return {"evidence": found, "challenge": nonce} if nonce else {"evidence": found}


@dataclass(frozen=True)
class TpmEvidence:
    tpm: Tpm
    pcrs: tuple[int, ...] = DEFAULT_PCRS

    async def evidence(self, challenge: Challenge, *, device_key: bytes, one_time_key: bytes | None,
                       enrolling: bool = False) -> dict[str, Any]:
        if enrolling:  # the TPM is registered once the device exists (register_tpm)
            return {}
        nonce = await challenge()
        server_nonce = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        try:
            quote = await asyncio.to_thread(self.tpm.quote_for_request, server_nonce, one_time_key or device_key,
                                            self.pcrs)
        except TpmError as exc:
            raise EvidenceUnavailableError(str(exc)) from None
        return {"evidence": {"kind": "tpm", **quote.to_json()}, "challenge": nonce}


async def register_tpm(client: AgentClient, tpm: Tpm) -> dict[str, Any]:
    """Register this device's TPM with the gateway: EK and AK, then the activated credential."""
    try:
        keys = await asyncio.to_thread(tpm.ensure_keys)
    except TpmError as exc:
        raise EvidenceUnavailableError(str(exc)) from None
    pending = await client.post_signed(TPM_ENROL_PATH, keys.to_json(), expect=201)
    try:
        secret = await asyncio.to_thread(tpm.activate, pending["credential"])
    except TpmError as exc:
        raise EvidenceUnavailableError(str(exc)) from None
    return await client.post_signed(TPM_ACTIVATE_PATH, {
        "activation_id": pending["activation_id"], "secret": base64.b64encode(secret).decode("ascii")})
