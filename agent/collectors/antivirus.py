"""ClamAV as the VM reports it: installed or not, daemon running, engine version, signature age.

Sources, each optional: ``systemctl is-active`` for the daemon and updater units (without systemd
as PID 1 it cannot answer, and a ``clamd`` process in /proc decides instead), ``clamscan
--version`` (``ClamAV 1.4.6``, or ``ClamAV 1.4.6/<daily>/<date>`` once a database is installed)
and ``sigtool --info`` on the daily database for its build time. No ClamAV at all is a fact,
``antivirus.present = false``, not an error. All of it is claimed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.collectors.tools import DEFAULT_TIMEOUT_SECONDS, find_tool, run_tool

UNITS = ("clamav-daemon", "clamav-freshclam")
DEFAULT_DATABASE_DIR = "/var/lib/clamav"
FRESHCLAM_CONF = "/etc/clamav/freshclam.conf"
DAILY_NAMES = ("daily.cld", "daily.cvd", "daily.cud")  # incremental, full, unsigned
DAEMON_NAMES = ("clamd",)
_VERSION = re.compile(r"^ClamAV (?P<engine>[0-9][^/\s]*)(?:/(?P<daily>\d+)/(?P<date>.+))?$")
_UNIT_STATES = frozenset({"active", "inactive", "failed", "activating", "deactivating", "reloading", "unknown",
                          "maintenance", "refreshing"})


def parse_clamscan_version(text: str) -> dict[str, Any]:
    """``clamscan --version``: engine version and, with a database, the daily version and its date."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    match = _VERSION.match(line)
    if match is None:
        return {}
    found: dict[str, Any] = {"version": match["engine"]}
    if match["daily"]:
        found["signature_version"] = int(match["daily"])
        with contextlib.suppress(ValueError):
            found["pattern_date"] = _iso(datetime.strptime(" ".join(match["date"].split()), "%a %b %d %H:%M:%S %Y")
                                         .replace(tzinfo=UTC))
    return found


def parse_sigtool_info(text: str) -> dict[str, Any]:
    """``sigtool --info FILE``: the database's version and build time (``05 Dec 2026 02:50 +0000``)."""
    fields = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    found: dict[str, Any] = {}
    if fields.get("version", "").isdigit():
        found["signature_version"] = int(fields["version"])
    if "build time" in fields:
        with contextlib.suppress(ValueError):
            found["pattern_date"] = _iso(datetime.strptime(fields["build time"], "%d %b %Y %H:%M %z"))
    return found


def parse_systemctl_is_active(text: str, units: Iterable[str] = UNITS) -> dict[str, str] | None:
    """``systemctl is-active U1 U2``: one state word per unit, in order; None if systemd did not answer."""
    words = [line.strip() for line in text.splitlines() if line.strip()]
    units = list(units)
    if len(words) != len(units) or not all(word in _UNIT_STATES for word in words):
        return None
    return dict(zip(units, words, strict=True))


def daemon_in_proc(proc_root: Path | str = "/proc", names: Iterable[str] = DAEMON_NAMES) -> bool:
    """Whether a process with one of `names` as its command name runs, for hosts without systemd."""
    wanted = set(names)
    for entry in Path(proc_root).iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text(errors="replace").strip() in wanted:
                    return True
            except OSError:
                continue
    return False


def database_dir(conf: Path | str = FRESHCLAM_CONF) -> Path:
    """freshclam's DatabaseDirectory, or the Debian default."""
    try:
        for line in Path(conf).read_text(errors="replace").splitlines():
            words = line.split(None, 1)
            if len(words) == 2 and words[0] == "DatabaseDirectory":
                return Path(words[1].strip().strip('"'))
    except OSError:
        pass
    return Path(DEFAULT_DATABASE_DIR)


def daily_database(directory: Path) -> Path | None:
    """The newest daily database file in `directory`."""
    found = [directory / name for name in DAILY_NAMES if (directory / name).is_file()]
    return max(found, key=lambda path: path.stat().st_mtime) if found else None


def antivirus_facts(
    *, version: Mapping[str, Any], database: Mapping[str, Any], units: Mapping[str, str] | None,
    daemon_process: bool, now: datetime, database_error: str | None = None,
) -> dict[str, Any]:
    """The ``integrity.antivirus`` object from what the tools said (pure)."""
    running = units.get("clamav-daemon") == "active" if units is not None else daemon_process
    facts: dict[str, Any] = {"present": True, "engine": "clamav", "running": running, **version, **database}
    if units is not None:
        facts["units"] = dict(units)
    if "pattern_date" in facts:
        built = datetime.fromisoformat(facts["pattern_date"].replace("Z", "+00:00"))
        facts["database_age_days"] = round((now - built).total_seconds() / 86400, 2)
    elif database_error:
        facts["database_error"] = database_error
    return facts


def collect_antivirus(
    *, database: Path | str | None = None, proc_root: Path | str = "/proc", timeout: float = DEFAULT_TIMEOUT_SECONDS,
    now: datetime | None = None,
) -> dict[str, Any]:
    """``{"antivirus": {...}}`` for this host; `database` names the directory of the daily database."""
    if find_tool("clamscan") is None and find_tool("clamd") is None:
        return {"antivirus": {"present": False, "running": False}}
    scanned = run_tool(("clamscan", "--version"), timeout=timeout)
    version = parse_clamscan_version(scanned.stdout) if scanned is not None and scanned.ok else {}
    daily = daily_database(Path(database) if database else database_dir())
    info: dict[str, Any] = {}
    error = "no daily signature database installed"
    if daily is not None:
        signed = run_tool(("sigtool", f"--info={daily}"), timeout=timeout)
        if signed is not None and signed.ok:
            info = parse_sigtool_info(signed.stdout)
        else:
            error = f"sigtool could not read {daily.name}" + (f": {signed.reason()}" if signed is not None else "")
    states = run_tool(("systemctl", "is-active", *UNITS), timeout=timeout)
    units = parse_systemctl_is_active(states.stdout) if states is not None else None
    return {"antivirus": antivirus_facts(
        version=version, database=info, units=units, daemon_process=units is None and daemon_in_proc(proc_root),
        now=now or datetime.now(UTC), database_error=error,
    )}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
