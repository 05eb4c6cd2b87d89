"""Which destination names and ports the allowlist lets through: normalisation and matching, no I/O.

A name is compared only after one normalisation, the same for the policy's entries and for what a client
asks for: lower case, one trailing dot dropped, each non-ASCII label turned into its `xn--` form by the
standard library's IDNA codec (IDNA 2003 nameprep). Whatever cannot be normalised is refused, never passed
on: a proxy and a resolver that read one name two ways is how look-alikes get through.

`*.example.com` matches the names below `example.com` at a label boundary (`a.example.com`,
`a.b.example.com`), never `example.com` itself and never `evilexample.com`. An IP literal matches only an
entry that is that same literal; every spelling `inet_aton` accepts (`127.1`, `0x7f.0.0.1`, `2130706433`)
is an IPv4 literal here, since that is what a resolver would make of it.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

__all__ = [
    "Allowlist",
    "HostError",
    "IPAddress",
    "normalise_name",
    "normalise_pattern",
    "parse_host",
]

IPAddress = IPv4Address | IPv6Address

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_MAX_NAME = 253


class HostError(ValueError):
    """A destination or allowlist entry that is not a usable host name or address (the message says why)."""


def _ipv4_literal(text: str) -> IPv4Address | None:
    """The address `inet_aton` (and so a resolver) reads in `text`, or None when it reads none."""
    if not text or not all(c in "0123456789abcdefxABCDEFX." for c in text):
        return None
    try:
        return IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


def _ipv6_literal(text: str) -> IPv6Address | None:
    if ":" not in text:
        return None
    if "%" in text:
        raise HostError(f"{text!r}: an IPv6 address with a zone index is never a public destination")
    try:
        return IPv6Address(text)
    except ValueError:
        raise HostError(f"{text!r} is not a valid IPv6 address") from None


def normalise_name(raw: str) -> str:
    """The one spelling of host name `raw` that is matched and resolved; HostError when it has none."""
    name = raw.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise HostError("the host name is empty")
    if not name.isascii():
        try:
            name = ".".join(label.encode("idna").decode("ascii") for label in name.split("."))
        except UnicodeError as exc:
            raise HostError(f"{raw!r} is not a valid internationalised host name ({exc})") from None
        name = name.lower()
    if len(name) > _MAX_NAME:
        raise HostError(f"{raw!r} is longer than {_MAX_NAME} characters")
    labels = name.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise HostError(
                f"{raw!r} is not a host name: each dot-separated label must be 1-63 letters, digits, '-' or '_' "
                "(not starting or ending with '-')"
            )
    if labels[-1].isdigit():
        raise HostError(f"{raw!r} is neither a host name (its last label is a number) nor an IPv4 address")
    return name


def parse_host(raw: str) -> str | IPAddress:
    """A destination as a client wrote it (no brackets, no port): a normalised name or an IP address."""
    if (v6 := _ipv6_literal(raw)) is not None:
        return v6
    if (v4 := _ipv4_literal(raw[:-1] if raw.endswith(".") else raw)) is not None:
        return v4
    return normalise_name(raw)


def normalise_pattern(raw: str) -> str:
    """An `allowed_domains` entry in its matching form: a name, `*.name`, or an IP address's canonical text."""
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text.startswith("*."):
        suffix = normalise_name(text[2:])
        if "." not in suffix:
            raise HostError(
                f"{raw!r} would allow every name under a top-level domain; list the domains you need instead"
            )
        return f"*.{suffix}"
    if "*" in text:
        raise HostError(f"{raw!r}: a wildcard is allowed only as a whole first label, as in '*.example.com'")
    host = parse_host(text)
    return host if isinstance(host, str) else str(host)


@dataclass(frozen=True, slots=True)
class Allowlist:
    """The compiled `allowed_domains` and `allowed_ports` of a policy (entries already normalised)."""

    names: frozenset[str]
    suffixes: tuple[str, ...]
    addresses: frozenset[IPAddress]
    ports: frozenset[int]

    @classmethod
    def of(cls, domains: Iterable[str], ports: Iterable[int]) -> Allowlist:
        names: set[str] = set()
        suffixes: list[str] = []
        addresses: set[IPAddress] = set()
        for entry in map(normalise_pattern, domains):
            if entry.startswith("*."):
                suffixes.append(entry[1:])  # ".example.com": the dot is the label boundary
            elif isinstance(host := parse_host(entry), str):
                names.add(host)
            else:
                addresses.add(host)
        return cls(frozenset(names), tuple(suffixes), frozenset(addresses), frozenset(ports))

    def refusal(self, host: str | IPAddress, port: int) -> str | None:
        """Why `host`:`port` is not on the list (None: it is). `host` comes from `parse_host`."""
        if isinstance(host, str):
            if host not in self.names and not host.endswith(self.suffixes):
                return f"{host} is not in allowed_domains"
        elif host not in self.addresses:
            return f"{host} is an IP address; only names in allowed_domains (or that literal address) are allowed"
        if port not in self.ports:
            return f"port {port} is not in allowed_ports ({', '.join(map(str, sorted(self.ports)))})"
        return None
