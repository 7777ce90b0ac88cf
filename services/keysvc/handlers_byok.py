"""keysvc's bring-your-own-key import (single-use import keys) and wrapped export of exportable keys."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from shared import commands, events, rpc
from shared.commands_custody import ExportedKey, ExportKeyCall, ImportKey, ImportParams, ImportParamsQuery
from shared.crypto import byok
from shared.crypto.envelope import UnwrapError, aad_for, unwrap, wrap
from shared.outbox import Outbox
from shared.store import DuplicateKeyError

from . import keys as domain
from .cache import KeyCache
from .clock import now as _now
from .handlers_common import event_fields, existing, sealed, tenant_settings, unprocessable
from .hierarchy import KeyHierarchy, Sealed
from .key_docs import public_view
from .store import KeyStore

IMPORT_TTL = timedelta(hours=24)
EXPORT_ALGORITHM = byok.RSA_OAEP
_SPENT = "unknown, used or expired import_token"


def _import_aad(tenant_id: str, token: str) -> bytes:
    return aad_for("import-key", tenant_id, token)


async def import_params(request: rpc.RpcRequest, query: ImportParamsQuery, *, store: KeyStore,
                        hierarchy: KeyHierarchy) -> ImportParams:
    """A fresh single-use import key (RSA-OAEP-3072 or X25519 for HPKE), its token and the key id it
    will create, valid for 24 hours."""
    tenant_id = request.tenant_id
    try:
        _, kek = await hierarchy.current_kek(tenant_id)
    except Sealed:
        raise sealed() from None
    private = byok.new_import_key(query.wrapping_algorithm)
    public = byok.public_params(query.wrapping_algorithm, private)
    token, key_id = events.new_id("imp_"), events.new_id("key_")
    expires_at = _now() + IMPORT_TTL
    # SECURITY: the import private key is stored only wrapped under the tenant KEK.
    await store.insert_import_key(tenant_id, {
        "import_token": token, "key_id": key_id, "wrapping_algorithm": query.wrapping_algorithm,
        "expires_at": expires_at, "wrapped": wrap(kek, private, aad=_import_aad(tenant_id, token)),
    })
    del private
    out: dict[str, Any] = {"import_token": token, "tenant_id": tenant_id, "key_id": key_id, **public,
                           "expires_at": expires_at.isoformat()}
    if query.wrapping_algorithm == byok.X25519_HPKE:
        out["hpke_info"] = base64.b64encode(byok.import_info(tenant_id=tenant_id, key_id=key_id, import_token=token)).decode()
    return ImportParams.model_validate(out)


async def _open_import_key(store: KeyStore, hierarchy: KeyHierarchy, tenant_id: str, doc: dict[str, Any],
                           token: str) -> bytes:
    """The import private key, under whichever KEK version wrapped it (an older one after a KEK rotation)."""
    for version in await store.kek_versions(tenant_id):
        try:
            return unwrap(await hierarchy.kek(tenant_id, version), bytes(doc["wrapped"]), aad=_import_aad(tenant_id, token))
        except UnwrapError:
            continue  # wrapped under another KEK version
    raise unprocessable("the import key is no longer available; request new parameters", "import_token")


async def import_key(
    request: rpc.RpcRequest, cmd: ImportKey, *, store: KeyStore, hierarchy: KeyHierarchy, cache: KeyCache, outbox: Outbox
) -> commands.KeyView:
    """Bring your own key: open with the single-use import key, wrap under the tenant KEK."""
    tenant_id = request.tenant_id
    policy = await tenant_settings(store, tenant_id)
    try:
        bits = domain.check_algorithm(cmd.algorithm, min_bits=policy.min_key_bits)
    except domain.KeyPolicyError as exc:
        raise unprocessable(exc, "algorithm") from None
    doc = await store.find_import_key(tenant_id, cmd.import_token)
    if doc is None or doc["expires_at"] <= _now():
        raise unprocessable(_SPENT, "import_token")
    try:
        await hierarchy.current_kek(tenant_id)
    except Sealed:
        raise sealed() from None
    private = await _open_import_key(store, hierarchy, tenant_id, doc, cmd.import_token)
    algorithm = doc.get("wrapping_algorithm", byok.RSA_OAEP)
    key_id = doc.get("key_id") or events.new_id("key_")
    info = byok.import_info(tenant_id=tenant_id, key_id=key_id, import_token=cmd.import_token)
    try:
        material = byok.open_material(algorithm, private, base64.b64decode(cmd.wrapped_key_material), info=info)
    except byok.ImportWrapError as exc:
        raise unprocessable(exc, "wrapped_key_material") from None
    finally:
        del private
    if len(material) * 8 != bits:
        raise unprocessable(f"{cmd.algorithm} needs {bits // 8} bytes of key material; got {len(material)}",
                            "wrapped_key_material")
    # Single use: the import key is consumed whatever happens next.
    if not await store.consume_import_key(tenant_id, cmd.import_token):
        raise unprocessable(_SPENT, "import_token")
    wrapped, kek_version = await hierarchy.wrap_data_key(tenant_id, key_id, 1, material)
    del material
    key = domain.new_key(
        tenant_id=tenant_id, key_id=key_id, name=cmd.name, algorithm=cmd.algorithm, wrapped=wrapped,
        kek_version=kek_version, now=_now(), volume=cmd.volume, exportable=cmd.exportable,
        initial_state=domain.KeyState.ACTIVE if cmd.activate else domain.KeyState.PRE_ACTIVATION,
    )
    event = events.KeyImported(**event_fields(request), key_id=key_id, name=cmd.name, algorithm=key.algorithm,
                               wrapping_algorithm=algorithm)
    try:
        await store.insert_new_key(key, event)
    except DuplicateKeyError:
        raise rpc.ProblemError(409, "Conflict", f"a key named {cmd.name!r} exists", "name") from None
    cache.put(key)
    await outbox.publish(store.outbox_of("keys"), tenant_id, event)
    return commands.KeyView.model_validate(public_view(key))


def _recipient(public_key_b64: str) -> tuple[rsa.RSAPublicKey, bytes]:
    der = base64.b64decode(public_key_b64)
    try:
        recipient = serialization.load_der_public_key(der)
    except ValueError:
        raise unprocessable("public_key is not a DER SubjectPublicKeyInfo", "public_key") from None
    if not isinstance(recipient, rsa.RSAPublicKey) or not 2048 <= recipient.key_size <= 4096:
        raise unprocessable("public_key must be an RSA key of 2048 to 4096 bits", "public_key")
    return recipient, der


async def export_key(
    request: rpc.RpcRequest, call: ExportKeyCall, *, store: KeyStore, hierarchy: KeyHierarchy, cache: KeyCache,
    bus_publish: Any,
) -> ExportedKey:
    """Export a key version wrapped to the caller's RSA public key; only for keys created exportable."""
    cmd = call.export
    key = await existing(cache, request.tenant_id, call.key_id)
    ok, why = domain.exportable_now(key, await tenant_settings(store, request.tenant_id))
    if not ok:
        raise rpc.ProblemError(409, "Conflict", why, "key_id")
    recipient, der = _recipient(cmd.public_key)
    try:
        version = domain.version_for_decrypt(key, cmd.key_version or key.latest_version)
    except domain.VersionError as exc:
        raise unprocessable(exc, "key_version") from None
    assert version.wrapped is not None
    data_key = await hierarchy.open_data_key(request.tenant_id, key.key_id, version.version, version.wrapped, version.kek_version)
    wrapped = recipient.encrypt(data_key, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    del data_key
    await bus_publish(events.KeyExported(
        **event_fields(request), key_id=key.key_id, key_version=version.version, wrapping_algorithm=EXPORT_ALGORITHM,
        recipient_fingerprint=hashlib.sha256(der).hexdigest(),
    ))
    return ExportedKey(key_id=key.key_id, key_version=version.version, algorithm=key.algorithm,
                       wrapping_algorithm=EXPORT_ALGORITHM, wrapped_key_material=base64.b64encode(wrapped).decode())
