"""The agent's calls to the server's volume registry: register a LUKS2 volume it formatted or
bound, and escrow the volume's recovery passphrase so that only keysvc can read it.

Both are signed by the device key (RFC 9421) like every agent route. The passphrase is sealed
here with HPKE to a single-use escrow key keysvc issues for this volume, so the gateway only
ever forwards ciphertext; keysvc opens it and keeps it wrapped under the tenant's KEK.
"""

from __future__ import annotations

import os
from typing import Any

from agent.client import AgentClient, ProtocolError
from shared.crypto import escrow

VOLUMES_PATH = "/v1/agent/volumes"


def _volume_path(volume_id: str, tail: str) -> str:
    if not volume_id or "/" in volume_id or "?" in volume_id:
        raise ValueError("volume_id must be a non-empty id without '/' or '?'")
    return f"{VOLUMES_PATH}/{volume_id}/{tail}"


async def register_volume(client: AgentClient, *, key_id: str, key_version: int, luks_uuid: str, device: str,
                          volume_id: str | None = None) -> dict[str, Any]:
    """Register (or re-bind) a volume on this device; the server's record, with its "volume_id".
    The server keeps the device's absolute path: `volume format data.img` names the same file anywhere."""
    body: dict[str, Any] = {"key_id": key_id, "key_version": key_version, "luks_uuid": luks_uuid,
                            "device": os.path.abspath(device)}  # noqa: ASYNC240 (getcwd only, no file I/O)
    if volume_id is not None:
        body["volume_id"] = volume_id
    record = await client.post_signed(VOLUMES_PATH, body, expect=201)
    if not isinstance(record.get("volume_id"), str):
        raise ProtocolError(201, "malformed gateway response", "volume_id must be a string")
    return record


async def escrow_recovery(client: AgentClient, *, volume_id: str, passphrase: bytes) -> None:
    """Escrow `passphrase` (the volume's recovery key slot) sealed to keysvc; never sent in clear."""
    if not passphrase or len(passphrase) > escrow.MAX_PASSPHRASE_BYTES:
        raise ValueError(f"passphrase must be 1 to {escrow.MAX_PASSPHRASE_BYTES} bytes")
    identity = client.identity
    if identity is None:
        raise ValueError("this client has no identity: enroll first")
    params = await client.post_signed(_volume_path(volume_id, "escrow-key"), {}, expect=201)
    token, public_key = params.get("escrow_token"), params.get("public_key")
    if not isinstance(token, str) or not isinstance(public_key, str):
        raise ProtocolError(201, "malformed gateway response", "escrow_token and public_key must be strings")
    # The info is computed here from what this agent knows, not taken from the answer.
    info = escrow.escrow_info(tenant_id=identity.tenant_id, volume_id=volume_id, escrow_token=token)
    sealed = escrow.seal_b64(passphrase, public_key, info=info)
    await client.post_signed(_volume_path(volume_id, "recovery"),
                             {"escrow_token": token, "sealed_passphrase": sealed}, expect=201)
