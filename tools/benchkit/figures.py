"""The measurements. Each figure function measures its sandboxed quantity and the baselines it is judged
against in the same rounds (the order rotating from round to round, so that drift on the machine and the cost
of going first hit every series alike) and returns its rows of the table.

Calls go through public interfaces only: `SandboxService` for the library figures, the official `mcp` client
over stdio or streamable HTTP for the others, so the same benchmark measures today's code and its successors.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from mcp import Client

from hanzo_sandbox_mcp.service import SandboxService

from .model import Figure, Series, Target, summarize
from .servers import (
    Config,
    Scalar,
    baseline_params,
    http_server,
    server_params,
    settings_of,
    subreaper,
    tree_pss_kib,
    write_config,
)
from .spawns import SpawnBaseline, timed_spawn
from .timing import Timer, concurrently, rounds

__all__ = ["FIGURES", "Run", "Sizes"]

CALL_TIMEOUT_S = 60.0
#: Sessions that hold many workdirs at once get a small quota: a root server refuses a session the free disk
#: could not hold beside the others' quotas.
SMALL_QUOTA: dict[str, Scalar] = {"workdir_quota_mb": 128}
#: What one idle session may add to the server's PSS (the target), in MiB.
SESSION_PSS_MIB = 4.0


@dataclass(frozen=True)
class Sizes:
    """How many of everything: the full run, or `quick()` for a smoke test."""

    warmup: int = 3
    spawn: int = 50
    stdio: int = 100
    http: int = 40
    http_gap_s: float = 0.1
    throughput_calls: int = 100
    throughput_concurrency: int = 10
    throughput_sessions: int = 10
    throughput_rounds: int = 3
    cold: int = 20
    pss_sessions: int = 64
    settle_s: float = 2.0
    workdir_calls: int = 60
    workdir_files: int = 100_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            warmup=1,
            spawn=5,
            stdio=5,
            http=5,
            http_gap_s=0.05,
            throughput_calls=20,
            throughput_rounds=1,
            cold=3,
            pss_sessions=4,
            settle_s=0.5,
            workdir_calls=5,
            workdir_files=2000,
        )


@dataclass
class Run:
    """What every figure shares: the temporary directory, the sizes, the spawn baselines, what the code knows."""

    directory: Path
    sizes: Sizes
    baselines: Mapping[str, SpawnBaseline]
    pool_size_known: bool

    def spawn_timers(self, *names: str) -> dict[str, Timer]:
        """A timer per named spawn baseline that runs here (the others are in `skipped()`)."""
        return {name: _spawner(self.baselines[name].argv) for name in names if not self.missing(name)}

    def skipped(self, *names: str) -> list[str]:
        return [f"{self.baselines[n].label}: skipped, {self.baselines[n].missing}" for n in names if self.missing(n)]

    def missing(self, name: str) -> bool:
        return self.baselines[name].missing is not None


# -- helpers ---------------------------------------------------------------------------------------------


def _spawner(argv: tuple[str, ...]) -> Timer:
    async def spawn() -> float:
        return await timed_spawn(argv)

    return spawn


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One tool call, bounded; its structured content. A tool error stops the figure with its message."""
    with anyio.fail_after(CALL_TIMEOUT_S):
        result = await client.call_tool(tool, arguments)
    if result.is_error:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise RuntimeError(f"{tool} failed: {text[:500]}")
    return dict(result.structured_content or {})


async def timed_call(client: Client, tool: str, arguments: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    content = await call(client, tool, arguments)
    return (time.perf_counter() - start) * 1000, content


def _ran_true(content: Mapping[str, Any]) -> None:
    if content.get("exit_code", 0) != 0 or content.get("error"):
        raise RuntimeError(f"'true' did not succeed: exit {content.get('exit_code')}, {content.get('error')}")


async def timed_true(client: Client, **arguments: Any) -> tuple[float, dict[str, Any]]:
    """`run_command "true"` (with `arguments`), checked to have succeeded: (ms, structured content)."""
    elapsed, content = await timed_call(client, "run_command", {"command": "true", **arguments})
    _ran_true(content)
    return elapsed, content


def layers_of(protection: Mapping[str, Any]) -> str:
    """The layers a result says were in force, in one line (so a fast figure from a weaker sandbox shows)."""
    namespaces = ",".join(protection.get("namespaces", ())) or "none"
    return (
        f"sandbox={protection.get('sandbox')} namespaces={namespaces} landlock_abi={protection.get('landlock_abi')} "
        f"seccomp={protection.get('seccomp')} private_root={protection.get('private_root')} "
        f"uid={protection.get('uid')} missing={len(protection.get('missing', ()))}"
    )


def _series(samples: Mapping[str, list[float]], unit: str = "ms") -> dict[str, Series]:
    return {name: summarize(values, unit) for name, values in samples.items() if values}


def _compared(name: str, title: str, series: dict[str, Series], value: str, baseline: str, **rest: Any) -> Figure:
    """A figure whose value and baseline are the medians of two of its series (the baseline may be missing)."""
    return Figure(
        name=name,
        title=title,
        unit=series[value].unit,
        value=series[value].median,
        baseline=series[baseline].median if baseline in series else None,
        series=series,
        **rest,
    )


# -- 1. spawn --------------------------------------------------------------------------------------------


async def spawn(run: Run) -> list[Figure]:
    """A library call of `true` in a warm session against bwrap, unshare and a bare spawn."""
    settings = settings_of(write_config(run.directory, "spawn", {}))
    protection: dict[str, Any] = {}
    async with SandboxService(settings) as service:
        session = (await service.create_session()).session_id

        async def library() -> float:
            start = time.perf_counter()
            with anyio.fail_after(CALL_TIMEOUT_S):
                result = await service.run_command("true", session_id=session)
            elapsed = (time.perf_counter() - start) * 1000
            content = result.model_dump(mode="json")
            _ran_true(content)
            protection.update(content["protection"])
            return elapsed

        timers = {"library": library, **run.spawn_timers("bwrap", "unshare", "bare")}
        samples = await rounds(timers, run.sizes.spawn, run.sizes.warmup)
    series = _series(samples)
    return [
        _compared(
            "spawn",
            'spawn: library run_command "true", warm session',
            series,
            "library",
            "bwrap",
            baseline_label="bwrap",
            target=Target(kind="ratio_max", limit=0.7, aim=0.5),
            n=run.sizes.spawn,
            facts={"layers": layers_of(protection)},
            notes=run.skipped("bwrap", "unshare"),
        )
    ]


# -- 2. stdio round trip ---------------------------------------------------------------------------------


async def stdio(run: Run) -> list[Figure]:
    """MCP `run_command "true"` over stdio against bwrap's spawn alone and an unsandboxed echo round trip."""
    config = write_config(run.directory, "stdio", {})
    protection: dict[str, Any] = {}
    async with (
        Client(server_params(config), read_timeout_seconds=CALL_TIMEOUT_S) as server,
        Client(baseline_params(run.directory), read_timeout_seconds=CALL_TIMEOUT_S) as base,
    ):

        async def sandboxed() -> float:
            elapsed, content = await timed_true(server)
            protection.update(content.get("protection", {}))
            return elapsed

        async def echo() -> float:
            return (await timed_call(base, "echo", {"text": "x"}))[0]

        timers = {"run_command": sandboxed, "echo": echo, **run.spawn_timers("bwrap")}
        samples = await rounds(timers, run.sizes.stdio, run.sizes.warmup)
    series = _series(samples)
    return [
        _compared(
            "stdio",
            'stdio round trip: MCP run_command "true"',
            series,
            "run_command",
            "bwrap",
            baseline_label="bwrap spawn",
            target=Target(kind="ratio_max", limit=1.0),
            n=run.sizes.stdio,
            facts={
                "ratio_to_echo": series["run_command"].median / series["echo"].median,
                "layers": layers_of(protection),
            },
            notes=run.skipped("bwrap"),
        )
    ]


# -- 3. HTTP, a new session per call ---------------------------------------------------------------------


async def http(run: Run) -> list[Figure]:
    """Streamable HTTP calls without session_id (each a fresh single-call session) against bwrap's spawn; a
    call in an existing session is measured too, to tell the new session's cost from the transport's."""
    config = write_config(run.directory, "http", {"policy": SMALL_QUOTA})
    seen: set[str] = set()
    async with http_server(config) as url, Client(url, read_timeout_seconds=CALL_TIMEOUT_S) as client:
        warm = (await call(client, "create_session", {}))["session_id"]

        async def fresh() -> float:
            await anyio.sleep(run.sizes.http_gap_s)  # lets a pool refill between calls, outside the timing
            elapsed, content = await timed_true(client)
            seen.add(content["session_id"])
            return elapsed

        async def existing() -> float:
            return (await timed_true(client, session_id=warm))[0]

        timers = {"new_session": fresh, "existing_session": existing, **run.spawn_timers("bwrap")}
        samples = await rounds(timers, run.sizes.http, run.sizes.warmup)
    calls = run.sizes.http + run.sizes.warmup
    notes = run.skipped("bwrap")
    if len(seen) < calls:
        notes.append(f"only {len(seen)} distinct sessions for {calls} calls without session_id: not one per call")
    series = _series(samples)
    return [
        _compared(
            "http",
            "HTTP: call without session_id (new session)",
            series,
            "new_session",
            "bwrap",
            baseline_label="bwrap spawn",
            target=Target(kind="plus_max", limit=3.0),
            n=run.sizes.http,
            facts={"distinct_sessions": len(seen), "calls": calls, "gap_s": run.sizes.http_gap_s},
            notes=notes,
        )
    ]


# -- 4. throughput ---------------------------------------------------------------------------------------


async def throughput(run: Run) -> list[Figure]:
    """Calls of `true` at a fixed concurrency over several sessions on one stdio connection, against the
    unsandboxed baseline server doing the same calls through subprocess, in alternating rounds."""
    sizes = run.sizes
    config = write_config(
        run.directory,
        "throughput",
        {"exec": {"max_concurrent_calls": sizes.throughput_concurrency}, "policy": SMALL_QUOTA},
    )
    rates: dict[str, list[float]] = {"sandboxed": [], "baseline": [], "bwrap": []}
    latencies: dict[str, list[float]] = {"sandboxed": [], "baseline": [], "bwrap": []}
    async with (
        Client(server_params(config), read_timeout_seconds=CALL_TIMEOUT_S) as server,
        Client(baseline_params(run.directory), read_timeout_seconds=CALL_TIMEOUT_S) as base,
    ):
        sessions = [(await call(server, "create_session", {}))["session_id"] for _ in range(sizes.throughput_sessions)]

        async def in_session(index: int) -> float:
            return (await timed_true(server, session_id=sessions[index % len(sessions)]))[0]

        async def unsandboxed(index: int) -> float:
            return (await timed_true(base))[0]

        bursts = {"sandboxed": in_session, "baseline": unsandboxed}
        bwrap = run.baselines["bwrap"]
        if bwrap.missing is None:
            bursts["bwrap"] = lambda index: timed_spawn(bwrap.argv)
        await concurrently(len(sessions), len(sessions), in_session)  # every session used once first
        await concurrently(sizes.throughput_concurrency, sizes.throughput_concurrency, unsandboxed)
        for _ in range(sizes.throughput_rounds):
            for name, one in bursts.items():
                wall, each = await concurrently(sizes.throughput_calls, sizes.throughput_concurrency, one)
                rates[name].append(sizes.throughput_calls / wall)
                latencies[name].extend(each)
    series = _series({f"{name}_latency": values for name, values in latencies.items()})
    series |= _series({f"{name}_rate": values for name, values in rates.items()}, unit="calls/s")
    facts: dict[str, float | int | str | bool | None] = {
        "calls": sizes.throughput_calls,
        "concurrency": sizes.throughput_concurrency,
        "sessions": sizes.throughput_sessions,
        "rounds": sizes.throughput_rounds,
    }
    return [
        Figure(
            name="throughput",
            title=f"throughput: {sizes.throughput_calls} calls, concurrency {sizes.throughput_concurrency}, stdio",
            unit="calls/s",
            value=statistics.median(rates["sandboxed"]),
            baseline=statistics.median(rates["baseline"]),
            baseline_label="unsandboxed MCP + subprocess",
            target=Target(kind="ratio_min", limit=0.5),
            n=sizes.throughput_calls * sizes.throughput_rounds,
            series=series,
            facts=facts,
            notes=run.skipped("bwrap"),
        )
    ]


# -- 5. cold session -------------------------------------------------------------------------------------


async def cold(run: Run) -> list[Figure]:
    """`create_session` + its first call with no pre-warmed sandbox, against a later call in the same session."""
    notes: list[str] = []
    if run.pool_size_known:
        overrides: Config = {"sessions": {"pool_size": 0}}
    else:
        overrides = {}
        notes.append("[sessions] pool_size is not a config key of this code (no pool): measured without it")
    settings = settings_of(write_config(run.directory, "cold", overrides))
    samples: dict[str, list[float]] = {"create_session": [], "first_call": [], "cold": [], "later_call": []}
    differences: list[float] = []
    async with SandboxService(settings) as service:
        quota_mode = (await service.capabilities()).limits.quota_mode
        for index in range(run.sizes.warmup + run.sizes.cold):
            with anyio.fail_after(CALL_TIMEOUT_S):
                start = time.perf_counter()
                session = (await service.create_session()).session_id
                created = time.perf_counter()
                first = await service.run_command("true", session_id=session)
                called = time.perf_counter()
                later = await service.run_command("true", session_id=session)
                again = time.perf_counter()
                await service.close_session(session)
            for result in (first, later):
                _ran_true(result.model_dump(mode="json"))
            if index < run.sizes.warmup:
                continue
            intervals = {
                "create_session": created - start,
                "first_call": called - created,
                "cold": called - start,
                "later_call": again - called,
            }
            for name, seconds in intervals.items():
                samples[name].append(seconds * 1000)
            differences.append((called - start - (again - called)) * 1000)
    series = _series(samples)
    series["difference"] = summarize(differences, "ms")
    return [
        _compared(
            "cold",
            f"cold session: create_session + first call, {'pool empty' if run.pool_size_known else 'no pool_size key'}",
            series,
            "cold",
            "later_call",
            baseline_label="later call",
            target=Target(kind="plus_max", limit=50.0),
            n=run.sizes.cold,
            facts={"quota_mode": quota_mode, "pool_size": 0 if run.pool_size_known else None},
            notes=notes,
        )
    ]


# -- 6. idle memory --------------------------------------------------------------------------------------


async def _pss_mib(settle_s: float) -> tuple[float, int, int]:
    """Median of three readings of the PSS of every descendant of this process (the server and anything it
    detached), after letting the server settle (pool refills, sweeps)."""
    await anyio.sleep(settle_s)
    readings = []
    for _ in range(3):
        readings.append(await anyio.to_thread.run_sync(lambda: tree_pss_kib(os.getpid(), include_root=False)))
        await anyio.sleep(0.2)
    readings.sort()
    kib, processes, unreadable = readings[1]
    return kib / 1024, processes, unreadable


async def pss(run: Run) -> list[Figure]:
    """The server's total PSS idle, then with N idle sessions that each ran one call."""
    count = run.sizes.pss_sessions
    config = write_config(run.directory, "pss", {"sessions": {"max_sessions": count + 8}, "policy": SMALL_QUOTA})
    with subreaper() as reaping:
        async with Client(server_params(config), read_timeout_seconds=CALL_TIMEOUT_S) as server:
            await call(server, "capabilities", {})
            idle, idle_processes, idle_unreadable = await _pss_mib(run.sizes.settle_s)
            for _ in range(count):
                session = (await call(server, "create_session", {}))["session_id"]
                _ran_true(await call(server, "run_command", {"command": "true", "session_id": session}))
            loaded, processes, unreadable = await _pss_mib(run.sizes.settle_s)
    notes = [] if reaping else ["not a subreaper here: processes the server detached may be missed"]
    if idle_unreadable or unreadable:
        notes.append(f"{max(idle_unreadable, unreadable)} processes could not be read (their PSS is left out)")
    return [
        Figure(
            name="pss",
            title=f"idle PSS: server with {count} idle sessions",
            unit="MiB",
            value=loaded,
            baseline=idle,
            baseline_label="idle server",
            target=Target(kind="plus_max", limit=count * SESSION_PSS_MIB),
            n=count,
            facts={
                "per_session_mib": (loaded - idle) / count,
                "processes_idle": idle_processes,
                "processes_loaded": processes,
            },
            notes=notes,
        )
    ]


# -- 7. by workdir size ----------------------------------------------------------------------------------

_FILL = (
    "import os\n"
    "for d in range({dirs}):\n"
    "    os.mkdir(f'd{{d}}')\n"
    "    for f in range(1000):\n"
    "        open(f'd{{d}}/f{{f}}', 'w').close()\n"
)


async def workdir(run: Run) -> list[Figure]:
    """A call in an empty session against one in a session holding many files, per quota mode."""
    files = max(1000, run.sizes.workdir_files // 1000 * 1000)
    figures: list[Figure] = []
    modes_seen: set[str] = set()
    for quota_mode in ("auto", "polled"):
        config = write_config(run.directory, f"workdir-{quota_mode}", {"sessions": {"quota_mode": quota_mode}})
        async with Client(server_params(config), read_timeout_seconds=CALL_TIMEOUT_S) as server:
            mode = (await call(server, "capabilities", {}))["limits"]["quota_mode"]
            if mode in modes_seen:
                figures[-1].notes.append(f'quota_mode "{quota_mode}" is "{mode}" here too: measured once')
                continue
            modes_seen.add(mode)
            empty, full = [(await call(server, "create_session", {}))["session_id"] for _ in range(2)]
            with anyio.fail_after(600):
                filled = await server.call_tool(
                    "run_python", {"code": _FILL.format(dirs=files // 1000), "session_id": full, "timeout_s": 590}
                )
            if filled.is_error:
                raise RuntimeError(f"filling the workdir failed: {filled.content}")

            def timer(session: str) -> Timer:
                async def timed() -> float:
                    return (await timed_true(server, session_id=session))[0]

                return timed

            samples = await rounds(
                {"empty": timer(empty), "full": timer(full)}, run.sizes.workdir_calls, run.sizes.warmup
            )
        series = _series(samples)
        figures.append(
            _compared(
                f"workdir-{mode}",
                f"workdir of {files} files vs empty, quota {mode}",
                series,
                "full",
                "empty",
                baseline_label="empty workdir",
                n=run.sizes.workdir_calls,
                facts={"files": files, "quota_mode": mode},
            )
        )
    return figures


FIGURES: dict[str, Callable[[Run], Awaitable[list[Figure]]]] = {
    "spawn": spawn,
    "stdio": stdio,
    "http": http,
    "throughput": throughput,
    "cold": cold,
    "pss": pss,
    "workdir": workdir,
}
"""Every figure, in table order; `workdir` runs only when asked for (--by-workdir-size or --only)."""
