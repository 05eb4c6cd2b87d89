#!/usr/bin/env python3
"""Stdio round trip of `run_command "true"` against a baseline echo tool, measured in the same run.

Two servers are started over stdio with the official `mcp` client: the real one (`python -m hanzo_sandbox_mcp
serve`) and a baseline MCPServer with one `echo` tool (this script re-run with `--baseline-server`). Both
are warmed up, then called alternately, so drift on the machine hits both alike. Absolute times vary from
machine to machine; the ratios are the result:

    run_command / echo   what sandboxing a command costs on top of one MCP round trip
    run_command / spawn  the same against a bare `/bin/true` spawn (anyio.run_process) in this process

With `--by-workdir-size`, it measures instead how the round trip depends on what the workdir holds: one
server per quota mode ("filesystem": a filesystem per workdir, as root; "polled": a background count),
each with an empty session and a session holding `--files` files, called alternately in the same run:

    mode        empty ms   100000 files ms   ratio   create_session ms

Usage: tools/bench_roundtrip.py [--calls N] [--warmup N] [--json] [--by-workdir-size [--files N]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def _baseline_server() -> None:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("baseline")

    @server.tool()
    async def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    server.run()


def _summary(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "median_ms": statistics.median(ordered),
        "p10_ms": ordered[len(ordered) // 10],
        "p90_ms": ordered[(len(ordered) * 9) // 10],
        "min_ms": ordered[0],
    }


async def _measure(calls: int, warmup: int) -> dict[str, Any]:
    import anyio
    from mcp import Client, StdioServerParameters

    with tempfile.TemporaryDirectory() as home:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "XDG_CONFIG_HOME": home,
            "PYTHONPATH": str(REPO_ROOT),
            "LANG": "C.UTF-8",
        }
        if "HANZO_SANDBOX" in os.environ:
            env["HANZO_SANDBOX"] = os.environ["HANZO_SANDBOX"]
        sandbox = StdioServerParameters(
            command=sys.executable, args=["-m", "hanzo_sandbox_mcp", "serve"], env=env, cwd=str(REPO_ROOT)
        )
        baseline = StdioServerParameters(
            command=sys.executable, args=[str(Path(__file__).resolve()), "--baseline-server"], env=env
        )
        run_ms: list[float] = []
        echo_ms: list[float] = []
        spawn_ms: list[float] = []
        protection: dict[str, Any] = {}
        async with Client(sandbox) as server, Client(baseline) as base:
            for index in range(warmup + calls):
                start = time.perf_counter()
                result = await server.call_tool("run_command", {"command": "true"})
                middle = time.perf_counter()
                echoed = await base.call_tool("echo", {"text": "x"})
                end = time.perf_counter()
                await anyio.run_process(["/bin/true"])
                spawned = time.perf_counter()
                if result.is_error or echoed.is_error:
                    raise SystemExit(f"a call failed: {result.content} {echoed.content}")
                if index >= warmup:
                    run_ms.append((middle - start) * 1000)
                    echo_ms.append((end - middle) * 1000)
                    spawn_ms.append((spawned - end) * 1000)
                protection = (result.structured_content or {}).get("protection", {})
    run, echo, spawn = _summary(run_ms), _summary(echo_ms), _summary(spawn_ms)
    return {
        "calls": calls,
        "run_command_true": run,
        "echo_tool": echo,
        "spawn_true": spawn,
        "ratio_run_command_to_echo": run["median_ms"] / echo["median_ms"],
        "ratio_run_command_to_spawn": run["median_ms"] / spawn["median_ms"],
        "sandbox": protection.get("sandbox"),
        "layers_in_force": {
            key: protection.get(key)
            for key in ("fs_isolated", "network_isolated", "rlimits_applied", "seccomp", "landlock_abi", "namespaces")
        },
    }


_FILL = (
    "import os\n"
    "for d in range({dirs}):\n"
    "    os.mkdir(f'd{{d}}')\n"
    "    for f in range(1000):\n"
    "        open(f'd{{d}}/f{{f}}', 'w').close()\n"
)


def _server(home: str, quota_mode: str) -> Any:
    from mcp import StdioServerParameters

    config = Path(home) / f"{quota_mode}.toml"
    config.write_text(f'[sessions]\nquota_mode = "{quota_mode}"\n[exec]\npython = "/usr/bin/python3"\n')
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "PYTHONPATH": str(REPO_ROOT),
        "LANG": "C.UTF-8",
    }
    args = ["-m", "hanzo_sandbox_mcp", "serve", "--config", str(config)]
    return StdioServerParameters(command=sys.executable, args=args, env=env, cwd=str(REPO_ROOT))


async def _measure_sizes(calls: int, warmup: int, files: int) -> dict[str, Any]:
    from mcp import Client

    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as home:
        for quota_mode in ("auto", "polled"):
            async with Client(_server(home, quota_mode)) as server:
                caps = (await server.call_tool("capabilities", {})).structured_content or {}
                mode = caps.get("limits", {}).get("quota_mode", quota_mode)
                create_ms: list[float] = []
                for _ in range(max(10, calls // 4)):  # cold creation: a new workdir (a filesystem, when root)
                    start = time.perf_counter()
                    made = await server.call_tool("create_session", {})
                    create_ms.append((time.perf_counter() - start) * 1000)
                    closing = (made.structured_content or {})["session_id"]
                    await server.call_tool("close_session", {"session_id": closing})
                sessions = []
                for _ in range(2):
                    made = await server.call_tool("create_session", {})
                    sessions.append((made.structured_content or {})["session_id"])
                code = _FILL.format(dirs=files // 1000)
                filled = await server.call_tool("run_python", {"code": code, "session_id": sessions[1]})
                if filled.is_error:
                    raise SystemExit(f"filling the workdir failed: {filled.content}")
                samples: dict[str, list[float]] = {"empty": [], "full": []}
                for index in range(warmup + calls):
                    for label, session_id in zip(("empty", "full"), sessions, strict=True):
                        start = time.perf_counter()
                        result = await server.call_tool("run_command", {"command": "true", "session_id": session_id})
                        elapsed = (time.perf_counter() - start) * 1000
                        if result.is_error:
                            raise SystemExit(f"a call failed: {result.content}")
                        if index >= warmup:
                            samples[label].append(elapsed)
                empty, full = _summary(samples["empty"]), _summary(samples["full"])
                ratio = full["median_ms"] / empty["median_ms"]
                rows[mode] = {"empty": empty, "full": full, "ratio": ratio, "create_session": _summary(create_ms)}
    return {"calls": calls, "files": files, "modes": rows}


def _print_sizes(report: dict[str, Any]) -> None:
    files = report["files"]
    print(f"stdio round trip of run_command 'true' by workdir size, {report['calls']} calls each (medians)")
    print(f"  {'quota mode':<12} {'empty ms':>9} {f'{files} files ms':>16} {'ratio':>7} {'create_session ms':>18}")
    for mode, row in report["modes"].items():
        empty, full, create = row["empty"]["median_ms"], row["full"]["median_ms"], row["create_session"]["median_ms"]
        print(f"  {mode:<12} {empty:9.2f} {full:16.2f} {row['ratio']:6.2f}x {create:18.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100, help="measured calls per tool (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured calls first (default 10)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--by-workdir-size", action="store_true", help="empty vs --files files, per quota mode")
    parser.add_argument("--files", type=int, default=100_000, help="files in the full workdir (default 100000)")
    args = parser.parse_args()
    if args.baseline_server:
        _baseline_server()
        return
    sys.path.insert(0, str(REPO_ROOT))
    import anyio

    if args.by_workdir_size:
        sizes = anyio.run(_measure_sizes, args.calls, args.warmup, args.files)
        if args.json:
            print(json.dumps(sizes, indent=2))
        else:
            _print_sizes(sizes)
        return

    report = anyio.run(_measure, args.calls, args.warmup)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"stdio round trip, {report['calls']} calls each (sandbox: {report['sandbox']})")
    for label, key in (("run_command 'true'", "run_command_true"), ("echo tool", "echo_tool"),
                       ("spawn /bin/true", "spawn_true")):  # fmt: skip
        s = report[key]
        print(f"  {label:<18} median {s['median_ms']:7.2f} ms   p10 {s['p10_ms']:7.2f}   p90 {s['p90_ms']:7.2f}")
    print(f"  ratio run_command/echo   {report['ratio_run_command_to_echo']:.1f}x")
    print(f"  ratio run_command/spawn  {report['ratio_run_command_to_spawn']:.1f}x")
    print(f"  layers in force: {report['layers_in_force']}")


if __name__ == "__main__":
    main()
