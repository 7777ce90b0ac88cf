"""The facts a policy may test: documentation and optional validation of an agent's report.

Each fact reaches policysvc with a provenance (``shared/provenance.py``): what the agent reports
is ``claimed``; the same names proved by evidence the gateway verified are ``cloud`` or
``attested`` (the verified value replaces the claimed one); ``observed.*`` and
``identity.device_id`` are ``observed``. "source" below says where a fact comes from when nothing
proves it.

Facts an agent reports (``identity``, ``integrity``) and the gateway adds (``observed``); a
condition names one by dotted path, e.g. ``integrity.antivirus.pattern_date``. Keys that contain
dots go in brackets as JSON strings, list items by index: ``integrity.file_hashes["/etc/hosts"]``,
``identity.ip_addresses[0]``. Documents may carry extra keys; the models below list the ones we
document, see ``Facts``.

==========================================  =========================  ==========================
fact                                        type                       source
==========================================  =========================  ==========================
identity.device_id                          str                        agent
identity.cloud_provider/account/region      str                        agent (cloud metadata)
identity.zone/instance_id/image_id          str                        agent (cloud metadata)
identity.hostname                           str                        agent
identity.ip_addresses                       list[str]                  agent
identity.boot_time                          RFC 3339 time              agent
identity.agent_version                      version "1.10.0"           agent
integrity.firewall_enabled                  bool                       agent (input chain drops)
integrity.firewall.present                  bool (a ruleset was read)  agent collector
integrity.firewall.tool                     "nft" or "iptables"        agent collector
integrity.firewall.ruleset_sha256           sha256 hex (canonical)     agent collector
integrity.firewall.chains                   list["family table chain"] agent collector
integrity.firewall.missing_chains           list[str]                  agent collector
integrity.firewall.required_chains_present  bool                       agent collector
integrity.antivirus.present                 bool (ClamAV installed)    agent collector
integrity.antivirus.running                 bool                       agent
integrity.antivirus.version                 version "1.4.6"            agent collector
integrity.antivirus.pattern_date            RFC 3339 date or time      agent
integrity.antivirus.database_age_days       number                     agent collector
integrity.agent_hash                        sha256 hex                 agent
integrity.agent_files.ok                    bool, null if unverifiable agent collector (RECORD)
integrity.agent_files.install               wheel/editable/unrecorded  agent collector
integrity.agent_files.modified/missing      list[str] (file names)     agent collector
integrity.secure_boot                       enabled/disabled/unknown   agent collector (mokutil)
integrity.file_hashes[path]                 sha256 hex                 agent
integrity.attestation.<claim>               any JSON                   agent (attestation)
observed.source_ip                          IP address                 gateway
observed.request_time                       RFC 3339 time              gateway
observed.device_id                          str                        gateway (authenticated)
volume.id                                   str                        gateway (the request's volume)
volume.registered                           bool                       gateway (volume registry)
volume.key_id / key_matches                 str / bool                 gateway (volume registry)
volume.luks_uuid_matches                    bool                       gateway (volume registry)
volume.bound_instance / bound_image         str                        gateway (bound at registration)
volume.bound_device_id                      str                        gateway (bound at registration)
volume.binding_provenance                   attested|cloud|observed    gateway (the binding's evidence)
volume.instance / image                     str                        gateway (requesting device)
volume.attached_to_bound_instance           bool                       gateway (computed)
volume.attached_to_bound_image              bool                       gateway (computed, images known)
==========================================  =========================  ==========================

``volume.*`` is set only on a key request that names a volume (the agent's ``volume`` field), all
of it ``observed``: whatever an agent claims under ``volume`` is dropped. The instance is the one
the device's enrolment evidence proved (``binding_provenance``), else ``device:<device id>``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FACT_ROOTS = ("identity", "integrity", "observed", "volume")


class _FactGroup(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class AntivirusFacts(_FactGroup):
    present: bool | None = None
    running: bool | None = None
    version: str | None = None
    pattern_date: str | None = Field(None, description="RFC 3339 date or time of the signatures")
    database_age_days: float | None = None


class FirewallFacts(_FactGroup):
    present: bool | None = None
    tool: str | None = None
    ruleset_sha256: str | None = Field(None, description="SHA-256 of the canonical ruleset")
    chains: list[str] = Field(default_factory=list, description='"family table chain" names')
    missing_chains: list[str] = Field(default_factory=list)
    required_chains_present: bool | None = None


class AgentFilesFacts(_FactGroup):
    install: str | None = Field(None, description="wheel, editable, unrecorded or absent")
    ok: bool | None = Field(None, description="null when the install records no hashes of the agent's code")
    modified: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)


class IdentityFacts(_FactGroup):
    device_id: str | None = None
    cloud_provider: str | None = None
    account: str | None = None
    region: str | None = None
    zone: str | None = None
    instance_id: str | None = None
    image_id: str | None = None
    hostname: str | None = None
    ip_addresses: list[str] = []
    boot_time: str | None = Field(None, description="RFC 3339")
    agent_version: str | None = Field(None, description="semantic version")


class IntegrityFacts(_FactGroup):
    firewall_enabled: bool | None = None
    firewall: FirewallFacts | None = None
    antivirus: AntivirusFacts | None = None
    agent_hash: str | None = None
    agent_files: AgentFilesFacts | None = None
    secure_boot: str | None = Field(None, description="enabled, disabled or unknown (claimed; PCR 7 proves it)")
    file_hashes: dict[str, str] = Field(default_factory=dict, description="path -> sha256 hex")
    attestation: dict[str, Any] = Field(default_factory=dict, description="attestation claims")


class ObservedFacts(_FactGroup):
    """Set by the gateway from the request itself; an agent cannot choose these."""

    source_ip: str | None = None
    request_time: str | None = Field(None, description="RFC 3339")
    device_id: str | None = None


class VolumeFacts(_FactGroup):
    """Set by the gateway when a key request names a volume; an agent cannot choose these."""

    id: str | None = None
    registered: bool | None = None
    bound_instance: str | None = None
    instance: str | None = None
    attached_to_bound_instance: bool | None = None


class Facts(_FactGroup):
    identity: IdentityFacts = IdentityFacts()
    integrity: IntegrityFacts = IntegrityFacts()
    observed: ObservedFacts = ObservedFacts()
    volume: VolumeFacts | None = None
