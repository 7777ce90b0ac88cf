"""Where a forwarder may send, the pure part: which resolved addresses are refused, and the
provider's allowlist that lets named ones through.

A forwarder's host is the tenant's choice, and auditsvc connects from inside the provider's
network: left alone, a tenant could make it talk to the provider's loopback services, private
networks or a cloud metadata endpoint (SSRF), and read what answered in the forwarder's status.
So every address a destination resolves to is checked before auditsvc connects, and the
connection goes to the address that was checked (see `senders.py`). Refused: loopback, private,
link-local, multicast, reserved, unspecified, anything else not globally routable (shared
address space 100.64.0.0/10, documentation ranges, ...) and the cloud metadata addresses;
IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6 addresses are judged by the IPv4 address they carry.

The provider's allowlist (`STRONGROOM_AUDITSVC_FORWARDER_ALLOW`, never settable by a tenant) is
a comma-separated list of entries `ADDRESS[/PREFIX][:PORT]`, IPv6 in brackets when a port is
given: `10.1.2.3:6514`, `10.20.0.0/16`, `[fd00::/8]:514`, `::1`. An entry without a port allows
every port of its addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# What tenants are told, whatever the reason: never which rule, address or name matched.
REFUSED = "destination refused"

# Instance metadata services: AWS/GCP/Azure/OpenStack/Oracle, AWS over IPv6, Alibaba Cloud.
# The first two are link-local anyway and Alibaba's is shared address space; named all the same,
# so a change in what `ipaddress` considers global cannot let them through.
METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class Allowed:
    """One allowlist entry: a network and, optionally, the one port allowed on it."""

    network: Network
    port: int | None = None

    def admits(self, address: Address, port: int) -> bool:
        return address.version == self.network.version and address in self.network and self.port in (None, port)


@dataclass(frozen=True)
class Verdict:
    """A decision on one destination, with its reason for the service log (never for the tenant)."""

    allowed: bool
    reason: str


def embedded_ipv4(address: Address) -> Address:
    """The IPv4 address an IPv6 address carries (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d,
    NAT64 64:ff9b::a.b.c.d, 6to4 2002:AABB:CCDD::), else the address itself; judged as what it reaches."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = address.ipv4_mapped or address.sixtofour
        if carried is not None:
            return carried
        value = int(address)
        if address in _NAT64 or (value >> 32 == 0 and value > 0xFFFF):
            return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return address


def refusal(address: Address) -> str | None:
    """Why an address is refused as a destination, or None when it is public."""
    address = embedded_ipv4(address)
    plain = ipaddress.ip_address(str(address).split("%", 1)[0])  # without an IPv6 scope
    checks = (
        ("cloud metadata", plain in METADATA),
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    return next((reason for reason, refused in checks if refused), None)


def judge(addresses: Sequence[Address], port: int, allow: Iterable[Allowed]) -> Verdict:
    """A destination resolving to `addresses` is allowed only if every one of them is: public,
    or admitted by an allowlist entry. One refused address refuses the destination, so a name
    cannot mix a public answer with an internal one."""
    if not addresses:
        return Verdict(False, "no address")
    rules = tuple(allow)
    for address in addresses:
        reason = refusal(address)
        if reason is not None and not any(r.admits(address, port) or r.admits(embedded_ipv4(address), port)
                                          for r in rules):
            return Verdict(False, f"{address} is {reason}")
    return Verdict(True, "public" if all(refusal(a) is None for a in addresses) else "allowlisted")


def parse_address(text: str) -> Address:
    """An address as the resolver returned it (an IPv6 scope is kept for connecting)."""
    return ipaddress.ip_address(text)


def literal_address(host: str) -> Address | None:
    """A host written as an IP address (IPv6 with or without brackets), else None; other
    spellings (decimal, octal, short forms) are left to the resolver, which reads them as
    the C library does, and the address it returns is what gets judged."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def parse_allowlist(text: str) -> tuple[Allowed, ...]:
    """`ADDRESS[/PREFIX][:PORT]` entries, comma-separated; a malformed one raises ValueError."""
    return tuple(_entry(part.strip()) for part in text.split(",") if part.strip())


def _entry(text: str) -> Allowed:
    port: int | None = None
    if text.startswith("["):
        network, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"allowlist entry {text!r}: expected [IPv6[/prefix]]:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        network, port_text = text.split(":")
    else:
        network, port_text = text, None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"allowlist entry {text!r}: the port must be 1..65535")
        port = int(port_text)
    try:
        return Allowed(ipaddress.ip_network(network, strict=True), port)
    except ValueError as exc:
        raise ValueError(f"allowlist entry {text!r}: {exc}") from None
