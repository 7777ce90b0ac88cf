"""What the agent tells policy about its VM: facts learned locally and cheaply, plus operator overrides.

The result has the shape policysvc documents (``services/policysvc/facts.py``)::

    {"identity":  {device_id, cloud_provider, account, region, zone, instance_id, image_id,
                   hostname, ip_addresses[], boot_time, agent_version, os{...}},
     "integrity": {firewall_enabled, antivirus{running, pattern_date}, agent_hash,
                   file_hashes{path: sha256}, attestation{...}}}

Sources, later ones winning key by key (nested objects merge):

1. Local collection: hostname, non-loopback IP addresses (``/proc/net``), boot time
   (``/proc/stat``), agent version and OS, a hash of the agent's own code, and hashes of the
   files the operator names.
2. ``collectors``: callables returning partial facts. The CLI passes the integrity collectors
   (``agent/collectors/``: firewall ruleset, ClamAV, the agent's installed files, Secure Boot).
   A cloud metadata collector could plug in here too; cloud identity that counts comes as
   evidence instead (``agent/evidence.py``), and claimed cloud facts from 3 or 4.
3. A JSON facts file written by the operator or their tooling (`load_facts_file`), e.g. cloud
   identity, ``integrity.firewall_enabled`` or ``integrity.antivirus``.
4. Environment overrides (`facts_from_env`, for example ``STRONGROOM_AGENT_CLOUD_PROVIDER``), then
   the caller's ``extra``.

Every fact here is asserted by the VM itself, and the gateway treats all of them as ``claimed``
(``shared/provenance.py``): a root user on the VM can write any of them, e.g. by echoing
``{"identity": {"region": "eu-west-1"}}`` into the facts file. Facts a policy can trust come from
elsewhere: ``evidence`` the gateway verifies (a cloud-signed identity document, a TPM quote:
``cloud`` or ``attested``) and what the gateway observes itself (``observed``).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import ipaddress
import json
import platform
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DISTRIBUTION = "strongroom"
FACT_GROUPS = ("identity", "integrity")
CLOUD_FACTS = ("cloud_provider", "account", "region", "zone", "instance_id", "image_id")
ENV_PREFIX = "STRONGROOM_AGENT_"
MAX_FACTS_FILE_BYTES = 1024 * 1024
_HASH_BLOCK = 1024 * 1024
_AGENT_PACKAGE_DIR = Path(__file__).resolve().parent

Collector = Callable[[], Mapping[str, Any]]


class FactsError(Exception):
    """Operator-supplied facts cannot be used; the message names the file or variable at fault."""


def collect_facts(
    extra: Mapping[str, Any] | None = None,
    *,
    device_id: str | None = None,
    hash_paths: Iterable[str | Path] = (),
    collectors: Sequence[Collector] = (),
    facts_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    proc_root: Path | str = "/proc",
    package_dir: Path | str = _AGENT_PACKAGE_DIR,
) -> dict[str, Any]:
    """Facts for a key request: local collection, then collectors, facts file, `environ`, `extra`.

    Synchronous and file-bound (it hashes files); async callers run it in a thread.
    """
    proc = Path(proc_root)
    file_hashes, file_errors = hash_files(hash_paths)
    integrity: dict[str, Any] = {"agent_hash": agent_hash(package_dir), "file_hashes": file_hashes}
    if file_errors:
        # Reported rather than raised: whether a missing file should block a release is policy's call.
        integrity["file_hash_errors"] = file_errors
    facts: dict[str, Any] = {
        "identity": {
            "device_id": device_id,
            "hostname": socket.gethostname(),
            "ip_addresses": ip_addresses(proc),
            "boot_time": boot_time(proc),
            "agent_version": agent_version(),
            "os": os_facts(),
        },
        "integrity": integrity,
    }
    layers: list[Mapping[str, Any]] = [collector() for collector in collectors]
    if facts_file is not None:
        layers.append(load_facts_file(facts_file))
    if environ is not None:
        layers.append(facts_from_env(environ))
    if extra:
        layers.append(extra)
    for layer in layers:
        facts = merge_facts(facts, layer)
    return facts


def merge_facts(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with `override` applied: objects merge, anything else replaces."""
    merged = copy.deepcopy(dict(base))
    for name, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
            merged[name] = merge_facts(merged[name], value)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


def load_facts_file(path: Path | str) -> dict[str, Any]:
    """Read an operator's facts file: a JSON object with optional "identity" and "integrity" objects."""
    try:
        with open(path, "rb") as source:
            raw = source.read(MAX_FACTS_FILE_BYTES + 1)
    except OSError as exc:
        raise FactsError(f"cannot read facts file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FACTS_FILE_BYTES:
        raise FactsError(f"facts file {path} is larger than {MAX_FACTS_FILE_BYTES} bytes")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FactsError(f"facts file {path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise FactsError(f"facts file {path} must hold a JSON object")
    unknown = sorted(set(document) - set(FACT_GROUPS))
    if unknown:
        # "observed" in particular is the gateway's to set; refusing it here avoids a false sense of control.
        raise FactsError(
            f"facts file {path} may only contain {' and '.join(FACT_GROUPS)}, not {', '.join(unknown)}"
        )
    for group, value in document.items():
        if not isinstance(value, dict):
            raise FactsError(f"facts file {path}: {group!r} must be a JSON object")
    return document


def facts_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Cloud identity overrides such as STRONGROOM_AGENT_REGION=eu-west-1, for images without a facts file."""
    identity = {
        name: environ[ENV_PREFIX + name.upper()]
        for name in CLOUD_FACTS
        if environ.get(ENV_PREFIX + name.upper())
    }
    return {"identity": identity} if identity else {}


def ip_addresses(proc_root: Path | str = "/proc") -> list[str]:
    """This host's unicast addresses, without loopback, link-local or unspecified ones; IPv4 first."""
    proc = Path(proc_root)
    candidates = _local_ipv4_from_fib_trie(proc) + _ipv6_from_if_inet6(proc)
    if not candidates:
        candidates = _primary_addresses()
    addresses = set()
    for text in candidates:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not (address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast):
            addresses.add(address)
    return [str(address) for address in sorted(addresses, key=lambda a: (a.version, a))]


def boot_time(proc_root: Path | str = "/proc") -> str | None:
    """When the kernel booted, RFC 3339 UTC, from the ``btime`` line of /proc/stat."""
    try:
        text = (Path(proc_root) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "btime":
            try:
                booted = datetime.fromtimestamp(int(value.strip()), tz=UTC)
            except (ValueError, OverflowError, OSError):
                return None
            return booted.strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def agent_version() -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def os_facts() -> dict[str, str | None]:
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        release = {}
    return {
        "name": platform.system().lower() or None,
        "kernel": platform.release() or None,
        "machine": platform.machine() or None,
        "distribution": release.get("ID"),
        "distribution_version": release.get("VERSION_ID"),
    }


def agent_hash(package_dir: Path | str = _AGENT_PACKAGE_DIR) -> str | None:
    """SHA-256 over the agent's ``*.py`` files, reproducible with standard tools.

    It is the SHA-256 of ``sha256sum`` output for the files sorted by relative path, i.e.
    ``cd agent && find . -name '*.py' -not -path '*/__pycache__/*' | sed 's|^\\./||' |
    LC_ALL=C sort | xargs sha256sum | sha256sum``.
    """
    root = Path(package_dir)
    files = sorted(
        (path.relative_to(root).as_posix(), path)
        for path in root.rglob("*.py")
        if "__pycache__" not in path.relative_to(root).parts and path.is_file()
    )
    if not files:
        return None
    manifest = hashlib.sha256()
    for relative, path in files:
        manifest.update(f"{sha256_file(path)}  {relative}\n".encode())
    return manifest.hexdigest()


def hash_files(paths: Iterable[str | Path]) -> tuple[dict[str, str], dict[str, str]]:
    """SHA-256 hex of each operator-chosen file, keyed by the path as given, and why any failed."""
    hashes: dict[str, str] = {}
    errors: dict[str, str] = {}
    for path in paths:
        key = str(path)
        try:
            hashes[key] = sha256_file(Path(path))
        except OSError as exc:
            errors[key] = exc.strerror or type(exc).__name__
    return hashes, errors


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _local_ipv4_from_fib_trie(proc: Path) -> list[str]:
    # The kernel marks each of the host's own addresses "/32 host LOCAL" under its "|-- a.b.c.d" leaf.
    try:
        lines = (proc / "net" / "fib_trie").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return []
    found: list[str] = []
    leaf: str | None = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("|-- "):
            leaf = stripped[4:].strip()
        elif stripped.startswith("/") and leaf is not None:
            if stripped.split()[-1] == "LOCAL" and leaf not in found:
                found.append(leaf)
        else:
            leaf = None
    return found


def _ipv6_from_if_inet6(proc: Path) -> list[str]:
    try:
        lines = (proc / "net" / "if_inet6").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return []
    found: list[str] = []
    for line in lines:
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                found.append(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
            except ValueError:
                continue
    return found


def _primary_addresses() -> list[str]:
    """Fallback without /proc: the source address the routing table picks, learned without sending."""
    found: list[str] = []
    # Documentation-range destinations: connect() on UDP only consults the routing table.
    for family, destination in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((destination, 9))
                found.append(probe.getsockname()[0])
        except OSError:
            continue
    return found
