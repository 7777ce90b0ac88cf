"""auditsvc's chained records, their chunk index and each tenant's chain head.

Checkpoints, forwarders and archives have their own stores (`store_checkpoints.py`,
`store_forwarders.py`, `store_archives.py`).

Records are stored exactly as chained, keyed `<tenant>:<seq>` and with no secondary index:
on the embedded store every index costs more per insert than the record itself. Lookups go
through a derived, rebuildable index written once per appended chunk:

- `record_terms`: the chunk's seq range, time bounds and distinct search terms (multikey), each
  with its postings (the offsets of the records that carry it), so a filtered query reads only
  the records that can match; and its records' event ids (not indexed), read for dedup from the
  chunks whose time bounds cover a redelivered event's time;
- `record_spans`: the same ranges and time bounds without terms, small enough to scan for
  time-range queries;
- `chain_heads`: each tenant's last seq and hash.

The index lies outside the chain (no record carries a term, so no hash covers one): it is
rebuilt from the records, and editing it could hide a record from a filtered query but never
from `audit verify`, which reads the records themselves. `_id` uniqueness keeps one record per
seq. A chunk is written records first, then its index, then the head. A crash in between leaves
records past the stored head; `head()` finds them by probing forward and indexes them before
ingestion goes on, so no record is ever invisible to dedup or queries for long.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from shared.audit_chain import ChainHead
from shared.store import TenantCollection

from .search import Criteria, chunk_postings

_READ_PAGE = 1000  # records read per page of a range
# Keys per point lookup: the embedded store checks each found record against the whole `$in`
# list, so the cost of one lookup grows with the square of its size.
_LOOKUP_KEYS = 64
_FIRST_WINDOW = 4096  # seqs a filtered query looks ahead at first; grows while nothing matches


def record_key(tenant_id: str, seq: int) -> str:
    """A record's `_id`: tenant-qualified and zero-padded, so it sorts in chain order."""
    return f"{tenant_id}:{seq:012d}"


class AuditStore:
    def __init__(self, db: AsyncDatabase):
        # SECURITY: records and chain heads are read by `_id` alone (a point lookup; adding tenant_id
        # to the filter would turn it into a scan on the embedded store). Every `_id` is built from
        # the caller's tenant id, and the tenant of every document read is checked again.
        self.records = TenantCollection(db["records"])
        self.terms = TenantCollection(db["record_terms"])
        self.spans = TenantCollection(db["record_spans"])
        self.heads = TenantCollection(db["chain_heads"])
        # Read here for where the online chain starts; written by `ArchiveStore`.
        self.archives = TenantCollection(db["archives"])

    async def create_indexes(self) -> None:
        await self.terms.raw.create_index([("tenant_id", ASCENDING), ("terms", ASCENDING), ("last_seq", ASCENDING)])
        await self.terms.raw.create_index([("tenant_id", ASCENDING), ("max_time", ASCENDING)])
        await self.spans.raw.create_index([("tenant_id", ASCENDING), ("last_seq", ASCENDING)])

    # --- the chain's end ------------------------------------------------------------

    async def stored_head(self, tenant_id: str) -> ChainHead:
        """The head as last recorded (records of a chunk cut short by a crash may lie past it)."""
        doc = await self.heads.raw.find_one({"_id": tenant_id})
        if doc is not None and doc["tenant_id"] == tenant_id:
            return ChainHead(tenant_id, doc["seq"], doc["hash"])
        # Everything online may have been archived: the chain continues from the last archive.
        archived = await self.last_done_archive(tenant_id)
        if archived:
            return ChainHead(tenant_id, archived["to_seq"], archived["to_hash"])
        return ChainHead.genesis(tenant_id)

    async def last_done_archive(self, tenant_id: str) -> dict[str, Any] | None:
        """The archive the online chain continues from, if any."""
        found = await self.archives.find(tenant_id, {"state": "done"}, sort=[("to_seq", DESCENDING)], limit=1)
        return found[0] if found else None

    async def head(self, tenant_id: str) -> ChainHead:
        """The chain's true end: the stored head, plus any records a crash left past it (indexed now)."""
        head = await self.stored_head(tenant_id)
        probe = _LOOKUP_KEYS  # one small lookup when nothing is there, the usual case
        while True:
            tail = await self.read_range(tenant_id, head.seq + 1, head.seq + probe)
            probe = _READ_PAGE
            run = []
            for record in tail:
                if record["seq"] != head.seq + len(run) + 1:
                    break
                run.append(record)
            if not run:
                return head
            await self._index({tenant_id: run})
            head = ChainHead(tenant_id, run[-1]["seq"], run[-1]["hash"])

    async def first_seq(self, tenant_id: str) -> int:
        """The first seq still online: older records are in archives."""
        archived = await self.last_done_archive(tenant_id)
        return archived["to_seq"] + 1 if archived else 1

    async def tenants(self) -> list[str]:
        return list(await self.heads.raw.distinct("tenant_id"))

    # --- writing --------------------------------------------------------------------

    async def append(self, runs: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        """Store each tenant's run of linked records (each follows its tenant's head), then index them.

        One write per collection for the whole batch, whatever the number of tenants: on the
        embedded store each write has a fixed cost comparable to that of dozens of records.
        """
        runs = {t: r for t, r in runs.items() if r}
        if not runs:
            return
        await self.records.raw.insert_many(
            [{"_id": record_key(t, r["seq"]), **r} for t, records in runs.items() for r in records], ordered=True)
        await self._index(runs)

    @staticmethod
    async def _insert_or_replace(collection: Any, docs: list[dict[str, Any]]) -> None:
        try:
            await collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:  # re-indexing runs after a crash
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
            for error in exc.details["writeErrors"]:
                doc = docs[error["index"]]
                await collection.replace_one({"_id": doc["_id"]}, doc)

    async def _index(self, runs: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        spans, terms, heads = [], [], []
        for tenant_id, records in runs.items():
            first, last = records[0], records[-1]
            times = [r["time"] for r in records]
            span = {"_id": record_key(tenant_id, first["seq"]), "tenant_id": tenant_id, "first_seq": first["seq"],
                    "last_seq": last["seq"], "min_time": min(times), "max_time": max(times)}
            spans.append(span)
            names, postings = chunk_postings(records)
            terms.append({**span, "terms": names, "postings": postings, "events": [r["event_id"] for r in records]})
            heads.append(ReplaceOne({"_id": tenant_id}, {"tenant_id": tenant_id, "seq": last["seq"], "hash": last["hash"],
                                                         "time": last["time"]}, upsert=True))
        await self._insert_or_replace(self.terms.raw, terms)
        await self._insert_or_replace(self.spans.raw, spans)
        await self.heads.raw.bulk_write(heads, ordered=False)

    async def known_event_ids(self, tenant_id: str, events: Sequence[tuple[str, str]]) -> set[str]:
        """Which of these (event id, time) pairs are already recorded: a record's chunk spans its time."""
        if not events:
            return set()
        earliest, latest = min(t for _, t in events), max(t for _, t in events)
        # Filtered on exactly the (tenant_id, max_time) index, the chunks' other bound checked here:
        # with `min_time` in the filter the embedded store scanned (and decoded) every chunk of the
        # tenant for each ingested batch, a cost that grew with the chain to most of the store's.
        docs = await self.terms.find(tenant_id, {"max_time": {"$gte": earliest}},
                                     projection={"events": 1, "terms": 1, "min_time": 1})
        wanted = {e for e, _ in events}
        found = set()
        for doc in docs:
            if doc["min_time"] > latest:
                continue
            # Chunks written before event ids left the terms carry them as "e:<id>" terms.
            ids = doc.get("events") or [t[2:] for t in doc["terms"] if t.startswith("e:")]
            found.update(wanted.intersection(ids))
        return found

    async def delete_range(self, tenant_id: str, first: int, last: int) -> None:
        """Remove records first..last (archived) and the index chunks that lie wholly inside."""
        for start in range(first, last + 1, _READ_PAGE):
            keys = [record_key(tenant_id, s) for s in range(start, min(last, start + _READ_PAGE - 1) + 1)]
            await self.records.raw.delete_many({"_id": {"$in": keys}})
        for collection in (self.terms, self.spans):
            await collection.raw.delete_many({"tenant_id": tenant_id, "last_seq": {"$lte": last}})

    # --- reading --------------------------------------------------------------------

    async def _read(self, tenant_id: str, seqs: Sequence[int]) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for start in range(0, len(seqs), _LOOKUP_KEYS):
            keys = [record_key(tenant_id, s) for s in seqs[start:start + _LOOKUP_KEYS]]
            docs += await self.records.raw.find({"_id": {"$in": keys}}).to_list(None)
        out = []
        for doc in docs:
            if doc.get("tenant_id") != tenant_id:  # SECURITY: see __init__
                raise RuntimeError("record key does not match its tenant")
            del doc["_id"]
            out.append(doc)
        out.sort(key=lambda r: r["seq"])
        return out

    async def read_range(self, tenant_id: str, first: int, last: int) -> list[dict[str, Any]]:
        """Records first..last in chain order (missing ones are simply absent)."""
        return await self._read(tenant_id, range(first, last + 1))

    async def _start(self, tenant_id: str, criteria: Criteria, after: int) -> int:
        """Skip what lies wholly before `since`: the first span that reaches it (spans are small)."""
        if criteria.since is None:
            return after
        spans = await self.spans.find(tenant_id, {"last_seq": {"$gt": after}}, projection={"_id": 0})
        reaching = [s["first_seq"] for s in spans if s["max_time"] >= criteria.since]
        return max(after, min(reaching, default=after + 1) - 1)

    async def _candidates(self, tenant_id: str, criteria: Criteria, after: int, end: int) -> AsyncIterator[Sequence[int]]:
        """Ascending seqs after `after` that may match: every record that does match is among them."""
        if criteria.is_everything:
            yield range(after + 1, end + 1)
            return
        done = await self._start(tenant_id, criteria, after)
        lead = criteria.lead_term
        if lead is None:  # a time range alone: the spans it overlaps
            spans = await self.spans.find(tenant_id, {"last_seq": {"$gt": done}}, projection={"_id": 0})
            for span in sorted(spans, key=lambda s: s["first_seq"]):
                if criteria.overlaps(span["min_time"], span["max_time"]):
                    yield range(max(span["first_seq"], done + 1), span["last_seq"] + 1)
                    done = span["last_seq"]
            return
        # A term: walk the chunks that hold it in growing windows of seqs, reading its postings.
        window, cursor = _FIRST_WINDOW, done
        while cursor < end:
            chunks = await self.terms.find(
                tenant_id, {"terms": lead, "last_seq": {"$gt": cursor, "$lte": cursor + window}},
                projection={"_id": 0, "terms": 1, "postings": 1, "first_seq": 1, "min_time": 1, "max_time": 1})
            for chunk in sorted(chunks, key=lambda c: c["first_seq"]):
                if criteria.overlaps(chunk["min_time"], chunk["max_time"]):
                    offsets = chunk["postings"][bisect.bisect_left(chunk["terms"], lead)]
                    yield [seq for o in offsets if (seq := chunk["first_seq"] + o) > done]
            cursor += window
            if not chunks:
                window *= 4  # a rare term: look further ahead each time

    async def query(self, tenant_id: str, criteria: Criteria, *, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` matching records after `after_seq`, in chain order."""
        end = (await self.stored_head(tenant_id)).seq
        after = max(after_seq, await self.first_seq(tenant_id) - 1)
        out: list[dict[str, Any]] = []
        async for seqs in self._candidates(tenant_id, criteria, after, end):
            start = 0
            while start < len(seqs):
                # Read about what the page still needs (most candidates match), more if they do not.
                wanted = limit - len(out)
                size = wanted if criteria.is_everything else min(_READ_PAGE, max(_LOOKUP_KEYS, 2 * wanted))
                page, start = seqs[start:start + size], start + size
                for record in await self._read(tenant_id, page):
                    if criteria.matches(record):
                        out.append(record)
                        if len(out) == limit:
                            return out
        return out

    async def count(self, tenant_id: str, criteria: Criteria) -> int:
        if criteria.is_everything:
            return max(0, (await self.stored_head(tenant_id)).seq - await self.first_seq(tenant_id) + 1)
        total, after = 0, 0
        while page := await self.query(tenant_id, criteria, after_seq=after, limit=5000):
            total += len(page)
            after = page[-1]["seq"]
        return total
