"""Where the proxy's decisions go: the log, the audit log, and each session's queue of refusals.

A session's calls and background processes share one network namespace, so the proxy cannot tell which of
them opened a connection: a refusal belongs to the session, and `take_denied` hands a result every refusal
since that session's previous result. The queue is bounded (a command looping on a refused name must not
grow the server's memory); repeats of the same refusal are counted on one entry, and when distinct
refusals overflow, the oldest are dropped and a last entry says how many. URL paths and headers are never
logged: they can carry tokens.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AuditSink", "Decision", "DecisionLog", "NetworkDenial", "Protocol"]

_log = logging.getLogger("hanzo_sandbox_mcp.netproxy")

Protocol = Literal["connect", "http", "socks5", "unknown"]
#: Receives one JSON-ready record per decision (service.py's audit log `write` fits).
AuditSink = Callable[[Mapping[str, object]], None]


class NetworkDenial(BaseModel):
    """A destination the proxy refused, as a result reports it to the model."""

    model_config = ConfigDict(frozen=True)

    host: str = Field(description="The name or address the command asked for ('*' on the overflow entry).")
    port: int = Field(ge=0, le=65535, description="The port it asked for (0 when unknown).")
    reason: str = Field(description="Why it was refused, and what would allow it.")
    count: int = Field(1, ge=1, description="How many times this exact refusal happened since the last result.")


class Decision(BaseModel):
    """One allow-or-refuse decision of the proxy."""

    model_config = ConfigDict(frozen=True)

    session_tag: str
    allowed: bool
    protocol: Protocol
    host: str
    port: int
    reason: str = Field(description="Why it was refused, or what was allowed ('allowed' and the address).")
    address: str | None = Field(None, description="The address connected to, when allowed.")


class DecisionLog:
    """Logs every decision and keeps each session's refusals until `take_denied`."""

    def __init__(self, *, audit: AuditSink | None = None, max_denials_per_session: int = 32) -> None:
        self._audit = audit
        self._max = max_denials_per_session
        self._denied: dict[str, OrderedDict[tuple[str, int, str], int]] = {}
        self._dropped: dict[str, int] = {}

    def record(self, decision: Decision) -> None:
        verdict = "allowed" if decision.allowed else "refused"
        _log.info(
            "session %s: %s %s %s:%d: %s",
            decision.session_tag,
            decision.protocol,
            verdict,
            decision.host,
            decision.port,
            decision.reason,
        )
        if self._audit is not None:
            self._audit({"event": "network", **decision.model_dump()})
        if not decision.allowed:
            self._queue(decision)

    def _queue(self, decision: Decision) -> None:
        queue = self._denied.setdefault(decision.session_tag, OrderedDict())
        key = (decision.host, decision.port, decision.reason)
        queue[key] = queue.get(key, 0) + 1
        queue.move_to_end(key)
        while len(queue) > self._max:
            _, count = queue.popitem(last=False)
            self._dropped[decision.session_tag] = self._dropped.get(decision.session_tag, 0) + count

    def take_denied(self, session_tag: str) -> list[NetworkDenial]:
        """The session's refusals since the last call, oldest first; the queue is then empty."""
        queue = self._denied.pop(session_tag, OrderedDict())
        denials = [NetworkDenial(host=host, port=port, reason=why, count=n) for (host, port, why), n in queue.items()]
        if dropped := self._dropped.pop(session_tag, 0):
            denials.append(
                NetworkDenial(
                    host="*",
                    port=0,
                    reason=f"{dropped} older refusals were dropped: at most {self._max} distinct ones are kept "
                    "between two results",
                    count=dropped,
                )
            )
        return denials

    def forget(self, session_tag: str) -> None:
        """Drop a closed session's queue."""
        self._denied.pop(session_tag, None)
        self._dropped.pop(session_tag, None)
