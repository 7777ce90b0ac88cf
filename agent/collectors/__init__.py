"""Integrity collectors: what the agent measures on its host, every result a claim.

Each area has a pure parser of its tool's output and a thin runner (``tools.run_tool``, with a
timeout): the firewall (``firewall.py``), ClamAV (``antivirus.py``), the agent's own installed
files (``selfcheck.py``) and Secure Boot (``secureboot.py``). `integrity_collector` bundles them
as one collector for ``agent.facts.collect_facts``; its facts land under ``integrity``::

    firewall_enabled, firewall{present, tool, ruleset_sha256, chains[], required_chains[],
    missing_chains[], required_chains_present}, antivirus{present, running, version, pattern_date,
    database_age_days, ...}, agent_files{install, ok, checked, modified[], missing[]}, secure_boot

The gateway labels all of them ``claimed`` (``shared/provenance.py``): a root user on the VM can
change what these tools print. They detect drift and accidents; proof needs evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.collectors.antivirus import collect_antivirus
from agent.collectors.firewall import collect_firewall
from agent.collectors.secureboot import collect_secure_boot
from agent.collectors.selfcheck import collect_agent_files
from agent.collectors.tools import DEFAULT_TIMEOUT_SECONDS


@dataclass(frozen=True)
class IntegritySettings:
    """What the operator chose: chains that must exist, where the ruleset and databases are."""

    required_chains: tuple[str, ...] = ()
    firewall_netns: str | None = None  # e.g. /proc/1/ns/net when the agent runs in a container
    clamav_database: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS


def collect_integrity(settings: IntegritySettings = IntegritySettings()) -> dict[str, Any]:
    """``{"integrity": {...}}`` from every collector; one that fails says why instead of stopping the rest."""
    areas: dict[str, Callable[[], Mapping[str, Any]]] = {
        "firewall": lambda: collect_firewall(settings.required_chains, netns=settings.firewall_netns,
                                             timeout=settings.timeout),
        "antivirus": lambda: collect_antivirus(database=settings.clamav_database, timeout=settings.timeout),
        "agent_files": collect_agent_files,
        "secure_boot": lambda: collect_secure_boot(timeout=settings.timeout),
    }
    integrity: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for area, collect in areas.items():
        try:
            integrity.update(collect())
        except Exception as exc:  # a broken collector must not silence the others
            errors[area] = f"{type(exc).__name__}: {exc}"[:300]
    if errors:
        integrity["collector_errors"] = errors
    return {"integrity": integrity}


def integrity_collector(settings: IntegritySettings) -> Callable[[], dict[str, Any]]:
    """A collector for ``collect_facts(collectors=[...])``."""
    return lambda: collect_integrity(settings)
