"""Unit tests for the `strongroom` CLI, run against a small recording HTTP server in a thread."""

from __future__ import annotations

import json
import socket
import sys
import threading
import types
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.audit_chain import ChainHead
from strongroom.cli import main
from strongroom.client import GatewayClient

TOKEN = "srt_operator_7f3a9c"
TENANT = "t-acme"


class Gateway:
    """Stands in for the gateway's HTTP surface: canned answers, every request recorded."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], object] = {}
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                req = {
                    "method": self.command,
                    "path": parts.path,
                    "query": dict(urllib.parse.parse_qsl(parts.query)),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": json.loads(raw) if raw else None,
                }
                outer.requests.append(req)
                answer = outer.routes.get((self.command, parts.path), (404, {
                    "type": "about:blank", "title": "Not Found", "status": 404,
                    "detail": f"no route {parts.path}"}))
                if callable(answer):
                    answer = answer(req)
                status, body, *rest = answer
                headers = rest[0] if rest else {}
                data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                ctype = "application/problem+json" if status >= 400 else "application/json"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def route(self, method: str, path: str, status: int = 200, body=None, headers=None) -> None:
        self.routes[(method, path)] = (status, body, headers or {})

    @property
    def last(self) -> dict:
        return self.requests[-1]


@pytest.fixture
def gw(monkeypatch):
    monkeypatch.delenv("STRONGROOM_URL", raising=False)
    monkeypatch.delenv("STRONGROOM_TOKEN", raising=False)
    gateway = Gateway()
    gateway.thread.start()
    yield gateway
    gateway.server.shutdown()
    gateway.server.server_close()


@pytest.fixture
def run(gw, capsys):
    def _run(*argv: str, token: str | None = TOKEN):
        args = ["--url", gw.url]
        if token is not None:
            args += ["--token", token]
        code = main([*args, *argv])
        out, err = capsys.readouterr()
        return code, out, err
    return _run


def audit_chain(count: int, tenant: str = TENANT) -> list[dict]:
    head = ChainHead.genesis(tenant)
    records = []
    for n in range(1, count + 1):
        linked, head = head.append({
            "tenant_id": tenant, "event_id": f"e{n}", "time": f"2024-05-01T12:00:{n:02d}Z",
            "actor": {"kind": "user", "id": "alice", "auth": "token"},
            "action": "key.created", "resource": {"type": "key", "id": f"k{n}"},
            "outcome": "success", "reasons": [], "trace": [], "correlation_id": f"c{n}",
            "causation_id": None, "source_ip": "10.0.0.1", "details": {"algorithm": "AES-256"},
        })
        records.append(linked)
    return records


def serve_audit(gw: Gateway, records: list[dict], page_size: int = 2) -> None:
    def answer(req):
        after = int(req["query"].get("after", 0))
        rest = [r for r in records if r["seq"] > after]
        page = rest[:page_size]
        nxt = page[-1]["seq"] if len(rest) > page_size else None
        return 200, {"items": page, "next": nxt}
    gw.routes[("GET", "/v1/audit")] = answer
    # Checkpoints are checked too: this chain has none, and the gateway offers no signing key.
    gw.routes[("GET", "/v1/audit/checkpoints")] = lambda req: (200, {"items": [], "next": None})
    gw.routes[("GET", "/v1/audit/signing-key")] = lambda req: (200, {"current": None, "keys": []})
    gw.routes[("GET", "/v1/audit/status")] = lambda req: (200, {"last_seq": len(records)})


# ------------------------------------------------------------------ requests


def test_tenant_create_posts_name_and_admin_addresses_and_shows_no_secret(gw, run):
    gw.route("POST", "/v1/tenants", 201,
             {"tenant_id": "t-1", "name": "acme", "admin_username": "admin", "invitation": "sent"})
    code, out, err = run("tenant", "create", "acme", "--admin-email", "ann@acme.example",
                         "--second-admin", "dave", "dave@acme.example", token="provider-bootstrap")
    assert code == 0
    assert gw.last["method"] == "POST" and gw.last["path"] == "/v1/tenants"
    assert gw.last["body"] == {"name": "acme", "admin_email": "ann@acme.example",
                               "second_admin_username": "dave", "second_admin_email": "dave@acme.example"}
    assert gw.last["headers"]["authorization"] == "Bearer provider-bootstrap"
    assert gw.last["headers"]["content-type"] == "application/json"
    assert "tenant_id: t-1" in out and "invitation: sent" in out and "setup_token" not in out
    assert "own address" in err
    code, _, err = run("tenant", "create", "acme", token="provider-bootstrap")
    assert code != 0 and "--admin-email" in err


def test_tenants_offboard_then_status_shows_the_shredding_and_its_certificate_id(gw, run):
    gw.route("POST", "/v1/tenants/t-1/offboard", 200, {"tenant_id": "t-1", "status": "offboarding"})
    code, out, err = run("tenants", "offboard", "t-1")
    assert code == 0 and "status: offboarding" in out and "tenants status t-1" in err
    shred = {"status": "shredded", "keys_destroyed": 3, "kek_versions_shredded": [1], "wrapped_blobs_shredded": 4,
             "certificate_id": "tdc_1", "certificate": {"certificate_id": "tdc_1"}, "signature": "c2ln"}
    gw.route("GET", "/v1/tenants", 200, {"items": [
        {"tenant_id": "t-0", "status": "active"}, {"tenant_id": "t-1", "status": "offboarded", "offboarding": shred}]})
    code, out, _ = run("tenants", "status", "t-1")
    assert code == 0 and "status: offboarded" in out and "keys_destroyed: 3" in out and "tdc_1" in out
    assert "c2ln" not in out  # the signed certificate itself with --json
    code, out, _ = run("tenants", "status", "t-1", "--json")
    assert code == 0 and '"signature": "c2ln"' in out
    assert run("tenants", "status", "t-9")[0] == 1


def test_token_create_sends_scopes_and_expiry_and_json_prints_raw(gw, run):
    gw.route("POST", "/v1/tokens", 201, {"token_id": "tok-1", "token": "srt_new", "name": "ci"})
    code, out, err = run("token", "create", "--name", "ci", "--scope", "keys.read",
                         "--scope", "audit.read", "--expires-in", "3600", "--json")
    assert code == 0
    assert gw.last["body"] == {"name": "ci", "scopes": ["keys.read", "audit.read"],
                               "expires_in_seconds": 3600}
    assert json.loads(out) == {"token_id": "tok-1", "token": "srt_new", "name": "ci"}
    assert "shown once" in err


def test_token_list_and_revoke(gw, run):
    gw.route("GET", "/v1/tokens", 200, {"items": [
        {"token_id": "tok-1", "name": "ci", "user_id": "usr-1", "scopes": ["keys.read"], "revoked": False}]})
    gw.route("DELETE", "/v1/tokens/tok-1", 204)
    code, out, _ = run("token", "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["ID", "NAME", "USER", "SCOPES", "REVOKED"]
    assert row.split() == ["tok-1", "ci", "usr-1", "keys.read", "no"]
    code, out, _ = run("token", "revoke", "tok-1")
    assert code == 0 and gw.last["method"] == "DELETE" and out.strip() == "revoked token tok-1"


def test_credentials_echoed_by_other_endpoints_are_masked_even_in_json(gw, run):
    gw.route("GET", "/v1/tokens", 200, {"items": [{"token_id": "tok-1", "token": "leaked"}]})
    gw.route("GET", "/v1/devices/d1", 200, {"device_id": "d1", "admin_token": "leaked"})
    for argv in (["token", "list"], ["token", "list", "--json"], ["device", "show", "d1"],
                 ["device", "show", "d1", "--json"]):
        code, out, err = run(*argv)
        assert code == 0
        assert "leaked" not in out + err


def test_enroll_token_create_sends_only_given_fields(gw, run):
    gw.route("POST", "/v1/enrollment-tokens", 201,
             {"enrollment_id": "en-1", "token": "enr_once", "expires_at": "2024-05-02T00:00:00Z"})
    code, out, err = run("enroll-token", "create", "--ttl", "600", "--group", "db", "--group", "web")
    assert code == 0
    assert gw.last["body"] == {"ttl_seconds": 600, "groups": ["db", "web"]}
    assert "token: enr_once" in out and "shown once" in err
    run("enroll-token", "create")
    assert gw.last["body"] == {}


def test_device_list_show_and_revoke(gw, run):
    gw.route("GET", "/v1/devices", 200, {"items": [
        {"device_id": "d1", "hostname": "db-01", "state": "active", "groups": ["db", "prod"]}]})
    gw.route("POST", "/v1/devices/d1/revoke", 200, {"device_id": "d1", "state": "revoked"})
    code, out, _ = run("device", "list")
    assert code == 0 and out.splitlines()[1].split() == ["d1", "db-01", "active", "db,prod"]
    code, out, _ = run("device", "revoke", "d1", "--reason", "host decommissioned")
    assert code == 0
    assert gw.last["body"] == {"reason": "host decommissioned"}


def test_ids_are_one_path_segment(gw, run):
    run("device", "show", "../tenants")
    assert gw.last["path"] == "/v1/devices/..%2Ftenants"


def test_key_create_defaults_and_flags(gw, run):
    gw.route("POST", "/v1/keys", 201, {"key_id": "k1", "name": "vol-a", "state": "active"})
    code, out, _ = run("key", "create", "vol-a")
    assert code == 0
    assert gw.last["body"] == {"name": "vol-a", "algorithm": "AES-256", "exportable": False,
                               "activate": True}
    assert "key_id: k1" in out
    run("key", "create", "vol-b", "--algorithm", "AES-128", "--volume", "vol-0042",
        "--exportable", "--rotation-period", "86400", "--inactive")
    assert gw.last["body"] == {"name": "vol-b", "algorithm": "AES-128", "volume": "vol-0042",
                               "exportable": True, "rotation_period_seconds": 86400,
                               "activate": False}


def test_key_list_show_rotate_state(gw, run):
    gw.route("GET", "/v1/keys", 200, {"items": [{"key_id": "k1", "name": "vol-a"}], "next": "k1"})
    gw.route("GET", "/v1/keys/k1", 200, {"key_id": "k1", "latest_version": 2, "versions": [
        {"version": 1, "state": "deactivated"}, {"version": 2, "state": "active"}]})
    gw.route("POST", "/v1/keys/k1/rotate", 200, {"key_id": "k1", "latest_version": 3})
    gw.route("POST", "/v1/keys/k1/state", 200, {"key_id": "k1", "state": "suspended"})

    code, out, err = run("key", "list", "--limit", "1", "--after", "k0")
    assert code == 0 and gw.last["query"] == {"limit": "1", "after": "k0"}
    assert "--after k1" in err
    run("key", "list")
    assert gw.last["query"] == {}

    code, out, _ = run("key", "show", "k1")
    assert "latest_version: 2" in out and "  - version=2, state=active" in out

    run("key", "rotate", "k1", "--reason", "scheduled")
    assert gw.last["body"] == {"reason": "scheduled"}

    code, out, _ = run("key", "state", "k1", "suspend", "--reason", "incident 42")
    assert code == 0 and gw.last["body"] == {"action": "suspend", "reason": "incident 42"}


def test_policy_put_creates_or_versions_and_list_show_delete(gw, run, tmp_path):
    doc = {"name": "prod-db", "rules": [{"effect": "allow", "when": {"group": "db"}}]}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    gw.route("POST", "/v1/policies", 201, {"policy_id": "p1", "version": 1})
    gw.route("PUT", "/v1/policies/p1", 200, {"policy_id": "p1", "version": 2})
    gw.route("GET", "/v1/policies", 200, {"items": [{"policy_id": "p1", "name": "prod-db",
                                                     "version": 2}]})
    gw.route("GET", "/v1/policies/p1", 200, {"policy_id": "p1", "version": 2})
    gw.route("DELETE", "/v1/policies/p1", 204)

    assert run("policy", "put", str(path))[0] == 0
    assert (gw.last["method"], gw.last["path"], gw.last["body"]) == ("POST", "/v1/policies", doc)
    code, out, _ = run("policy", "put", str(path), "--id", "p1")
    assert code == 0 and (gw.last["method"], gw.last["path"]) == ("PUT", "/v1/policies/p1")
    assert "version: 2" in out
    assert run("policy", "list")[1].splitlines()[1].split() == ["p1", "prod-db", "2"]
    assert run("policy", "show", "p1", "--json")[1].strip().startswith("{")
    assert run("policy", "delete", "p1")[1].strip() == "deleted policy p1"


def test_policy_put_with_unreadable_or_invalid_file_is_a_usage_error(gw, run, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run("policy", "put", str(bad))
    assert code == 2 and "not valid JSON" in err
    code, _, err = run("policy", "put", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in err
    assert gw.requests == []


def test_audit_list_passes_filters_and_renders_table(gw, run):
    serve_audit(gw, audit_chain(3), page_size=10)
    code, out, _ = run("audit", "list", "--action", "key.created", "--actor", "alice",
                       "--outcome", "success", "--since", "2024-05-01T00:00:00Z", "--limit", "5")
    assert code == 0
    assert gw.last["query"] == {"action": "key.created", "actor": "alice", "outcome": "success",
                                "since": "2024-05-01T00:00:00Z", "limit": "5"}
    lines = out.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "ACTION", "ACTOR", "RESOURCE", "OUTCOME"]
    assert lines[1].split() == ["1", "2024-05-01T12:00:01Z", "key.created", "user:alice", "key:k1",
                                "success"]


def test_health_sends_no_token(gw, run):
    gw.route("GET", "/v1/health", 200, {"status": "ok", "services": {"keysvc": "ok"}})
    code, out, _ = run("health")
    assert code == 0 and "authorization" not in gw.last["headers"]
    assert out.splitlines() == ["status: ok", "services.keysvc: ok"]


def test_global_options_also_work_after_the_subcommand(gw, capsys):
    gw.route("GET", "/v1/keys", 200, {"items": []})
    code = main(["key", "list", "--json", "--url", gw.url, "--token", TOKEN])
    assert code == 0 and json.loads(capsys.readouterr().out) == {"items": []}


def test_url_and_token_default_from_the_environment(gw, monkeypatch, capsys):
    monkeypatch.setenv("STRONGROOM_URL", gw.url)
    monkeypatch.setenv("STRONGROOM_TOKEN", "from-env")
    gw.route("GET", "/v1/devices", 200, {"items": []})
    assert main(["device", "list"]) == 0
    assert gw.last["headers"]["authorization"] == "Bearer from-env"
    assert capsys.readouterr().out.strip() == "(none)"


# ------------------------------------------------------------------ errors


def test_problem_json_is_rendered_on_stderr_with_exit_1(gw, run):
    gw.route("POST", "/v1/keys", 422, {"type": "https://strongroom.dev/problems/validation",
                                       "title": "Invalid request", "status": 422,
                                       "detail": "name must not be empty", "field": "name"})
    code, out, err = run("key", "create", "x")
    assert code == 1 and out == ""
    assert err.strip() == "error: 422 Invalid request: name must not be empty (field: name)"
    assert TOKEN not in err


def test_problem_without_field_and_non_json_error_body(gw, run):
    gw.route("GET", "/v1/keys/nope", 404, {"title": "Not Found", "status": 404,
                                            "detail": "no key nope"})
    assert run("key", "show", "nope")[2].strip() == "error: 404 Not Found: no key nope"
    gw.routes[("GET", "/v1/keys/x")] = lambda req: (502, "upstream down")
    code, _, err = run("key", "show", "x")
    assert code == 1 and err.startswith("error: 502 Bad Gateway")


def test_malformed_json_from_the_gateway_is_an_error_not_a_traceback(gw, run):
    gw.routes[("GET", "/v1/devices")] = lambda req: (200, b'{"items": [')
    code, out, err = run("device", "list")
    assert code == 1 and out == ""
    assert err.strip() == "error: 502 Bad Gateway: the gateway answered with malformed JSON"


def test_connection_refused_gives_a_clear_message(gw, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["--url", f"http://127.0.0.1:{port}", "--token", TOKEN, "key", "list"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot reach the gateway at http://127.0.0.1:{port}: connection refused" in err
    assert "strongroom dev" in err and TOKEN not in err


def test_redirects_are_not_followed_so_the_token_stays_put(gw, run):
    gw.route("GET", "/v1/keys", 302, None, {"Location": "http://attacker.invalid/steal"})
    code, _, err = run("key", "list")
    assert code == 1 and "302" in err
    assert len(gw.requests) == 1


@pytest.mark.parametrize("argv", [
    [],
    ["key"],
    ["key", "state", "k1", "explode", "--reason", "x"],
    ["key", "create", "k", "--algorithm", "DES"],
    ["token", "create"],
    ["token", "create", "--name", "n", "--scope", "keys.read", "--expires-in", "-5"],
    ["user", "grant", "u1"],
    ["settings", "set", "--small-team", "maybe"],
    ["device", "revoke", "d1"],
    ["serve", "mailsvc"],
])
def test_usage_errors_exit_2(gw, run, argv):
    assert run(*argv)[0] == 2
    assert gw.requests == []


def test_missing_token_and_bad_url_are_usage_errors(gw, run, capsys):
    code, _, err = run("key", "list", token=None)
    assert code == 2 and "STRONGROOM_TOKEN" in err
    assert main(["--url", "file:///etc/passwd", "--token", TOKEN, "key", "list"]) == 2
    assert gw.requests == []


def test_client_repr_hides_the_token():
    assert TOKEN not in repr(GatewayClient("http://user:pw@127.0.0.1:8400", TOKEN))
    assert "pw" not in repr(GatewayClient("http://user:pw@127.0.0.1:8400", TOKEN))


# ------------------------------------------------------------------ audit verify


def test_audit_verify_fetches_every_page_and_reports_the_head(gw, run):
    records = audit_chain(5)
    serve_audit(gw, records, page_size=2)
    code, out, _ = run("audit", "verify")
    assert code == 0
    pages = [r for r in gw.requests if r["path"] == "/v1/audit"]
    assert [r["query"]["after"] for r in pages] == ["0", "2", "4"]
    assert all(r["query"]["limit"] == "1000" for r in pages)
    assert out.splitlines()[0] == f"chain ok: 5 records, head seq 5 hash {records[-1]['hash']}"


def test_audit_verify_reports_an_altered_record(gw, run):
    records = audit_chain(4)
    records[2]["details"] = {"algorithm": "AES-128"}
    serve_audit(gw, records)
    code, out, _ = run("audit", "verify")
    assert code == 1
    assert out.strip() == "chain BROKEN at seq 3 (event e3): record at seq 3 was altered: hash mismatch"


def test_audit_verify_json_result(gw, run):
    records = audit_chain(3)
    del records[1]
    serve_audit(gw, records)
    code, out, _ = run("audit", "verify", "--json")
    result = json.loads(out)
    assert code == 1 and result["ok"] is False
    assert (result["first_bad_seq"], result["first_bad_event_id"]) == (3, "e3")
    assert "missing" in result["problem"]


def test_audit_verify_pins_genesis_so_a_missing_start_is_caught(gw, run):
    serve_audit(gw, audit_chain(4)[1:])
    code, out, _ = run("audit", "verify")
    assert code == 1 and out.startswith("chain BROKEN at seq 2 (event e2)")


def test_audit_verify_stops_when_the_cursor_does_not_advance(gw, run):
    gw.route("GET", "/v1/audit", 200, {"items": audit_chain(1), "next": 0})
    code, _, err = run("audit", "verify")
    assert code == 1 and "cursor did not advance" in err
    assert len([r for r in gw.requests if r["path"] == "/v1/audit"]) == 1


def test_audit_verify_from_file(gw, run, tmp_path):
    records = audit_chain(3)
    good = tmp_path / "audit.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    code, out, _ = run("audit", "verify", "--from-file", str(good))
    assert code == 0 and out.startswith("chain ok: 3 records, head seq 3")
    assert gw.requests == []

    records[0]["tenant_id"] = "t-other"
    bad = tmp_path / "tampered.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, out, _ = run("audit", "verify", "--from-file", str(bad))
    assert code == 1 and out.startswith("chain BROKEN at seq 1 (event e1):")

    junk = tmp_path / "junk.jsonl"
    junk.write_text(json.dumps(audit_chain(1)[0]) + "\n{oops\n")
    code, _, err = run("audit", "verify", "--from-file", str(junk))
    assert code == 1 and "line 2 is not JSON" in err


def test_audit_verify_fails_a_tail_shorter_than_the_reported_head_and_forwarder_cursors(gw, run):
    records = audit_chain(5)
    serve_audit(gw, records)
    gw.routes[("GET", "/v1/audit/status")] = lambda req: (200, {"tenant_id": TENANT, "last_seq": 6})
    gw.routes[("GET", "/v1/audit/forwarders")] = lambda req: (200, {"items": [{"forwarder_id": "fwd_1", "cursor": 7}]})
    code, out, _ = run("audit", "verify")
    assert code == 1, out
    assert "auditsvc reports head seq 6; forwarder fwd_1 has sent through seq 7" in out
    assert "missing seq 6-7" in out.splitlines()
    assert "unsigned tail: 5 record(s) after the newest signed checkpoint" in out.splitlines()
    code, out, _ = run("audit", "verify", "--json")
    result = json.loads(out)
    assert code == 1 and result["missing"] == [[6, 7]] and result["unsigned_tail"] == 5


def test_audit_verify_of_an_empty_log(gw, run):
    serve_audit(gw, [])
    code, out, _ = run("audit", "verify")
    assert code == 0 and out.strip() == "chain ok: 0 records (nothing to verify)"


# ------------------------------------------------------------------ delegated commands


def test_dev_and_serve_delegate_lazily(monkeypatch):
    calls = []
    dev = types.ModuleType("launch.dev")
    dev.run_dev = lambda **kw: calls.append(("dev", kw))
    serve = types.ModuleType("launch.serve")
    serve.run_service = lambda name: calls.append(("serve", name))
    monkeypatch.setitem(sys.modules, "launch.dev", dev)
    monkeypatch.setitem(sys.modules, "launch.serve", serve)

    assert main(["dev", "--port", "8500", "--data-dir", "/tmp/sr"]) == 0
    assert main(["dev", "--demo"]) == 0
    assert main(["serve", "keysvc"]) == 0
    assert calls == [("dev", {"port": 8500, "data_dir": "/tmp/sr", "demo": False}),
                     ("dev", {"port": 8400, "data_dir": None, "demo": True}),
                     ("serve", "keysvc")]


def test_bootstrap_names_the_second_admin(gw, run, monkeypatch):
    import io

    gw.route("POST", "/v1/auth/bootstrap", 201, {"tenant_id": "provider", "username": "root"})
    monkeypatch.setattr("sys.stdin", io.StringIO("vault-door-orchid-7291\n"))
    code, _, _ = run("account", "bootstrap", "--username", "root", "--password-stdin", "--email", "root@p.example",
                     "--second-admin", "pat", "pat@p.example", token="bootstrap")
    assert code == 0
    assert gw.last["body"] == {"username": "root", "password": "vault-door-orchid-7291", "email": "root@p.example",
                               "second_admin_username": "pat", "second_admin_email": "pat@p.example"}


def test_login_reads_the_password_from_stdin_and_keeps_the_session_in_a_profile(gw, run, monkeypatch, tmp_path, capsys):
    import io
    import os

    monkeypatch.setenv("STRONGROOM_CONFIG_DIR", str(tmp_path))
    gw.route("POST", "/v1/auth/login", 201, {"session_token": "sr_ses_once", "user_id": "usr-1", "username": "ann",
                                             "tenant_id": "ten-1", "mfa_enrolment_required": False})
    monkeypatch.setattr("sys.stdin", io.StringIO("vault-door-orchid-7291\n"))
    code, out, err = run("account", "login", "--tenant", "acme", "--username", "ann", "--totp", "123456",
                         "--password-stdin", "--profile", "ann", token=None)
    assert code == 0
    assert gw.last["body"] == {"username": "ann", "password": "vault-door-orchid-7291", "tenant": "acme", "totp": "123456"}
    # The session is not printed: it is kept in the profile's file, readable by its owner only.
    assert "sr_ses_once" not in out + err and "profile ann" in out
    stored = tmp_path / "profiles" / "ann.json"
    assert stored.stat().st_mode & 0o777 == 0o600 and json.loads(stored.read_text())["token"] == "sr_ses_once"
    # Later commands of that profile use it (its URL too); a token from the environment wins.
    gw.route("GET", "/v1/me", 200, {"username": "ann"})
    assert main(["--profile", "ann", "account", "whoami"]) == 0
    assert gw.last["headers"]["authorization"] == "Bearer sr_ses_once"
    monkeypatch.setenv("STRONGROOM_PROFILE", "ann")
    monkeypatch.setenv("STRONGROOM_TOKEN", "sr_env_token")
    assert main(["account", "whoami"]) == 0
    assert gw.last["headers"]["authorization"] == "Bearer sr_env_token"
    monkeypatch.delenv("STRONGROOM_TOKEN")
    # --print-session also shows it, once, for scripts that export it.
    monkeypatch.setattr("sys.stdin", io.StringIO("vault-door-orchid-7291\n"))
    capsys.readouterr()
    assert main(["--url", gw.url, "account", "login", "--username", "ann", "--password-stdin", "--print-session"]) == 0
    out, err = capsys.readouterr()
    assert "session_token: sr_ses_once" in out and "shown once" in err
    assert not os.path.exists(tmp_path / "profiles" / "default.json.tmp")


def test_user_commands_grant_confirm_and_list(gw, run):
    gw.route("POST", "/v1/users", 201, {"user_id": "usr-2", "username": "carol", "invitation": "sent",
                                        "pending_roles": [{"role": "key_custodian", "granted_by": "usr-1"}]})
    code, out, err = run("user", "create", "carol", "--email", "carol@acme.example", "--role", "key_custodian")
    assert code == 0 and gw.last["body"] == {"username": "carol", "roles": ["key_custodian"], "account": "person",
                                             "email": "carol@acme.example"}
    assert "invitation: sent" in out and "setup_token" not in out and "carol@acme.example" in err
    gw.route("POST", "/v1/users/usr-2/invitation", 200, {"user_id": "usr-2", "invitation": "sent"})
    code, out, err = run("user", "invite", "usr-2")
    assert code == 0 and gw.last["path"] == "/v1/users/usr-2/invitation" and "old setup token" in err
    gw.route("POST", "/v1/users/usr-2/roles/key_custodian/confirm", 200, {"user_id": "usr-2", "roles": ["key_custodian"]})
    code, out, _ = run("user", "confirm", "usr-2", "key_custodian")
    assert code == 0 and gw.last["path"] == "/v1/users/usr-2/roles/key_custodian/confirm"
    gw.route("GET", "/v1/users", 200, {"items": [{"user_id": "usr-2", "username": "carol", "roles": ["key_custodian"],
                                                  "pending_roles": [], "mfa_enrolled": True, "status": "active"}]})
    code, out, _ = run("user", "list")
    assert code == 0 and "carol" in out and "key_custodian" in out


def test_settings_set_small_team_waits_and_confirm_applies(gw, run):
    gw.route("PUT", "/v1/tenant/settings", 202, {"pending_change": {"change_id": "chg_1", "shown": {"small_team": True}}})
    code, out, _ = run("settings", "set", "--small-team", "on")
    assert code == 0 and gw.last["body"] == {"small_team": True} and "chg_1" in out
    gw.route("POST", "/v1/tenant/settings/changes/chg_1/confirm", 200, {"small_team": True, "pending_changes": []})
    code, out, _ = run("settings", "confirm", "chg_1")
    assert code == 0 and gw.last["path"] == "/v1/tenant/settings/changes/chg_1/confirm" and "small_team" in out


def test_password_change_reads_both_passwords_from_stdin_and_mfa_reset(gw, run, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("old-pass-phrase\nnew-pass-phrase\n"))
    gw.route("POST", "/v1/me/password", 204, None)
    code, out, _ = run("account", "password", "--password-stdin", "--totp", "123456")
    assert code == 0 and "sign in again" in out
    assert gw.last["body"] == {"current_password": "old-pass-phrase", "new_password": "new-pass-phrase", "totp": "123456"}
    gw.route("POST", "/v1/users/usr_1/mfa/reset", 202, {"user_id": "usr_1", "mfa_reset": {"requested_by": "usr_a"}})
    assert run("user", "mfa-reset", "usr_1")[0] == 0 and gw.last["path"] == "/v1/users/usr_1/mfa/reset"
    gw.route("POST", "/v1/users/usr_1/mfa/reset/confirm", 200, {"user_id": "usr_1", "mfa_enrolled": False})
    assert run("user", "mfa-reset-confirm", "usr_1")[0] == 0 and gw.last["path"].endswith("/mfa/reset/confirm")


def test_events_tail_reads_the_stream_with_the_bearer_and_no_read_timeout(gw, run, monkeypatch):
    opened = []
    real_open = GatewayClient._open

    def spy(self, req, *, timeout):
        opened.append((req.get_header("Accept"), timeout))
        return real_open(self, req, timeout=timeout)

    monkeypatch.setattr(GatewayClient, "_open", spy)
    stream = (b'event: approval.requested\ndata: {"approval_id": "apr-1", "occurred_at": "t1"}\n\n'
              b'event: gap\ndata: {}\n\n'
              b'event: approval.granted\ndata: {"approval_id": "apr-1", "comment": "ok", "secret": "s3"}\n\n')
    gw.route("GET", "/v1/events/stream", 200, stream)
    code, out, err = run("events", "tail", "--type", "approval.*", "--after", "ev-9", "--json")
    assert code == 0 and opened == [("text/event-stream", None)]
    assert gw.last["query"] == {"types": "approval.*", "last_event_id": "ev-9"}
    assert gw.last["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert [json.loads(line) for line in out.splitlines()] == [
        {"approval_id": "apr-1", "occurred_at": "t1"},
        {"approval_id": "apr-1", "comment": "ok", "secret": "<redacted>"}]
    assert "no longer all kept" in err


def test_service_account_token_requests_are_listed_confirmed_and_collected(gw, run):
    gw.route("GET", "/v1/token-requests", 200, {"items": [
        {"token_id": "tok-9", "name": "ci", "user_id": "usr-svc", "minted_by": "usr-a", "status": "pending",
         "confirmed_by": None}]})
    code, out, _ = run("token", "requests")
    header, row = out.splitlines()
    assert code == 0 and header.split()[:5] == ["ID", "NAME", "ACCOUNT", "REQUESTED_BY", "STATUS"]
    assert row.split()[:5] == ["tok-9", "ci", "usr-svc", "usr-a", "pending"]
    gw.route("POST", "/v1/token-requests/tok-9/confirm", 200, {"token_id": "tok-9", "status": "confirmed"})
    code, out, _ = run("token", "confirm", "tok-9")
    assert code == 0 and gw.last["method"] == "POST" and "token collect tok-9" in out
    gw.route("POST", "/v1/token-requests/tok-9/collect", 201, {"token_id": "tok-9", "token": "sr_svc_once"})
    code, out, err = run("token", "collect", "tok-9")
    assert code == 0 and "token: sr_svc_once" in out and "shown once" in err
