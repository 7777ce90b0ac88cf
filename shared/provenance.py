"""Where a fact came from, and so what it is worth: one order, shared by the gateway and policysvc.

* ``attested``: signed by a key the host cannot control and bound to a server nonce (a TPM quote,
  an Azure attested document with our nonce, a GCP identity token with our challenge);
* ``cloud``: signed by the cloud but not fresh (an AWS instance identity document);
* ``observed``: seen by the gateway itself (the source address, the authenticated device);
* ``claimed``: reported by the agent. A root user on the VM can write any claimed fact, so a
  claimed fact never satisfies a condition that requires more.

A request's provenance is a map from fact path (``identity.region``) to provenance; a path not in
the map takes the provenance of its nearest ancestor in it, and is ``claimed`` when there is none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal, get_args

Provenance = Literal["attested", "cloud", "observed", "claimed"]  # strongest first
PROVENANCES: tuple[Provenance, ...] = get_args(Provenance)
RANK: dict[str, int] = {name: len(PROVENANCES) - i for i, name in enumerate(PROVENANCES)}  # claimed 1 .. attested 4
WEAKEST: Provenance = "claimed"

# SECURITY: what the gateway sets itself on every agent request, replacing anything the agent sent.
GATEWAY_OBSERVED: dict[str, Provenance] = {"observed": "observed", "identity.device_id": "observed"}

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def at_least(provenance: str | None, required: str) -> bool:
    """Whether a fact of ``provenance`` may satisfy a condition that requires ``required``."""
    return RANK.get(provenance or "", 0) >= RANK[required]


def stronger(a: Provenance | None, b: Provenance | None) -> Provenance | None:
    if a is None or b is None:
        return a or b
    return a if RANK[a] >= RANK[b] else b


def fact_path(keys: tuple[str | int, ...] | list[str | int]) -> str:
    """The canonical text of a fact path: ``a.b``, ``a["key.with.dots"]``, ``a[0]``."""
    text = ""
    for key in keys:
        if type(key) is int:
            text += f"[{key}]"
        elif _PLAIN_KEY.fullmatch(key):
            text += f".{key}" if text else key
        else:
            text += f"[{json.dumps(key)}]"
    return text


def prefixes(keys: tuple[str | int, ...]) -> tuple[str, ...]:
    """The canonical paths of a fact and of each of its ancestors, longest first."""
    return tuple(fact_path(keys[:n]) for n in range(len(keys), 0, -1))


def lookup(provenance: Mapping[str, str], paths: tuple[str, ...]) -> str:
    """The provenance of the fact whose ``prefixes`` are ``paths``."""
    for path in paths:
        found = provenance.get(path)
        if found is not None:
            return found
    return WEAKEST


def leaves(tree: Mapping[str, Any], keys: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """(keys, value) of every non-object value in a fact tree; lists count as values."""
    for name, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from leaves(value, (*keys, name))
        else:
            yield (*keys, name), value


def labelled(facts: Mapping[str, Any], provenance: Mapping[str, str]) -> dict[str, str]:
    """Every fact path in ``facts`` -> its provenance under ``provenance`` (``claimed`` when unnamed)."""
    return {fact_path(keys): lookup(provenance, prefixes(keys)) for keys, _ in leaves(facts)}


def valid_map(value: Any) -> bool:
    """Whether ``value`` is a provenance map: fact path -> a known provenance."""
    return isinstance(value, Mapping) and all(
        isinstance(path, str) and 0 < len(path) <= 256 and p in RANK for path, p in value.items()
    )
