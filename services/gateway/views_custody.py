"""Gateway views of the key-custody area: each validates its body and forwards it to keysvc.

Root-of-trust routes (init, unseal, re-key) belong to the provider's root custodians, not to
tenants nor to provider admins. Shares pass through here only sealed between a custodian's CLI and
keysvc (shared/crypto/shares.py): a plaintext share is refused, so none reaches the bus or a log.
"""

from __future__ import annotations

from aiohttp import web

from shared import commands_custody as cc
from shared.rpc import ProblemError

from .accounts.common import account_store
from .roles import ROOT_CUSTODIAN
from .state import PRINCIPAL, _call, _gw, _json, _query, body_as, json_object


def _key_id(request: web.Request) -> str:
    return request.match_info["key_id"]


async def _optional(request: web.Request, model):
    return await body_as(request, model) if request.can_read_body else model()


# --- tenant key policy ---------------------------------------------------------------------


async def get_settings(request: web.Request) -> web.Response:
    return _json(await _call(request, "keysvc", "get_custody_settings"))


async def put_settings(request: web.Request) -> web.Response:
    body = await body_as(request, cc.CustodySettingsBody)
    return _json(await _call(request, "keysvc", "put_custody_settings", body.model_dump()))


async def retire(request: web.Request, key_id: str, body: cc.SetMinDecryptionVersion) -> dict:
    """Versions below the body's minimum no longer decrypt (API and console)."""
    return await _call(request, "keysvc", "set_min_decryption_version", {"key_id": key_id, "change": body.model_dump()})


async def set_min_decryption_version(request: web.Request) -> web.Response:
    return _json(await retire(request, _key_id(request), await body_as(request, cc.SetMinDecryptionVersion)))


# --- destruction ---------------------------------------------------------------------------
# Each action is one function the API view and the console share; keysvc decides who may act
# (the second custodian, the waiting period, the dependency check).


async def dependency_report(request: web.Request, key_id: str) -> dict:
    return await _call(request, "keysvc", "get_dependencies", {"key_id": key_id})


async def destruction(request: web.Request, key_id: str) -> dict:
    return await _call(request, "keysvc", "get_destruction", {"key_id": key_id})


async def schedule(request: web.Request, key_id: str, body: cc.ScheduleDestruction) -> dict:
    return await _call(request, "keysvc", "schedule_destruction", {"key_id": key_id, "schedule": body.model_dump()})


async def approve(request: web.Request, key_id: str, body: cc.ApproveDestruction) -> dict:
    return await _call(request, "keysvc", "approve_destruction", {"key_id": key_id, "approve": body.model_dump()})


async def cancel(request: web.Request, key_id: str, body: cc.CancelDestruction) -> dict:
    return await _call(request, "keysvc", "cancel_destruction", {"key_id": key_id, "cancel": body.model_dump()})


async def dependencies(request: web.Request) -> web.Response:
    return _json(await dependency_report(request, _key_id(request)))


async def schedule_destruction(request: web.Request) -> web.Response:
    return _json(await schedule(request, _key_id(request), await body_as(request, cc.ScheduleDestruction)), 202)


async def get_destruction(request: web.Request) -> web.Response:
    return _json(await destruction(request, _key_id(request)))


async def approve_destruction(request: web.Request) -> web.Response:
    return _json(await approve(request, _key_id(request), await _optional(request, cc.ApproveDestruction)))


async def cancel_destruction(request: web.Request) -> web.Response:
    return _json(await cancel(request, _key_id(request), await body_as(request, cc.CancelDestruction)))


async def destruction_certificate(request: web.Request) -> web.Response:
    return _json(await _call(request, "keysvc", "get_destruction_certificate", {"key_id": _key_id(request)}))


async def signing_key(request: web.Request) -> web.Response:
    return _json(await _call(request, "keysvc", "signing_key"))


# --- tenant KEK ----------------------------------------------------------------------------


async def kek_status(request: web.Request) -> web.Response:
    return _json(await _call(request, "keysvc", "kek_status"))


async def rotate_kek(request: web.Request) -> web.Response:
    return _json(await _call(request, "keysvc", "rotate_kek"), 202)


# --- bring your own key, export --------------------------------------------------------------


async def import_params(request: web.Request) -> web.Response:
    query = _query(request, cc.ImportParamsQuery)
    return _json(await _call(request, "keysvc", "import_params", query.model_dump()))


async def import_key(request: web.Request) -> web.Response:
    body = await body_as(request, cc.ImportKey)
    return _json(await _call(request, "keysvc", "import_key", body.model_dump()), 201)


async def export_key(request: web.Request) -> web.Response:
    body = await body_as(request, cc.ExportKey)
    return _json(await _call(request, "keysvc", "export_key", {"key_id": _key_id(request), "export": body.model_dump()}))


# --- root of trust (provider root custodians) ------------------------------------------------


async def custody_status(request: web.Request) -> web.Response:
    return _json(await _call(request, "keysvc", "custody_status"))


async def _root_custodians(request: web.Request) -> list[str]:
    """Who holds root_custodian in the provider tenant right now (active, grant confirmed): keysvc
    seals shares only to their enrolled keys."""
    users = await account_store(_gw(request)).active_users(request[PRINCIPAL].tenant_id)
    return [u["user_id"] for u in users if ROOT_CUSTODIAN.name in u.get("roles", ())]


async def init_custody(request: web.Request) -> web.Response:
    body = await body_as(request, cc.InitCustody)
    params = {**body.model_dump(), "eligible": await _root_custodians(request)}
    return _json(await _call(request, "keysvc", "init_custody", params), 201)


async def list_custodians(request: web.Request) -> web.Response:
    return _json(await _call(request, "keysvc", "list_custodian_keys"))


async def enrol_custodian_key(request: web.Request) -> web.Response:
    body = await body_as(request, cc.EnrolCustodianKey)
    return _json(await _call(request, "keysvc", "enrol_custodian_key", body.model_dump()))


async def my_share(request: web.Request) -> web.Response:
    return _json(await _call(request, "keysvc", "my_share"))


async def transport_key(request: web.Request) -> web.Response:
    body = await body_as(request, cc.TransportKeyRequest)
    return _json(await _call(request, "keysvc", "transport_key", {"purpose": body.purpose}))


async def _sealed_share(request: web.Request) -> cc.SealedShare:
    data = await json_object(request)
    if "share" in data:
        # SECURITY: a share in the clear would cross the bus; refuse it without echoing it.
        raise ProblemError(400, "Bad Request", "share: plaintext shares are refused; seal the share to keysvc's "
                           "transport key and send sealed_share and round_id (`strongroom operator unseal` does)", "share")
    return await body_as(request, cc.SealedShare)


async def unseal(request: web.Request) -> web.Response:
    body = await _sealed_share(request)
    return _json(await _call(request, "keysvc", "unseal", body.model_dump()))


async def rekey_root(request: web.Request) -> web.Response:
    body = await body_as(request, cc.RekeyRoot)
    params = {**body.model_dump(), "eligible": await _root_custodians(request)}
    return _json(await _call(request, "keysvc", "rekey_root", params))


async def verify_rekey(request: web.Request) -> web.Response:
    body = await _sealed_share(request)
    return _json(await _call(request, "keysvc", "verify_rekey", body.model_dump()))


async def cancel_rekey(request: web.Request) -> web.Response:
    return _json(await _call(request, "keysvc", "cancel_rekey"))
