"""Facts the agent presents: the documented shape, JSON-safe values, parsing of /proc, overrides."""

import hashlib
import json

import pytest

from agent.facts import (
    FactsError,
    agent_hash,
    boot_time,
    collect_facts,
    facts_from_env,
    ip_addresses,
    load_facts_file,
)

FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 10.1.0.0/24 2 0 2
           |-- 10.1.0.0
              /24 link UNICAST
           |-- 10.1.0.7
              /32 host LOCAL
        |-- 10.1.0.255
           /32 link BROADCAST
Local:
     |-- 10.1.0.7
        /32 host LOCAL
"""
IF_INET6 = """00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
"""


@pytest.fixture
def proc(tmp_path):
    root = tmp_path / "proc"
    (root / "net").mkdir(parents=True)
    (root / "net" / "fib_trie").write_text(FIB_TRIE)
    (root / "net" / "if_inet6").write_text(IF_INET6)
    (root / "stat").write_text("cpu  1 2 3\nbtime 1700000000\nprocesses 42\n")
    return root


def test_shape_follows_the_policy_schema(proc):
    facts = collect_facts(device_id="device-1", proc_root=proc)

    assert set(facts) == {"identity", "integrity"}
    identity, integrity = facts["identity"], facts["integrity"]
    assert identity["device_id"] == "device-1"
    assert isinstance(identity["hostname"], str) and identity["hostname"]
    assert identity["ip_addresses"] == ["10.1.0.7", "fd00::2"]
    assert identity["boot_time"] == "2023-11-14T22:13:20Z"
    assert identity["agent_version"]
    assert identity["os"]["name"]
    assert len(integrity["agent_hash"]) == 64
    assert integrity["file_hashes"] == {}


def test_facts_are_json_serialisable(proc):
    facts = collect_facts(device_id="d", proc_root=proc, extra={"integrity": {"attestation": {"tpm": True}}})

    assert json.loads(json.dumps(facts)) == facts


def test_real_host_collection_is_json_serialisable():
    facts = collect_facts()

    assert json.loads(json.dumps(facts)) == facts
    assert all(not address.startswith("127.") and address != "::1" for address in facts["identity"]["ip_addresses"])


def test_missing_proc_files_give_no_boot_time(tmp_path):
    assert boot_time(tmp_path) is None
    assert isinstance(ip_addresses(tmp_path), list)


def test_ip_addresses_drop_loopback_link_local_and_broadcast_only_entries(proc):
    assert ip_addresses(proc) == ["10.1.0.7", "fd00::2"]


def test_file_hashes_for_operator_paths_and_errors_for_missing_ones(tmp_path, proc):
    target = tmp_path / "app.conf"
    target.write_bytes(b"setting = 1\n")

    facts = collect_facts(proc_root=proc, hash_paths=[str(target), str(tmp_path / "gone")])

    integrity = facts["integrity"]
    assert integrity["file_hashes"] == {str(target): hashlib.sha256(b"setting = 1\n").hexdigest()}
    assert list(integrity["file_hash_errors"]) == [str(tmp_path / "gone")]


def test_agent_hash_is_stable_and_tracks_code_changes(tmp_path):
    package = tmp_path / "agent"
    (package / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("A = 1\n")
    (package / "b.py").write_text("B = 2\n")
    (package / "__pycache__" / "a.cpython-311.py").write_text("ignored")
    files = [("a.py", b"A = 1\n"), ("b.py", b"B = 2\n")]
    manifest = "".join(f"{hashlib.sha256(content).hexdigest()}  {name}\n" for name, content in files)

    first = agent_hash(package)
    assert first == hashlib.sha256(manifest.encode()).hexdigest()
    (package / "b.py").write_text("B = 3\n")
    assert agent_hash(package) != first


def test_sources_layer_in_order(tmp_path, proc):
    facts_file = tmp_path / "facts.json"
    facts_file.write_text(
        json.dumps(
            {
                "identity": {"cloud_provider": "aws", "region": "eu-west-1"},
                "integrity": {"firewall_enabled": True, "antivirus": {"running": True, "pattern_date": "2024-05-01"}},
            }
        )
    )

    facts = collect_facts(
        {"integrity": {"antivirus": {"running": False}}},
        proc_root=proc,
        collectors=[lambda: {"identity": {"cloud_provider": "gcp", "zone": "z1"}}],
        facts_file=facts_file,
        environ={"STRONGROOM_AGENT_REGION": "eu-central-1", "UNRELATED": "x"},
    )

    identity, integrity = facts["identity"], facts["integrity"]
    assert (identity["cloud_provider"], identity["zone"], identity["region"]) == ("aws", "z1", "eu-central-1")
    assert integrity["firewall_enabled"] is True
    assert integrity["antivirus"] == {"running": False, "pattern_date": "2024-05-01"}
    assert len(integrity["agent_hash"]) == 64


def test_env_overrides_only_cloud_identity():
    assert facts_from_env({"STRONGROOM_AGENT_INSTANCE_ID": "i-1", "STRONGROOM_AGENT_HOSTNAME": "x"}) == {
        "identity": {"instance_id": "i-1"}
    }
    assert facts_from_env({}) == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "JSON object"),
        ("{oops", "not valid JSON"),
        ('{"observed": {"source_ip": "10.0.0.1"}}', "not observed"),
        ('{"identity": "vm-1"}', "must be a JSON object"),
    ],
)
def test_facts_file_errors_name_the_problem(tmp_path, content, message):
    path = tmp_path / "facts.json"
    path.write_text(content)

    with pytest.raises(FactsError, match=message):
        load_facts_file(path)


def test_unreadable_facts_file(tmp_path):
    with pytest.raises(FactsError, match="cannot read facts file"):
        load_facts_file(tmp_path / "absent.json")
