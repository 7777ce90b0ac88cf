"""The in-memory twin of the service-wide queries: root record and re-key, unseal round, peers, leases."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from shared.events import Event


def _copy(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    return copy.deepcopy(doc)


class MemoryRootQueries:
    """Mixed into MemoryKeyStore, whose dicts it shares."""

    keks: dict[tuple[str, int], dict[str, Any]]
    custody: dict[str, dict[str, Any]]
    peers: dict[str, dict[str, Any]]
    leases: dict[str, dict[str, Any]]
    staged: list[Event]

    # --- the root record ------------------------------------------------------------------

    async def root_record(self) -> dict[str, Any] | None:
        return _copy(self.custody.get("root"))

    async def insert_root_record(self, doc: dict[str, Any], event: Event) -> bool:
        if "root" in self.custody:
            return False
        self.custody["root"] = {"name": "root", **copy.deepcopy(doc)}
        self.staged.append(event)
        return True

    async def any_kek(self) -> bool:
        return bool(self.keks)

    async def ensure_root_record(self, fingerprint: str, now: datetime) -> None:
        self.custody.setdefault("root", {"name": "root", "fingerprint": fingerprint, "generation": 0, "created_at": now})

    def _rekey(self, new_fp: str, statuses: tuple[str, ...]) -> dict[str, Any] | None:
        rekey = (self.custody.get("root") or {}).get("rekey")
        return rekey if rekey is not None and rekey["new_fingerprint"] == new_fp and rekey["status"] in statuses else None

    async def begin_rekey(self, old_fp: str, rekey: dict[str, Any], request_id: str) -> bool:
        root = self.custody.get("root")
        if (root is None or root["fingerprint"] != old_fp or root.get("rekey") is not None
                or root.get("rekey_request_id") == request_id):
            return False
        root.update(rekey=copy.deepcopy(rekey), rekey_request_id=request_id)
        return True

    async def add_rekey_share(self, new_fp: str, held: int, sealed_share: bytes, by: str) -> bool:
        rekey = self._rekey(new_fp, ("copying",))
        if rekey is None or len(rekey["verify_shares"]) != held or by in rekey.get("verified_by", []):
            return False
        rekey["verify_shares"].append(sealed_share)
        rekey.setdefault("verified_by", []).append(by)
        return True

    # --- root custodians' keys and their sealed shares ---------------------------------------

    async def enrol_custodian_key(self, custodian_id: str, doc: dict[str, Any], event: Event) -> None:
        self.custody[f"custodian:{custodian_id}"] = {**copy.deepcopy(doc), "kind": "custodian_key",
                                                     "custodian_id": custodian_id}
        self.staged.append(event)

    async def custodian_keys(self) -> list[dict[str, Any]]:
        docs = [d for d in self.custody.values() if d.get("kind") == "custodian_key"]
        return copy.deepcopy(sorted(docs, key=lambda d: d["enrolled_at"]))

    async def put_deliveries(self, deliveries: list[dict[str, Any]]) -> None:
        for d in deliveries:
            self.custody[f"delivery:{d['purpose']}:{d['root_fingerprint']}:{d['custodian_id']}"] = {
                **copy.deepcopy(d), "kind": "delivery"}

    async def take_delivery(self, custodian_id: str, fingerprints: tuple[str, ...]) -> dict[str, Any] | None:
        mine = sorted((k for k, d in self.custody.items() if d.get("kind") == "delivery"
                       and d["custodian_id"] == custodian_id and d["root_fingerprint"] in fingerprints),
                      key=lambda k: self.custody[k]["created_at"])
        return self.custody.pop(mine[-1]) if mine else None

    async def switch_root(self, doc: dict[str, Any], now: datetime, event: Event) -> bool:
        rekey, root = doc["rekey"], self.custody.get("root")
        if root is None or root["fingerprint"] != rekey["previous_fingerprint"] or \
                self._rekey(rekey["new_fingerprint"], ("copying",)) is None:
            return False
        root.update(fingerprint=rekey["new_fingerprint"], previous_fingerprint=rekey["previous_fingerprint"],
                    threshold=rekey["threshold"], shares=rekey["shares"], generation=doc.get("generation", 0) + 1,
                    rekeyed_at=now)
        root["rekey"].update(status="switched", switched_at=now, verify_shares=[])
        self.staged.append(event)
        return True

    async def mark_rekey_rolling_back(self, new_fp: str, reason: str) -> bool:
        rekey = self._rekey(new_fp, ("copying", "rolling_back"))
        if rekey is None:
            return False
        rekey.update(status="rolling_back", rollback_reason=reason)
        return True

    async def clear_rekey(self, new_fp: str, status: str, event: Event | None) -> bool:
        if self._rekey(new_fp, (status,)) is None:
            return False
        self.custody["root"]["rekey"] = None
        rolled_back = status == "rolling_back"
        for key in [k for k, d in self.custody.items()
                    if d.get("kind") == "delivery" and (d["root_fingerprint"] == new_fp) is rolled_back]:
            del self.custody[key]
        if event is not None:
            self.staged.append(event)
        return True

    # --- KEKs under the roots -------------------------------------------------------------------

    def _all_keks(self) -> list[dict[str, Any]]:
        return sorted(self.keks.values(), key=lambda d: d["_id"])

    async def keks_without_copy(self, new_fp: str, *, limit: int) -> list[dict[str, Any]]:
        docs = [d for d in self._all_keks() if d.get("root_fp") != new_fp and d.get("next_fp") != new_fp]
        return copy.deepcopy(docs[:limit])

    async def keks_not_under(self, new_fp: str, *, limit: int) -> list[dict[str, Any]]:
        return copy.deepcopy([d for d in self._all_keks() if d.get("root_fp") != new_fp][:limit])

    async def any_kek_not_under(self, new_fp: str) -> bool:
        return any(d.get("root_fp") != new_fp for d in self.keks.values())

    def _kek_swap(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        held = self.keks.get((doc["tenant_id"], doc["kek_version"]))
        return held if held is not None and held["_id"] == doc["_id"] and held["wrapped"] == doc["wrapped"] else None

    async def add_kek_copy(self, doc: dict[str, Any], blob: bytes, new_fp: str) -> None:
        if (held := self._kek_swap(doc)) is not None:
            held.update(wrapped_next=blob, next_fp=new_fp)

    async def promote_kek(self, doc: dict[str, Any], blob: bytes, new_fp: str) -> None:
        if (held := self._kek_swap(doc)) is not None:
            held.update(wrapped=blob, root_fp=new_fp)
            held.pop("wrapped_next", None)
            held.pop("next_fp", None)

    async def drop_kek_copies(self, new_fp: str) -> None:
        for d in self.keks.values():
            if d.get("next_fp") == new_fp:
                d.pop("wrapped_next", None)
                d.pop("next_fp", None)

    # --- the unseal round -----------------------------------------------------------------------

    async def unseal_round(self) -> dict[str, Any] | None:
        return _copy(self.custody.get("unseal"))

    async def open_unseal_round(self, fresh: dict[str, Any], *, replacing: str | None) -> None:
        held = self.custody.get("unseal")
        if replacing is None and held is None:
            self.custody["unseal"] = {"name": "unseal", **copy.deepcopy(fresh)}
        elif replacing is not None and held is not None and held["round_id"] == replacing:
            held.update(copy.deepcopy(fresh))

    async def add_round_entry(self, round_id: str, position: int, entry: dict[str, Any]) -> bool:
        held = self.custody.get("unseal")
        if held is None or held["round_id"] != round_id or len(held["entries"]) != position:
            return False
        held["entries"].append(copy.deepcopy(entry))
        return True

    async def end_unseal_round(self) -> None:
        self.custody.pop("unseal", None)

    # --- peers and leases ---------------------------------------------------------------------

    async def register_peer(self, peer_id: str, fields: dict[str, Any]) -> None:
        self.peers.setdefault(peer_id, {"peer_id": peer_id}).update(copy.deepcopy(fields))

    async def withdraw_peer(self, peer_id: str) -> None:
        self.peers.pop(peer_id, None)

    async def live_peers(self, now: datetime) -> list[dict[str, Any]]:
        return copy.deepcopy([d for d in self.peers.values() if d["expires_at"] > now])

    async def find_peer(self, peer_id: str) -> dict[str, Any] | None:
        return _copy(self.peers.get(peer_id))

    async def hand_root_to(self, peer_id: str, sealed: bytes, fingerprint: str, signature: bytes) -> None:
        held = self.peers.get(peer_id)
        if held is not None and held.get("sealed"):
            held.update(handoff=sealed, handoff_fp=fingerprint, handoff_signature=signature)

    async def shred_handoff(self, peer_id: str) -> None:
        for field in ("handoff", "handoff_fp", "handoff_signature"):
            self.peers.get(peer_id, {}).pop(field, None)

    async def find_lease(self, name: str) -> dict[str, Any] | None:
        return _copy(self.leases.get(name))

    async def insert_lease(self, name: str, holder: str, expires_at: datetime) -> bool:
        if name in self.leases:
            return False
        self.leases[name] = {"name": name, "holder": holder, "expires_at": expires_at, "version": 1}
        return True

    async def claim_lease(self, name: str, version: int, holder: str, expires_at: datetime) -> bool:
        held = self.leases.get(name)
        if held is None or held["version"] != version:
            return False
        held.update(holder=holder, expires_at=expires_at, version=version + 1)
        return True

    async def expire_lease(self, name: str, version: int, now: datetime) -> None:
        held = self.leases.get(name)
        if held is not None and held["version"] == version:
            held.update(expires_at=now, version=version + 1)
