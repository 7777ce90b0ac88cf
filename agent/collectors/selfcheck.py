"""The agent's own files checked against the hashes its package installed them with.

pip writes a ``RECORD`` into the distribution's dist-info: every installed file with its SHA-256.
Re-hashing those files shows whether any changed since installation; the report names modified
or missing files (never their contents). What it is worth depends on how the agent was installed:

* ``wheel``: RECORD covers every file, so ``ok`` means the installed code is what was installed;
* ``editable`` (``pip install -e``): RECORD lists only the small redirect files pip wrote, not
  the source tree, so ``ok`` is null: nothing about the code is checked (``agent_hash`` still
  describes the source in use);
* ``unrecorded``: no hashes at all (an egg-info development install, or a distribution package;
  use ``dpkg --verify`` there), ``ok`` is null too.

A root user can rewrite RECORD with the files, so this detects accidents and drift, not an attacker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.metadata
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DISTRIBUTION = "strongroom"
MAX_LISTED = 50  # names listed per category; the counts are always complete
_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class RecordEntry:
    """One RECORD line: the file's name as recorded, the hash algorithm and its urlsafe-base64 value."""

    name: str
    algorithm: str | None
    digest: str | None


def verify_entries(entries: Iterable[RecordEntry], actual: Callable[[RecordEntry], str | None]) -> dict[str, Any]:
    """Compare each hashed entry with `actual(entry)` (the file's digest now, None if it is gone)."""
    checked, modified, missing = 0, [], []
    for entry in entries:
        if not entry.algorithm or not entry.digest:
            continue  # RECORD itself and compiled files carry no hash
        checked += 1
        found = actual(entry)
        if found is None:
            missing.append(entry.name)
        elif not hmac.compare_digest(found, entry.digest):
            modified.append(entry.name)
    return {"checked": checked, "modified": sorted(modified), "missing": sorted(missing)}


def agent_files_facts(install: str, result: dict[str, Any]) -> dict[str, Any]:
    """``integrity.agent_files`` from the install kind and `verify_entries`'s result (pure)."""
    clean = not result["modified"] and not result["missing"]
    facts: dict[str, Any] = {
        "install": install,
        "ok": clean if install == "wheel" and result["checked"] else None,
        "checked": result["checked"],
        "modified": result["modified"][:MAX_LISTED],
        "missing": result["missing"][:MAX_LISTED],
    }
    if install == "editable":
        facts["note"] = "editable install: RECORD covers pip's redirect files only, not the agent's source"
    elif install == "unrecorded" or not result["checked"]:
        facts["note"] = "the installed package records no file hashes"
    return facts


def install_kind(distribution: importlib.metadata.Distribution) -> str:
    """``editable``, ``wheel`` or ``unrecorded``, from direct_url.json (PEP 610) and RECORD's hashes."""
    try:
        direct = json.loads(distribution.read_text("direct_url.json") or "{}")
    except ValueError:
        direct = {}
    if isinstance(direct, dict) and (direct.get("dir_info") or {}).get("editable"):
        return "editable"
    if any(f.hash is not None for f in distribution.files or ()):
        return "wheel"
    return "unrecorded"


def collect_agent_files(
    distribution: importlib.metadata.Distribution | None = None, *, name: str = DISTRIBUTION
) -> dict[str, Any]:
    """``{"agent_files": {...}}`` for the installed agent (or the given distribution)."""
    try:
        dist = distribution or importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return {"agent_files": {"install": "absent", "ok": None, "checked": 0, "modified": [], "missing": [],
                                "note": f"no installed distribution named {name}"}}
    files = list(dist.files or ())
    entries = [RecordEntry(str(f), f.hash.mode if f.hash else None, f.hash.value if f.hash else None) for f in files]
    located = {str(f): Path(str(f.locate())) for f in files}
    return {"agent_files": agent_files_facts(
        install_kind(dist), verify_entries(entries, lambda entry: _digest(located[entry.name], entry.algorithm)))}


def _digest(path: Path, algorithm: str | None) -> str | None:
    """The urlsafe-base64 (unpadded) digest RECORD uses; None when the file cannot be read."""
    try:
        digest = hashlib.new(algorithm or "sha256")
    except ValueError:
        return "unsupported-algorithm"  # never equal to a recorded digest: reported as modified
    try:
        with open(path, "rb") as source:
            while block := source.read(_BLOCK):
                digest.update(block)
    except OSError:
        return None
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
