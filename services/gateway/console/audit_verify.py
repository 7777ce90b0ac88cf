"""The audit chain checked for the console as `strongroom audit verify` checks it online: the
signing keys, the reported head and every checkpoint are read before the records (so the records
must reach at least as far), then `shared.audit_chain.verify_audit` (the same pure check) runs
over them. Checkpoints are checked against the keys auditsvc offers (trust on first use, as the CLI
without --trusted-key); a tenant with more records than `MAX_RECORDS` is left to the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from shared.audit_chain import ChainHead, Reach, VerifyResult, verify_audit
from shared.signatures import load_public_pem

from ..state import _call

MAX_RECORDS = 20_000
PAGE = 1000


@dataclass(frozen=True)
class ChainCheck:
    result: VerifyResult | None  # None: too many records to check here
    checkpoints: int
    records: int


async def _all(request: web.Request, method: str, limit: int) -> list[dict[str, Any]]:
    """Every item of a cursor-paged auditsvc listing, up to `limit` items (one more tells it was cut)."""
    items: list[dict[str, Any]] = []
    after = 0
    while len(items) <= limit:
        page = await _call(request, "auditsvc", method, {"after": str(after), "limit": str(PAGE)})
        items += page["items"]
        nxt = page.get("next")
        if nxt is None or not isinstance(nxt, int) or nxt <= after:
            break
        after = nxt
    return items


async def check_chain(request: web.Request) -> ChainCheck:
    offered = (await _call(request, "auditsvc", "signing_keys")).get("keys") or []
    keys = []
    for item in offered:
        try:
            keys.append(load_public_pem(str(item.get("public_key_pem", ""))))
        except ValueError:
            continue
    status = await _call(request, "auditsvc", "status")
    reported = status.get("last_seq")
    reach = Reach(reported_seq=reported if isinstance(reported, int) else None)
    checkpoints = await _all(request, "list_checkpoints", MAX_RECORDS) if offered else []
    records = await _all(request, "list_records", MAX_RECORDS)
    if len(records) > MAX_RECORDS:
        return ChainCheck(None, len(checkpoints), len(records))
    base = status.get("archived_seq")
    tenant = str(status["tenant_id"])
    start = ChainHead(tenant, int(base), str(status.get("archived_hash"))) if base else ChainHead.genesis(tenant)
    result = verify_audit(records, start=start, checkpoints=checkpoints, trusted_keys=keys, reach=reach)
    return ChainCheck(result, len(checkpoints), len(records))
