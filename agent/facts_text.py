"""`strongroom-agent facts` for people: every fact on one line with the provenance it will have.

Everything the agent collects or is told (collectors, the facts file, the environment) reaches
the gateway as ``claimed``. Evidence is different: the gateway verifies it and writes the facts
it proves over the claimed ones with a stronger label, as each provider documents
(``services/gateway/evidence/``): an AWS identity document is ``cloud`` (signed, not fresh), a
GCP token or an Azure attested document bound to the gateway's challenge is ``attested``, and so
is a TPM quote over the PCRs. The agent cannot know those values before the gateway verifies them,
so they are described, not listed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shared.provenance import GATEWAY_OBSERVED, fact_path, leaves, lookup, prefixes

MAX_VALUE_CHARS = 100
EVIDENCE = {
    "aws": ("an AWS instance identity document", "identity facts it proves", "cloud"),
    "gcp": ("a GCP identity token bound to the gateway's challenge", "identity facts it proves", "attested"),
    "azure": ("an Azure attested document bound to the gateway's challenge", "identity facts it proves", "attested"),
    "tpm": ("a TPM quote bound to the gateway's challenge", "integrity.pcr and boot counter facts it proves", "attested"),
}


def render_facts(facts: Mapping[str, Any], *, device_id: str | None, evidence: str | None) -> str:
    """A readable table of `facts` (the JSON the agent sends), headed by what evidence adds."""
    lines = [f"device    {device_id or 'not enrolled'}"]
    if evidence in EVIDENCE:
        what, which, label = EVIDENCE[evidence]
        lines.append(f"evidence  {what}: the gateway labels the {which} {label!r}, over the claims below")
    else:
        lines.append("evidence  none configured: the gateway labels every fact below 'claimed'")
    # The gateway replaces what it observes itself (the device id) whatever the agent sends.
    rows = [(lookup(GATEWAY_OBSERVED, prefixes(keys)), fact_path(keys), _value(value)) for keys, value in leaves(facts)]
    width = max((len(path) for _, path, _ in rows), default=4)
    lines += ["", f"{'PROVENANCE':<11} {'FACT':<{width}}  VALUE"]
    lines += [f"{label:<11} {path:<{width}}  {value}" for label, path, value in rows]
    return "\n".join(lines)


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
