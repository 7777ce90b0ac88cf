"""The integrity collectors' runners against the real tools on this host: nft in a private network
namespace whose ruleset the test changes, ClamAV with a signature database built by sigtool,
mokutil without EFI, and the whole integrity report."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime

from agent.collectors import IntegritySettings, collect_integrity
from agent.collectors.antivirus import collect_antivirus
from agent.collectors.firewall import collect_firewall
from agent.collectors.secureboot import collect_secure_boot
from tests.netns import nft, private_netns

INPUT_CHAIN = "{ type filter hook input priority 0; policy drop; }"


def test_firewall_of_a_namespace_is_hashed_and_its_changes_are_seen(tmp_path):
    with private_netns(tmp_path) as ns:
        empty = collect_firewall(["inet filter input"], netns=str(ns))
        assert empty["firewall_enabled"] is False and empty["firewall"]["missing_chains"] == ["inet filter input"]

        nft(ns, "add", "table", "inet", "filter")
        nft(ns, "add", "chain", "inet", "filter", "input", INPUT_CHAIN)
        nft(ns, "add", "rule", "inet", "filter", "input", "tcp", "dport", "22", "counter", "accept")
        guarded = collect_firewall(["inet filter input"], netns=str(ns))
        assert guarded["firewall_enabled"] is True and guarded["firewall"]["tool"] == "nft"
        assert guarded["firewall"]["chains"] == ["inet filter input"]
        assert guarded["firewall"]["required_chains_present"] is True
        assert collect_firewall(netns=str(ns))["firewall"]["ruleset_sha256"] == guarded["firewall"]["ruleset_sha256"]

        nft(ns, "add", "rule", "inet", "filter", "input", "tcp", "dport", "443", "accept")
        opened = collect_firewall(["inet filter input"], netns=str(ns))
        assert opened["firewall"]["ruleset_sha256"] != guarded["firewall"]["ruleset_sha256"]
    gone = collect_firewall(netns=str(tmp_path / "no-such-namespace"))
    assert gone["firewall"]["present"] is False and "nft" in gone["firewall"]["error"]


def test_clamav_reports_engine_and_the_age_of_a_real_database(tmp_path):
    database = tmp_path / "clamav"
    database.mkdir()
    (database / "daily.ndb").write_text("Strongroom.Test.Sig:0:*:7374726f6e67726f6f6d2d74657374\n")
    shutil.copy("/usr/share/common-licenses/GPL-2", database / "COPYING")
    subprocess.run(["sigtool", "--build=daily.cud", "--unsigned", "--cvd-version=27100", f"--datadir={database}"],
                   cwd=database, input=b"Strongroom test\n", check=True, capture_output=True)
    facts = collect_antivirus(database=database)["antivirus"]
    assert facts["present"] is True and facts["engine"] == "clamav" and facts["version"]
    assert facts["signature_version"] == 27100
    assert datetime.fromisoformat(facts["pattern_date"]).tzinfo is not None
    assert 0 <= facts["database_age_days"] < 1  # built moments ago
    assert facts["running"] is False  # no clamd on this box, and no systemd to ask
    without = collect_antivirus(database=tmp_path / "empty")["antivirus"]
    assert without["database_error"] == "no daily signature database installed" and "pattern_date" not in without


def test_secure_boot_is_unknown_without_efi_and_the_report_has_every_area(tmp_path):
    assert collect_secure_boot(efivars=tmp_path / "no-efivars") == {"secure_boot": "unknown"}
    integrity = collect_integrity(IntegritySettings(required_chains=("inet filter input",)))["integrity"]
    assert {"firewall", "antivirus", "agent_files", "secure_boot"} <= set(integrity)
    assert "collector_errors" not in integrity
    assert integrity["agent_files"]["install"] in ("wheel", "editable", "unrecorded")
