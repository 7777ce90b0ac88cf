"""A syslog forwarder's host is a DNS name or an IP address. Anything else (empty labels, non-ASCII,
a label past 63 characters) was taken, and then killed the forwarder's task when its name would
not encode as IDNA; it is refused naming `host` instead."""

from __future__ import annotations

import pytest

from shared.commands_audit import ForwarderSpec
from shared.rpc import ProblemError


@pytest.mark.parametrize("host", ["a..b", "x\u00e9.example", "-a", "a" * 64, "siem example", "h\u0000"])
def test_a_host_that_is_no_name_or_address_is_refused(host):
    with pytest.raises(ProblemError) as caught:
        ForwarderSpec.model_validate({"name": "siem", "kind": "syslog_tcp", "host": host, "port": 514})
    assert caught.value.problem.field == "host"


@pytest.mark.parametrize("host", ["h", "siem.example.com", "10.0.0.7", "::1", "fe80::1:2"])
def test_names_and_addresses_are_taken_and_encode(host):
    spec = ForwarderSpec.model_validate({"name": "siem", "kind": "syslog_tls", "host": host, "port": 6514,
                                         "tls_server_name": "siem.example.com"})
    assert spec.host == host
    host.encode("idna")


@pytest.mark.parametrize("pem", ["\u0000\x8c\U0006b8f0", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"])
def test_a_tls_ca_that_is_no_certificate_is_refused(pem):
    """A CA that TLS cannot load (non-ASCII, not PEM) stopped the forwarder's task when it connected."""
    with pytest.raises(ProblemError) as caught:
        ForwarderSpec.model_validate({"name": "siem", "kind": "syslog_tls", "host": "h", "port": 6514, "tls_ca_pem": pem})
    assert caught.value.problem.field == "tls_ca_pem"
