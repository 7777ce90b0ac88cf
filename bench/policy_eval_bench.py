"""Decisions per second of the pure policy evaluator: one policy of 50 rules over 40 facts, one core.

Run: python bench/policy_eval_bench.py [seconds-per-scenario]   (default 4; about 12 s in all)

Every rule is evaluated for each decision. The trace and reasons are rendered only when read, so the
second figure adds what a complete audit record costs: ``decision.disclosed("full")``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.policysvc.policy import evaluate, record_digest
from services.policysvc.rules import parse_policy

NOW = datetime(2025, 3, 12, 9, 30, tzinfo=UTC)
HASHES = {f"/usr/lib/strongroom/mod{i}.so": f"{i:02x}" * 32 for i in range(10)}
WORKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def facts() -> dict:
    """40 leaf facts, shaped like a real agent report plus the gateway's observations."""
    return {
        "identity": {
            "device_id": "dev_7f3a", "cloud_provider": "aws", "account": "123456789012",
            "region": "eu-west-1", "zone": "eu-west-1b", "instance_id": "i-0abc123def456",
            "image_id": "ami-0f00ba47", "hostname": "db-prod-07.eu.example.com",
            "ip_addresses": ["10.20.3.7", "2001:db8:5::7"], "boot_time": "2025-03-12T09:27:00Z",
            "agent_version": "1.10.2",
        },
        "integrity": {
            "firewall_enabled": True,
            "antivirus": {"running": True, "pattern_date": "2025-03-11"},
            "agent_hash": "ab" * 32,
            "file_hashes": dict(HASHES),
            "attestation": {
                "secure_boot": True, "tpm_version": "2.0", "pcr0": "00" * 32, "pcr7": "07" * 32,
                "kernel": "6.8.0-45", "nonce_age": 3, "measured": True, "vendor": "nitro",
                "debug_disabled": True, "hypervisor": "kvm", "build_id": "b-2025.03.1", "sev_snp": False,
            },
        },
        "observed": {
            "source_ip": "10.20.3.7", "request_time": "2025-03-12T10:30:00+01:00", "device_id": "dev_7f3a",
        },
    }


def fact_test(fact: str, op: str, value: object = None) -> dict:
    return {"fact": fact, "op": op} if value is None else {"fact": fact, "op": op, "value": value}


def policy_doc() -> dict:
    """10 deny, 5 require_approval and 35 allow rules; 150 fact tests, 40 of them distinct."""
    deny = [
        fact_test("observed.source_ip", "cidr_contains", ["185.220.100.0/22", "2a0b:f4c0::/29"]),
        fact_test("identity.hostname", "matches", r"^(tmp|test|dev)-[a-z0-9-]+\."),
        fact_test("integrity.firewall_enabled", "equals", False),
        fact_test("integrity.antivirus.running", "not_equals", True),
        fact_test("identity.agent_version", "lt", "1.9.0"),
        fact_test("integrity.antivirus.pattern_date", "lt", "2025-01-01"),
        {"not": fact_test("observed.device_id", "exists")},
        fact_test("identity.image_id", "in", ["ami-bad1", "ami-bad2", "ami-bad3"]),
        fact_test("integrity.attestation.kernel", "glob", "4.*"),
        {"any": [fact_test("integrity.attestation.secure_boot", "equals", False),
                 fact_test("integrity.attestation.measured", "equals", False)]},
    ]
    approval = [
        {"not": {"op": "within_time_window", "value": {"days": WORKDAYS, "from": "07:00", "to": "20:00"}}},
        fact_test("identity.account", "not_in", ["123456789012", "210987654321"]),
        {"not": fact_test("identity.boot_time", "age_under", 86400 * 30)},
        fact_test("integrity.attestation.tpm_version", "lt", "2.0"),
        fact_test("integrity.attestation.nonce_age", "gt", 60),
    ]
    allow = []
    for i in range(35):
        path = f"/usr/lib/strongroom/mod{i % 10}.so"
        allow.append({"all": [
            fact_test("identity.region", "in", ["eu-west-1", "eu-central-1"] if i % 4 else ["us-east-1"]),
            fact_test("identity.ip_addresses", "cidr_contains", ["10.20.0.0/16", "2001:db8::/32"]),
            {"any": [
                fact_test(f'integrity.file_hashes["{path}"]', "equals", HASHES[path] if i % 3 else "ff" * 32),
                fact_test("integrity.attestation.vendor", "equals", "nitro" if i % 5 == 0 else "sev"),
            ]},
            fact_test("identity.agent_version", "gte", "1.10.0"),
            fact_test("identity.boot_time", "age_under", 3600),
        ]})
    rules = (
        [{"id": f"deny-{i}", "effect": "deny", "when": w} for i, w in enumerate(deny)]
        + [{"id": f"approve-{i}", "effect": "require_approval", "when": w, "approval": {"approvals_required": 2}}
           for i, w in enumerate(approval)]
        + [{"id": f"allow-{i}", "effect": "allow", "when": w} for i, w in enumerate(allow)]
    )
    return {"name": "bench", "targets": {"devices": "all", "keys": "all"}, "timezone": "Europe/Paris",
            "rules": rules}


def count_leaves(value: object) -> int:
    if isinstance(value, dict):
        return sum(count_leaves(v) for v in value.values()) or 1
    return 1


def rate(work, seconds: float, rounds: int = 5) -> float:
    """Median calls/s over a few rounds, so one noisy neighbour does not skew the figure."""
    figures = []
    for _ in range(rounds):
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / rounds:
            for _ in range(100):
                work()
            done += 100
        figures.append(done / elapsed)
    return statistics.median(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", type=float, nargs="?", default=4.0, help="seconds per scenario (default 4)")
    seconds = parser.parse_args().seconds
    policy = parse_policy(policy_doc(), policy_id="pol_bench", version=1)
    allowed = facts()
    denied = facts()
    denied["identity"]["region"] = "ap-south-1"  # every allow rule fails: deny by default, 35 reasons
    print(f"policy: {len(policy.rules)} rules; facts: {count_leaves(allowed)}; one core, median of 5 rounds")
    for label, document in (("allow", allowed), ("deny by default", denied)):
        effect, decide, released, audit = measure(policy, document, seconds)
        print(f"{label:>16} ({effect}): {decide:,.0f} decisions/s; {released:,.0f}/s as a release records them "
              f"(reasons, compact trace, digested full record); {audit:,.0f}/s with the per-rule trace rendered")


def measure(policy, document: dict, seconds: float) -> tuple[str, float, float, float]:
    """The effect, then decisions/s: evaluated only, recorded as a release does, and fully rendered."""
    effect = evaluate([policy], document, now=NOW).effect
    decide = rate(lambda: evaluate([policy], document, now=NOW), seconds)
    released = rate(lambda: as_released(evaluate([policy], document, now=NOW)), seconds / 2)
    audit = rate(lambda: evaluate([policy], document, now=NOW).disclosed("full"), seconds / 2)
    return effect, decide, released, audit


def as_released(decision) -> None:
    """What policysvc computes per request besides the evaluation (see policysvc.decision.decide)."""
    _ = decision.reasons, decision.compact_trace
    record_digest(decision.record(NOW))


if __name__ == "__main__":
    main()
