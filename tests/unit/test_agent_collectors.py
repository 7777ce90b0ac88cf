"""Integrity collectors' parsers on outputs captured from the real tools (nftables 1.0.6,
iptables 1.8.9 nf_tables, ClamAV 1.4.6, mokutil on a host without EFI), and the pure fact shapes."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.collectors.antivirus import (
    antivirus_facts,
    daemon_in_proc,
    daily_database,
    database_dir,
    parse_clamscan_version,
    parse_sigtool_info,
    parse_systemctl_is_active,
)
from agent.collectors.firewall import RulesetError, chain_list, parse_iptables_save, parse_nft_json
from agent.collectors.secureboot import parse_efivar, parse_mokutil
from agent.collectors.selfcheck import collect_agent_files

OUTPUTS = Path(__file__).parent / "collector_outputs"


def output(name: str) -> str:
    return (OUTPUTS / name).read_text()


def test_nft_hash_ignores_handles_creation_order_and_counters_but_not_rule_changes():
    # Captured from `nft -j list ruleset` in fresh network namespaces: the same ruleset built in
    # another order (set first, elements one by one, a chain created and deleted, a rule inserted
    # at the head) and with a packet counted, then one with a different port.
    first, reordered = parse_nft_json(output("nft_filter.json")), parse_nft_json(output("nft_filter_reordered.json"))
    changed = parse_nft_json(output("nft_filter_changed.json"))
    assert '"packets": 1' in output("nft_filter_reordered.json")
    assert first.sha256 == reordered.sha256
    assert changed.sha256 != first.sha256
    assert [(c.name, c.hook, c.policy, c.rules) for c in first.chains] == [("inet filter input", "input", "drop", 2)]
    assert first.enabled and first.tool == "nft"


def test_nft_rule_order_inside_a_chain_changes_the_hash():
    document = json.loads(output("nft_filter.json"))
    rules = [i for i, item in enumerate(document["nftables"]) if "rule" in item]
    items = document["nftables"]
    items[rules[0]], items[rules[1]] = items[rules[1]], items[rules[0]]
    assert parse_nft_json(json.dumps(document)).sha256 != parse_nft_json(output("nft_filter.json")).sha256


def test_an_empty_ruleset_is_not_an_enabled_firewall_and_required_chains_are_missing():
    empty = parse_nft_json(output("nft_empty.json"))
    facts = empty.facts(chain_list("inet filter input, inet  filter forward"))
    assert facts["firewall_enabled"] is False
    assert facts["firewall"] == {
        "present": True, "tool": "nft", "ruleset_sha256": empty.sha256, "chains": [],
        "required_chains": ["inet filter input", "inet filter forward"],
        "missing_chains": ["inet filter input", "inet filter forward"], "required_chains_present": False}
    present = parse_nft_json(output("nft_filter.json")).facts(["inet filter input"])["firewall"]
    assert present["missing_chains"] == [] and present["required_chains_present"] is True


def test_iptables_save_hash_ignores_counters_comments_and_whitespace():
    plain, counted = parse_iptables_save(output("iptables_save.txt")), parse_iptables_save(
        output("iptables_save_counters.txt"))
    assert "[1:60]" in output("iptables_save_counters.txt")
    assert plain.sha256 == counted.sha256
    spaced = output("iptables_save.txt").replace(" -j ACCEPT", "   -j   ACCEPT").replace("# Generated", "#  Other")
    assert parse_iptables_save(spaced).sha256 == plain.sha256
    tail_counters = output("iptables_save.txt").replace("-j DROP", "-j DROP -c 5 300")
    assert parse_iptables_save(tail_counters).sha256 == plain.sha256
    changed = output("iptables_save.txt").replace("--dport 22", "--dport 2222")
    assert parse_iptables_save(changed).sha256 != plain.sha256
    assert [(c.name, c.hook, c.policy, c.rules) for c in plain.chains] == [
        ("ip filter FORWARD", "forward", "accept", 0), ("ip filter INPUT", "input", "drop", 2),
        ("ip filter LOGDROP", None, None, 1), ("ip filter OUTPUT", "output", "accept", 0)]
    assert plain.enabled and plain.tool == "iptables"
    assert not parse_iptables_save(output("iptables_save_empty.txt")).enabled


@pytest.mark.parametrize("text", ["not json", "[]", '{"nftables": [{"rule": 1}]}', '{"nftables": [1]}'])
def test_unreadable_nft_output_is_refused(text):
    with pytest.raises(RulesetError):
        parse_nft_json(text)


def test_a_rule_outside_a_table_is_refused():
    with pytest.raises(RulesetError, match="outside a table"):
        parse_iptables_save("-A INPUT -j ACCEPT\n")


def test_clamscan_version_with_and_without_a_database():
    assert parse_clamscan_version(output("clamscan_version_nodb.txt")) == {"version": "1.4.6"}
    # The form clamscan prints once a daily database is loaded (ClamAV's documented format).
    assert parse_clamscan_version("ClamAV 1.4.6/27100/Fri Dec  5 08:23:15 2026\n") == {
        "version": "1.4.6", "signature_version": 27100, "pattern_date": "2026-12-05T08:23:15Z"}
    assert parse_clamscan_version("") == {} and parse_clamscan_version("something else") == {}


def test_sigtool_info_gives_the_database_build_time():
    # sigtool --info on a daily database built on this box with `sigtool --build --unsigned`.
    assert parse_sigtool_info(output("sigtool_info_daily_cud.txt")) == {
        "signature_version": 27100, "pattern_date": "2026-12-05T02:50:00Z"}
    assert parse_sigtool_info(output("sigtool_info_missing.txt")) == {}


def test_systemctl_without_systemd_gives_no_answer_and_with_it_one_state_per_unit():
    assert parse_systemctl_is_active(output("systemctl_is_active_no_systemd.txt")) is None
    assert parse_systemctl_is_active("active\ninactive\n") == {
        "clamav-daemon": "active", "clamav-freshclam": "inactive"}
    assert parse_systemctl_is_active("active\n") is None


def test_antivirus_facts_running_age_and_missing_database():
    now = datetime(2026, 12, 7, 2, 50, tzinfo=UTC)
    facts = antivirus_facts(version={"version": "1.4.6"}, database={"pattern_date": "2026-12-05T02:50:00Z"},
                            units={"clamav-daemon": "active", "clamav-freshclam": "active"}, daemon_process=False,
                            now=now)
    assert facts["running"] is True and facts["database_age_days"] == 2.0 and facts["present"] is True
    bare = antivirus_facts(version={"version": "1.4.6"}, database={}, units=None, daemon_process=False, now=now,
                           database_error="no daily signature database installed")
    assert bare == {"present": True, "engine": "clamav", "running": False, "version": "1.4.6",
                    "database_error": "no daily signature database installed"}
    assert antivirus_facts(version={}, database={}, units=None, daemon_process=True, now=now)["running"] is True


def test_daemon_found_in_proc_and_database_directory_from_freshclam_conf(tmp_path):
    proc = tmp_path / "proc"
    for pid, comm in (("1", "init"), ("42", "clamd"), ("self", "python")):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "comm").write_text(comm + "\n")
    assert daemon_in_proc(proc) and not daemon_in_proc(proc, names=("freshclam",))
    conf = tmp_path / "freshclam.conf"
    conf.write_text('# comment\nDatabaseDirectory "/srv/clamav"\n')
    assert database_dir(conf) == Path("/srv/clamav")
    assert database_dir(tmp_path / "absent.conf") == Path("/var/lib/clamav")
    assert daily_database(tmp_path) is None
    (tmp_path / "daily.cvd").write_bytes(b"x")
    assert daily_database(tmp_path) == tmp_path / "daily.cvd"


def test_secure_boot_states():
    assert parse_mokutil(output("mokutil_sb_state_no_efi.txt")) == "unknown"
    assert parse_mokutil("SecureBoot enabled\n") == "enabled"
    assert parse_mokutil("SecureBoot disabled\nPlatform is in Setup Mode\n") == "disabled"
    assert parse_efivar(bytes([6, 0, 0, 0, 1])) == "enabled"
    assert parse_efivar(bytes([6, 0, 0, 0, 0])) == "disabled"
    assert parse_efivar(b"") == "unknown"


def _install(site: Path, files: dict[str, bytes], *, editable: bool = False) -> importlib.metadata.Distribution:
    """A distribution laid out as pip installs a wheel: the files and a dist-info RECORD of their hashes."""
    info = site / "strongroom_probe-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: strongroom-probe\nVersion: 1.0\n")
    lines = []
    for name, content in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(content)
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        lines.append(f"{name},sha256={digest},{len(content)}")
    if editable:
        (info / "direct_url.json").write_text(json.dumps({"url": "file:///src", "dir_info": {"editable": True}}))
    lines.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(lines) + "\n")
    return importlib.metadata.PathDistribution(info)


def test_agent_files_checked_against_record(tmp_path):
    dist = _install(tmp_path, {"agent/cli.py": b"print('hi')\n", "agent/facts.py": b"x = 1\n", "shared/log.py": b""})
    assert collect_agent_files(dist)["agent_files"] == {
        "install": "wheel", "ok": True, "checked": 3, "modified": [], "missing": []}
    (tmp_path / "agent" / "facts.py").write_text("x = 2\n")
    (tmp_path / "shared" / "log.py").unlink()
    assert collect_agent_files(dist)["agent_files"] == {
        "install": "wheel", "ok": False, "checked": 3, "modified": ["agent/facts.py"], "missing": ["shared/log.py"]}


def test_an_editable_install_checks_nothing_of_the_source_and_says_so(tmp_path):
    dist = _install(tmp_path, {"__editable__.strongroom_probe-1.0.pth": b"/src\n"}, editable=True)
    facts = collect_agent_files(dist)["agent_files"]
    assert facts["install"] == "editable" and facts["ok"] is None and facts["checked"] == 1
    assert "not the agent's source" in facts["note"]
    absent = collect_agent_files(name="strongroom-no-such-distribution")["agent_files"]
    assert absent["install"] == "absent" and absent["ok"] is None
