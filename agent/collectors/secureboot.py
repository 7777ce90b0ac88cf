"""Secure Boot as the VM reports it: ``enabled``, ``disabled`` or ``unknown`` (no EFI, no answer).

``mokutil --sb-state`` is asked first; without it the SecureBoot EFI variable is read directly
(4 attribute bytes, then one data byte: 1 enabled, 0 disabled). A claim like every other here:
only a TPM quote over PCR 7 (``integrity.attestation``) proves the boot state to the gateway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from agent.collectors.tools import DEFAULT_TIMEOUT_SECONDS, run_tool

SecureBoot = Literal["enabled", "disabled", "unknown"]
EFIVAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFIVARS_DIR = "/sys/firmware/efi/efivars"


def parse_mokutil(text: str) -> SecureBoot:
    """``mokutil --sb-state``: "SecureBoot enabled" / "SecureBoot disabled"; anything else is unknown
    (e.g. "EFI variables are not supported on this system")."""
    for line in text.lower().splitlines():
        words = line.split()
        if words[:1] == ["secureboot"] and len(words) >= 2 and words[1] in ("enabled", "disabled"):
            return words[1]  # type: ignore[return-value]
    return "unknown"


def parse_efivar(raw: bytes) -> SecureBoot:
    """The SecureBoot variable as efivarfs shows it: attributes (4 bytes) then the value byte."""
    if len(raw) < 5:
        return "unknown"
    return {1: "enabled", 0: "disabled"}.get(raw[-1], "unknown")  # type: ignore[return-value]


def collect_secure_boot(
    *, efivars: Path | str = EFIVARS_DIR, timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> dict[str, SecureBoot]:
    """``{"secure_boot": state}`` for this host."""
    output = run_tool(("mokutil", "--sb-state"), timeout=timeout)
    if output is not None:
        state = parse_mokutil(output.stdout + "\n" + output.stderr)
        if state != "unknown":
            return {"secure_boot": state}
    try:
        raw = (Path(efivars) / EFIVAR).read_bytes()
    except OSError:
        return {"secure_boot": "unknown"}
    return {"secure_boot": parse_efivar(raw)}
