"""The firewall as the VM reports it: a hash of the canonical ruleset and the chains that exist.

``nft -j list ruleset`` is read first, ``iptables-save`` when nftables is not installed. The hash
is SHA-256 over a canonical form that keeps what changes filtering and drops what does not:
object handles and rule positions, packet and byte counters, set element expiry, the order in
which tables, chains, sets and set elements were created, comments and whitespace in
``iptables-save`` output. The order of rules inside a chain is kept: it changes the verdict.

A chain is named ``family table chain`` (``inet filter input``; ``ip filter INPUT`` from
iptables). ``firewall_enabled`` is true when a filter chain on the input hook drops by default
or has rules. All of it is claimed: a root user can load any ruleset or print any output.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.collectors.tools import DEFAULT_TIMEOUT_SECONDS, run_tool

NFT_ARGV = ("nft", "-j", "list", "ruleset")
IPTABLES_ARGV = ("iptables-save",)
# Values the kernel changes on its own (traffic, timers) or that only number objects.
_VOLATILE_KEYS = frozenset({"handle", "index", "packets", "bytes", "expires", "used"})


class RulesetError(ValueError):
    """The tool's output is not a ruleset this parser understands; says what was wrong."""


@dataclass(frozen=True)
class Chain:
    name: str  # "family table chain"
    hook: str | None = None  # base chains only
    policy: str | None = None
    rules: int = 0


@dataclass(frozen=True)
class Ruleset:
    """A parsed ruleset: the canonical text that is hashed, and its chains in name order."""

    tool: str
    canonical: str
    chains: tuple[Chain, ...] = field(default=())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical.encode()).hexdigest()

    @property
    def enabled(self) -> bool:
        return any(
            chain.hook == "input" and (chain.policy == "drop" or chain.rules > 0) for chain in self.chains
        )

    def facts(self, required_chains: Sequence[str] = ()) -> dict[str, Any]:
        names = [chain.name for chain in self.chains]
        missing = [name for name in required_chains if name not in names]
        return {
            "firewall_enabled": self.enabled,
            "firewall": {
                "present": True,
                "tool": self.tool,
                "ruleset_sha256": self.sha256,
                "chains": names,
                "required_chains": list(required_chains),
                "missing_chains": missing,
                "required_chains_present": not missing,
            },
        }


def parse_nft_json(text: str) -> Ruleset:
    """``nft -j list ruleset`` output as a `Ruleset`."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise RulesetError(f"nft output is not JSON: {exc}") from None
    items = document.get("nftables") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise RulesetError('nft output has no "nftables" list')
    objects: list[str] = []
    rules: dict[str, list[Any]] = {}
    chains: dict[str, dict[str, Any]] = {}
    for item in items:
        if not isinstance(item, dict) or len(item) != 1:
            raise RulesetError("nft output holds an item that is not a one-key object")
        ((kind, body),) = item.items()
        if kind == "metainfo":
            continue
        if not isinstance(body, dict):
            raise RulesetError(f"nft {kind} is not an object")
        clean = _without_volatile(body)
        if kind == "rule":
            rules.setdefault(_chain_name(clean, "chain"), []).append(clean.get("expr", []))
            continue
        if kind == "chain":
            chains[_chain_name(clean, "name")] = clean
        if kind in ("set", "map") and isinstance(clean.get("elem"), list):
            clean["elem"] = sorted(clean["elem"], key=_json)
        objects.append(_json({kind: clean}))
    canonical = _json({"objects": sorted(objects), "rules": rules})
    found = tuple(
        Chain(name, body.get("hook"), body.get("policy"), len(rules.get(name, [])))
        for name, body in sorted(chains.items())
    )
    return Ruleset("nft", canonical, found)


def parse_iptables_save(text: str, family: str = "ip") -> Ruleset:
    """``iptables-save`` (or ``-c``) output as a `Ruleset`; `family` is ``ip`` or ``ip6``."""
    tables: dict[str, dict[str, Any]] = {}
    table: dict[str, Any] | None = None
    table_name = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = " ".join(raw.split())
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table_name = line[1:]
            table = tables.setdefault(table_name, {"chains": {}, "rules": {}})
        elif table is None:
            raise RulesetError(f"iptables-save line {number}: a rule outside a table")
        elif line == "COMMIT":
            table = None
        elif line.startswith(":"):
            parts = line[1:].split()
            policy = parts[1] if len(parts) > 1 else "-"
            table["chains"][parts[0]] = None if policy == "-" else policy.lower()
        else:
            rule = _strip_counters(line)
            if not rule.startswith("-A "):
                raise RulesetError(f"iptables-save line {number}: expected -A CHAIN ..., got {rule[:40]!r}")
            chain = rule.split()[1]
            table["rules"].setdefault(chain, []).append(rule)
    chains = []
    for name, body in tables.items():
        for chain, policy in body["chains"].items():
            # Built-in chains (those with a policy) are the hooked ones; INPUT of filter is "input".
            hook = chain.lower() if policy is not None and name == "filter" else None
            chains.append(Chain(f"{family} {name} {chain}", hook, policy, len(body["rules"].get(chain, []))))
    canonical = _json({name: {"chains": sorted(body["chains"].items(), key=lambda kv: kv[0]), "rules": body["rules"]}
                       for name, body in sorted(tables.items())})
    return Ruleset("iptables", canonical, tuple(sorted(chains, key=lambda c: c.name)))


def collect_firewall(
    required_chains: Sequence[str] = (), *, netns: str | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """Integrity facts about the firewall; `netns` reads another network namespace's (a path such
    as ``/proc/1/ns/net`` or ``/run/netns/NAME``, entered with nsenter)."""
    prefix = ("nsenter", f"--net={netns}") if netns else ()
    attempts: list[str] = []
    for argv, parse in ((NFT_ARGV, parse_nft_json), (IPTABLES_ARGV, parse_iptables_save)):
        output = run_tool((*prefix, *argv), timeout=timeout)
        if output is None:
            attempts.append(f"{prefix[0] if prefix else argv[0]} is not installed")
            continue
        if output.ok:
            try:
                return parse(output.stdout).facts(required_chains)
            except RulesetError as exc:
                attempts.append(f"{argv[0]}: {exc}")
                continue
        attempts.append(f"{argv[0]}: {output.reason()}")
    return {"firewall": {"present": False, "required_chains": list(required_chains), "error": "; ".join(attempts)}}


def _chain_name(body: Mapping[str, Any], key: str) -> str:
    return " ".join(str(body.get(part, "")) for part in ("family", "table")) + f" {body.get(key, '')}"


def _without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if k not in _VOLATILE_KEYS}
    if isinstance(value, list):
        return [_without_volatile(v) for v in value]
    return value


def _strip_counters(rule: str) -> str:
    """``[12:3456] -A ...`` and ``-A ... -c 12 3456`` without the counters."""
    if rule.startswith("[") and "] " in rule:
        rule = rule.split("] ", 1)[1]
    words = rule.split()
    out: list[str] = []
    skip = 0
    for i, word in enumerate(words):
        if skip:
            skip -= 1
            continue
        if word == "-c" and len(words[i + 1:i + 3]) == 2 and all(w.isdigit() for w in words[i + 1:i + 3]):
            skip = 2
            continue
        out.append(word)
    return " ".join(out)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_list(text: str | None) -> tuple[str, ...]:
    """Required chains as an operator writes them: comma-separated ``family table chain`` names."""
    return tuple(" ".join(part.split()) for part in (text or "").split(",") if part.strip())

