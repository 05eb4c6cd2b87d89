"""How samples are taken: rounds that interleave a figure's series, and bursts of concurrent calls."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping

import anyio

__all__ = ["Timer", "concurrently", "rounds"]

Timer = Callable[[], Awaitable[float]]
"""Does one thing once and returns the milliseconds it took (measured where the thing runs)."""


async def rounds(timers: Mapping[str, Timer], n: int, warmup: int) -> dict[str, list[float]]:
    """`warmup` unmeasured rounds, then `n` rounds; in each, every timer once, the order rotated each round, so
    that drift on the machine and the cost of going first hit every series alike."""
    names = list(timers)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + n):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = await timers[name]()
            if index >= warmup:
                samples[name].append(elapsed)
    return samples


async def concurrently(
    calls: int, concurrency: int, one: Callable[[int], Awaitable[float]]
) -> tuple[float, list[float]]:
    """`one(0)` ... `one(calls - 1)`, `concurrency` of them in flight: (wall-clock seconds, each one's ms)."""
    latencies: list[float] = []
    remaining = iter(range(calls))

    async def worker() -> None:
        for index in remaining:
            latencies.append(await one(index))

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(worker)
    return time.perf_counter() - start, latencies
