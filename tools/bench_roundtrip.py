#!/usr/bin/env python3
"""Stdio round trip of `run_command "true"` against a baseline echo tool, measured in the same run.

Two servers are started over stdio with the official `mcp` client: the real one (`python -m hanzo_sandbox_mcp
serve`) and a baseline MCPServer with one `echo` tool (this script re-run with `--baseline-server`). Both
are warmed up, then called alternately, so drift on the machine hits both alike. Absolute times vary from
machine to machine; the ratios are the result:

    run_command / echo   what sandboxing a command costs on top of one MCP round trip
    run_command / spawn  the same against a bare `/bin/true` spawn (anyio.run_process) in this process

Usage: tools/bench_roundtrip.py [--calls N] [--warmup N] [--json]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100, help="measured calls per tool (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured calls first (default 10)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        _baseline_server()
        return
    sys.path.insert(0, str(REPO_ROOT))
    import anyio

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
