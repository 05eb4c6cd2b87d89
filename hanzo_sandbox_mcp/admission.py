"""Fair admission to the server's call slots: clients take turns, then sessions take turns within a client.

One shared pool of slots lets a client that starts many long calls hold every slot, and every other client
then waits up to `max_timeout_s`. Two rules close that:

1. **A per-client cap.** No client holds more than `per_client` of the `total` slots at once, so while one
   client runs long calls, slots stay free for the others.
2. **Round-robin when a slot frees.** Waiting clients are served in turn, the one served longest ago first;
   within a client, its lanes (one per session) are served in turn, so one session's queue cannot starve
   the client's other sessions. Calls of one lane are admitted in arrival order.

A call cancelled while it waits leaves the queue and never runs; a slot granted to a call that is cancelled
before it could start is handed on at once.

Single event loop, no locks: every state change happens between awaits. Pure scheduling, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

__all__ = ["FairAdmission"]


@dataclass(eq=False)
class _Waiter:
    client: str
    lane: Hashable
    granted: anyio.Event = field(default_factory=anyio.Event)


class FairAdmission:
    """`total` call slots, at most `per_client` of them per client, handed out round-robin."""

    def __init__(self, total: int, per_client: int) -> None:
        if total < 1 or per_client < 1:
            raise ValueError("total and per_client must be at least 1")
        self.total = total
        self.per_client = min(per_client, total)
        self._held: dict[str, int] = {}
        """Slots each client holds now (clients holding none are absent)."""
        self._queues: OrderedDict[str, OrderedDict[Hashable, deque[_Waiter]]] = OrderedDict()
        """Waiting calls by client (in order of arrival), then lane (next to serve first)."""
        self._served: dict[str, int] = {}
        """When each client holding or awaiting a slot was last granted one (a grant counter)."""
        self._grants = 0

    # -- what tests and capabilities read --------------------------------------------------------------

    @property
    def running(self) -> int:
        """Slots held over all clients."""
        return sum(self._held.values())

    def running_for(self, client: str) -> int:
        """Slots `client` holds."""
        return self._held.get(client, 0)

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot over all clients."""
        return sum(self.waiting_for(client) for client in self._queues)

    def waiting_for(self, client: str) -> int:
        """Calls of `client` waiting for a slot."""
        return sum(len(queue) for queue in self._queues.get(client, {}).values())

    # -- admission -------------------------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self, client: str, lane: Hashable) -> AsyncIterator[None]:
        """Hold one slot for `client` (its calls in `lane` queue in order) while the block runs."""
        waiter = _Waiter(client, lane)
        self._queues.setdefault(client, OrderedDict()).setdefault(lane, deque()).append(waiter)
        self._dispatch()
        try:
            await waiter.granted.wait()
            # A cancel that came with the grant has not been delivered yet: a cancelled call never runs.
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            # Cancelled while queued: leave the queue, or pass on a slot granted in the same instant.
            if waiter.granted.is_set():
                self._release(client)
            else:
                self._withdraw(waiter)
            raise
        try:
            yield
        finally:
            self._release(client)

    def _dispatch(self) -> None:
        while self.running < self.total:
            waiter = self._next_eligible()
            if waiter is None:
                return
            self._held[waiter.client] = self._held.get(waiter.client, 0) + 1
            waiter.granted.set()

    def _next_eligible(self) -> _Waiter | None:
        """Pop the next call of the client below its cap that was served longest ago (never: first).

        Its lane goes to the back of the client's lanes. A client's grant time is kept while it holds or
        awaits a slot, so one whose queue ran empty for a moment does not jump ahead when it queues again.
        """
        never = -1
        eligible = (c for c in self._queues if self._held.get(c, 0) < self.per_client)
        client = min(eligible, key=lambda c: self._served.get(c, never), default=None)
        if client is None:
            return None
        lanes = self._queues[client]
        lane, queue = next(iter(lanes.items()))
        waiter = queue.popleft()
        if queue:
            lanes.move_to_end(lane)
        else:
            del lanes[lane]
        if not lanes:
            del self._queues[client]
        self._grants += 1
        self._served[client] = self._grants
        return waiter

    def _withdraw(self, waiter: _Waiter) -> None:
        lanes = self._queues[waiter.client]
        queue = lanes[waiter.lane]
        queue.remove(waiter)
        if not queue:
            del lanes[waiter.lane]
        if not lanes:
            del self._queues[waiter.client]
            self._forget_if_idle(waiter.client)

    def _release(self, client: str) -> None:
        held = self._held[client] - 1
        if held:
            self._held[client] = held
        else:
            del self._held[client]
            self._forget_if_idle(client)
        self._dispatch()

    def _forget_if_idle(self, client: str) -> None:
        if client not in self._held and client not in self._queues:
            self._served.pop(client, None)
