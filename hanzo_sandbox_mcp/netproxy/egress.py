"""From a destination a client names to an open connection, or a refusal: the one place the policy is applied.

The order is the defence. The name is matched against the list first, so a name that is not allowed is
never resolved (a DNS query is itself a way to carry data out); the addresses come from `proxy_hosts`, the
literal itself, or DNS, and every one of them is checked; the connection then goes to the very address
checked, never to a name that a second lookup could answer differently (DNS rebinding).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Literal

import anyio
from anyio.abc import SocketStream

from ..policy import SandboxPolicy
from .addresses import AddressRules
from .allowlist import Allowlist, HostError, IPAddress, parse_host
from .decisions import Decision, DecisionLog, Protocol
from .limits import ProxyLimits

__all__ = ["Egress", "EgressRules", "Failure", "Refused"]

#: What went wrong, for the client's error reply: the policy said no, or the destination could not be reached.
Failure = Literal["policy", "unresolved", "unreachable", "refused", "timeout"]


class Refused(Exception):
    """The destination was not opened; `failure` says why, the message says it for the model."""

    def __init__(self, failure: Failure, reason: str) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EgressRules:
    """A policy's network keys, compiled once per session."""

    allowlist: Allowlist
    addresses: AddressRules
    static_hosts: dict[str, IPAddress]

    @classmethod
    def of(cls, policy: SandboxPolicy) -> EgressRules:
        return cls(
            allowlist=Allowlist.of(policy.allowed_domains, policy.allowed_ports),
            addresses=AddressRules(policy.allowed_private_cidrs),
            static_hosts={name: ip_address(address) for name, address in policy.proxy_hosts},
        )


class Egress:
    """Opens destinations for one session, recording every decision."""

    def __init__(self, rules: EgressRules, limits: ProxyLimits, decisions: DecisionLog, session_tag: str) -> None:
        self._rules = rules
        self._limits = limits
        self._decisions = decisions
        self._session = session_tag

    def refuse(self, protocol: Protocol, host: str, port: int, reason: str) -> Refused:
        """Record a refusal decided before a destination was even named properly (and return the error)."""
        self._record(protocol, host, port, allowed=False, reason=reason)
        return Refused("policy", reason)

    async def open(self, protocol: Protocol, raw_host: str, port: int) -> SocketStream:
        """A connection to `raw_host`:`port` if the policy allows it; Refused otherwise."""
        host: str | IPAddress
        try:
            host = parse_host(raw_host)
        except HostError as exc:
            raise self.refuse(protocol, raw_host, port, str(exc)) from None
        shown = str(host)
        if (why := self._rules.allowlist.refusal(host, port)) is not None:
            raise self.refuse(protocol, shown, port, why)
        addresses = await self._addresses(host, port)
        if (why := self._rules.addresses.first_refusal(addresses)) is not None:
            raise self.refuse(protocol, shown, port, f"{shown} resolved to a refused address: {why}")
        stream, address = await self._connect(shown, addresses, port)
        self._record(protocol, shown, port, allowed=True, reason=f"allowed, connected to {address}", address=address)
        return stream

    async def _addresses(self, host: str | IPAddress, port: int) -> Sequence[IPAddress]:
        if not isinstance(host, str):
            return (host,)
        if (static := self._rules.static_hosts.get(host)) is not None:
            return (static,)
        try:
            with anyio.fail_after(self._limits.resolve_timeout_s):
                answers = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise Refused("timeout", f"resolving {host} timed out") from None
        except OSError as exc:
            raise Refused("unresolved", f"{host} cannot be resolved ({exc.strerror or exc})") from None
        found = list(dict.fromkeys(ip_address(sockaddr[0]) for *_, sockaddr in answers))
        if not found:
            raise Refused("unresolved", f"{host} has no address")
        return found

    async def _connect(self, shown: str, addresses: Sequence[IPAddress], port: int) -> tuple[SocketStream, str]:
        """The first address that accepts, tried in the resolver's order (each already checked)."""
        last: Refused | None = None
        for address in addresses:
            try:
                with anyio.fail_after(self._limits.connect_timeout_s):
                    stream = await anyio.connect_tcp(str(address), port)
                return stream, str(address)
            except TimeoutError:
                last = Refused("timeout", f"connecting to {shown} ({address}) port {port} timed out")
            except ConnectionRefusedError:
                last = Refused("refused", f"{shown} ({address}) refused the connection on port {port}")
            except OSError as exc:
                last = Refused("unreachable", f"{shown} ({address}) port {port} is unreachable ({exc.strerror or exc})")
        assert last is not None  # addresses is never empty
        raise last

    def _record(
        self, protocol: Protocol, host: str, port: int, *, allowed: bool, reason: str, address: str | None = None
    ) -> None:
        self._decisions.record(
            Decision(
                session_tag=self._session,
                allowed=allowed,
                protocol=protocol,
                host=host,
                port=port,
                reason=reason,
                address=address,
            )
        )
