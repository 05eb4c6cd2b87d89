"""Which resolved addresses the proxy may connect to: public unicast only, unless a range is listed. No I/O.

A name on the allowlist can still point anywhere: a DNS record (or a rebinding attack) can make
`mirror.example.com` resolve to 127.0.0.1, to the cloud metadata service at 169.254.169.254 or to a printer
on the LAN. So every address the proxy resolved is checked here before it connects, and the name is refused
if any one of them is refused (the one it would have used next might be the bad one).

The ranges are spelled out from the IANA special-purpose registries instead of trusting `ipaddress`'s
`is_global`, whose answer changed between Python patch releases (3.11.2 calls site-local `fec0::/10` and
the NAT64 prefix global); `is_global` stays as a backstop for what the table misses. IPv6 forms that carry
an IPv4 address the kernel or a translator would really contact (IPv4-mapped `::ffff:a.b.c.d`, the NAT64
well-known prefix `64:ff9b::/96`) are judged by that IPv4 address; the tunnelling prefixes (6to4, Teredo,
the deprecated IPv4-compatible `::/96`) are refused whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from .allowlist import IPAddress

__all__ = ["AddressRules", "parse_cidr"]

IPNetwork = IPv4Network | IPv6Network

_REFUSED_V4: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "an unspecified ('this network') address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address (cloud metadata services live at 169.254.169.254)"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol-assignment address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a 6to4 relay address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
)
_REFUSED_V6: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), why)
    for net, why in (
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("::/96", "an IPv4-compatible address (deprecated)"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("100::/64", "a discard-only address"),
        ("2001::/32", "a Teredo tunnel address"),
        ("2001:2::/48", "a benchmarking address"),
        ("2001:10::/28", "an ORCHID address"),
        ("2001:db8::/32", "a documentation address"),
        ("2002::/16", "a 6to4 tunnel address"),
        ("3fff::/20", "a documentation address"),
        ("fc00::/7", "a unique-local (private) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address (deprecated)"),
        ("ff00::/8", "a multicast address"),
        ("::/8", "a reserved address"),
    )
)
_NAT64 = IPv6Network("64:ff9b::/96")


def parse_cidr(raw: str) -> IPNetwork:
    """An `allowed_private_cidrs` entry; ValueError with a hint when it is not a network or has host bits."""
    try:
        return ip_network(raw.strip(), strict=True)
    except ValueError as exc:
        try:
            loose = ip_network(raw.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{raw!r} is not an IP network in CIDR form, such as '10.0.0.0/8' ({exc})") from None
        raise ValueError(f"{raw!r} has host bits set; did you mean {str(loose)!r}?") from None


def _contacted(address: IPAddress) -> IPAddress:
    """The address a connection to `address` really reaches: the IPv4 inside a mapped or NAT64 address."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return IPv4Address(int(address) & 0xFFFFFFFF)
    return address


class AddressRules:
    """The range check with a policy's `allowed_private_cidrs` applied."""

    def __init__(self, allowed_private: Iterable[str | IPNetwork] = ()) -> None:
        self._allowed = tuple(ip_network(net) if isinstance(net, str) else net for net in allowed_private)

    def _listed(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self._allowed)

    def refusal(self, address: IPAddress) -> str | None:
        """Why the proxy must not connect to `address` (None: it may)."""
        target = _contacted(address)
        shown = str(address) if target == address else f"{address} (that is {target})"
        if self._listed(address) or self._listed(target):
            return None
        table: Iterable[tuple[IPNetwork, str]] = _REFUSED_V4 if isinstance(target, IPv4Address) else _REFUSED_V6
        for net, why in table:
            if target in net:
                return f"{shown} is {why}; list its range in allowed_private_cidrs to allow it"
        if not target.is_global:
            return f"{shown} is not a globally reachable address; list its range in allowed_private_cidrs to allow it"
        return None

    def first_refusal(self, addresses: Iterable[IPAddress]) -> str | None:
        """The reason for the first refused address: one bad answer refuses the name."""
        for address in addresses:
            if (why := self.refusal(address)) is not None:
                return why
        return None
