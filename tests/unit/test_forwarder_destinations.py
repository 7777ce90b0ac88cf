"""Which addresses forwarders may reach (issue 14 item 2): the rule, the provider allowlist, and
the check a name goes through (resolved by the system resolver, or a scripted one)."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from services.auditsvc.destinations import REFUSED, Allowed, judge, parse_allowlist, refusal
from services.auditsvc.senders import DestinationRefused, SendError, pinned_address
from services.auditsvc.settings import AuditSettings


def ip(text: str):
    return ipaddress.ip_address(text)


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("0.0.0.0", "unspecified"),
    ("10.0.0.1", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "cloud metadata"), ("169.254.1.1", "link-local"), ("100.100.100.200", "cloud metadata"),
    ("100.64.0.1", "not globally routable"), ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"),
    ("240.0.0.1", "private"), ("255.255.255.255", "private"), ("192.0.2.1", "private"), ("198.18.0.1", "private"),
    ("0.1.2.3", "private"),
    ("::1", "loopback"), ("::", "unspecified"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("fc00::1", "private"), ("fd12:3456::1", "private"), ("fd00:ec2::254", "cloud metadata"), ("ff02::1", "multicast"),
    ("2001:db8::1", "private"),
    # IPv4 inside IPv6: mapped, compatible, NAT64 — judged as the IPv4 address they reach
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:7f00:1", "loopback"), ("::ffff:169.254.169.254", "cloud metadata"),
    ("::ffff:10.0.0.1", "private"), ("::127.0.0.1", "loopback"), ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::a9fe:a9fe", "cloud metadata"), ("::ffff:0.0.0.0", "unspecified"), ("2002:7f00:1::1", "loopback"),
    ("2002:a00:1::", "private"),
])
def test_internal_addresses_are_refused_with_a_reason(address, reason):
    assert refusal(ip(address)) == reason


@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "100.63.255.255", "100.128.0.1", "172.32.0.1", "169.253.0.1",
    "2606:4700:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
])
def test_public_addresses_pass(address):
    assert refusal(ip(address)) is None


def test_one_refused_address_refuses_the_destination():
    assert judge([ip("8.8.8.8")], 443, ()).allowed
    verdict = judge([ip("8.8.8.8"), ip("127.0.0.1")], 443, ())
    assert not verdict.allowed and verdict.reason == "127.0.0.1 is loopback"
    assert not judge([], 443, ()).allowed


def test_the_allowlist_admits_networks_and_single_ports():
    allow = parse_allowlist("10.1.0.0/16, 127.0.0.1:6514, [fd00::/8]:514, ::1")
    assert allow == (Allowed(ipaddress.ip_network("10.1.0.0/16")), Allowed(ipaddress.ip_network("127.0.0.1/32"), 6514),
                     Allowed(ipaddress.ip_network("fd00::/8"), 514), Allowed(ipaddress.ip_network("::1/128")))
    assert judge([ip("10.1.2.3")], 1, allow).allowed and judge([ip("10.1.2.3")], 65535, allow).allowed
    assert not judge([ip("10.2.0.1")], 443, allow).allowed
    assert judge([ip("127.0.0.1")], 6514, allow).allowed
    assert not judge([ip("127.0.0.1")], 6515, allow).allowed  # the gateway's port is not the receiver's
    assert judge([ip("::ffff:127.0.0.1")], 6514, allow).allowed  # the same address, mapped
    assert judge([ip("fd00::5")], 514, allow).allowed and not judge([ip("fd00::5")], 80, allow).allowed
    assert judge([ip("::1")], 8080, allow).allowed
    # Allowing one internal address does not open another, nor the metadata service.
    assert not judge([ip("127.0.0.1"), ip("169.254.169.254")], 6514, allow).allowed
    assert judge([ip("127.0.0.1"), ip("8.8.8.8")], 6514, allow).reason == "allowlisted"


@pytest.mark.parametrize("entry", ["10.0.0.1/8", "10.0.0.1:0", "10.0.0.1:70000", "10.0.0.1:x", "[::1", "[::1]514",
                                   "collector.example", "10.0.0.0/33", "[10.0.0.1]:514:1"])
def test_a_malformed_allowlist_entry_is_refused_naming_it(entry):
    with pytest.raises(ValueError, match="allowlist entry"):
        parse_allowlist(f"8.8.8.8, {entry}")


def test_the_allowlist_comes_from_the_environment_and_is_checked_at_start(monkeypatch):
    monkeypatch.setenv("STRONGROOM_AUDITSVC_FORWARDER_ALLOW", "127.0.0.1:6514")
    assert AuditSettings().forwarder_allowlist == (Allowed(ipaddress.ip_network("127.0.0.1/32"), 6514),)
    monkeypatch.delenv("STRONGROOM_AUDITSVC_FORWARDER_ALLOW")
    assert AuditSettings().forwarder_allowlist == ()
    with pytest.raises(ValidationError):
        AuditSettings(forwarder_allow="localhost")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1",
                                  "0x7f000001", "::1", "[::1]", "::ffff:127.0.0.1", "0.0.0.0", "0"])
async def test_names_and_spellings_of_loopback_are_refused_through_the_system_resolver(host):
    with pytest.raises(DestinationRefused) as caught:
        await pinned_address(host, 80, allow=())
    assert str(caught.value) == REFUSED and host.strip("[]") not in str(caught.value)


async def test_a_name_is_resolved_once_and_pinned_to_the_address_checked():
    calls: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return ["93.184.216.34", "2606:2800:220:1::1"]

    assert await pinned_address("collector.example", 6514, allow=(), resolve=resolve) == "93.184.216.34"
    assert calls == [("collector.example", 6514)]


async def test_a_name_answering_public_and_internal_addresses_is_refused():
    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(DestinationRefused) as caught:
        await pinned_address("collector.example", 443, allow=(), resolve=resolve)
    assert caught.value.detail == "10.0.0.7 is private" and "10.0.0.7" not in str(caught.value)


async def test_a_name_that_does_not_resolve_is_a_generic_failure_not_a_refusal():
    async def resolve(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    with pytest.raises(SendError) as caught:
        await pinned_address("nowhere.invalid", 443, allow=(), resolve=resolve)
    assert not isinstance(caught.value, DestinationRefused)
    assert str(caught.value) == "the destination did not resolve" and "Name or service" in caught.value.detail


async def test_an_allowlisted_name_resolving_to_loopback_passes():
    assert await pinned_address("localhost", 6514, allow=parse_allowlist("127.0.0.1:6514")) == "127.0.0.1"
