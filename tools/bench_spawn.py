#!/usr/bin/env python3
"""Benchmark: the cost of one sandboxed command, as ratios against baselines measured in the same run.

    python tools/bench_spawn.py [--runs N]

Baselines: a bare `/bin/true` through anyio (what an unsandboxed server pays), `unshare` with the same
namespaces, `bwrap --unshare-all` when bubblewrap is installed, and `python3 -I -S -c pass` (the floor of a
Python launcher). Prints medians in ms and each one's ratio to the sandboxed call. Not a test: it never
fails on timing, it reports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hanzo_sandbox_mcp.config import OutputSettings
from hanzo_sandbox_mcp.policy import SandboxPolicy
from hanzo_sandbox_mcp.runner import run_sandboxed
from hanzo_sandbox_mcp.sandbox import detect
from hanzo_sandbox_mcp.workdir import command_owner, create_workdir


async def _median_ms(runs: int, call: Callable[[], Awaitable[object]]) -> float:
    await call()  # warm-up (page cache, probe)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def _process(argv: list[str]) -> None:
    await anyio.run_process(argv, check=False)


async def main(runs: int) -> None:
    sandbox = detect()
    policy = SandboxPolicy()
    workdir = create_workdir(Path(tempfile.gettempdir()), "hanzo-bench-", command_owner(65534, 65534))
    bound = policy.with_workdir(workdir)
    output = OutputSettings()
    results: dict[str, float] = {}
    try:
        results["sandboxed /bin/true (run_sandboxed)"] = await _median_ms(
            runs, lambda: run_sandboxed(sandbox, bound, ["/bin/true"], timeout_s=30, output=output)
        )
        results["bare /bin/true (anyio.run_process)"] = await _median_ms(runs, lambda: _process(["/bin/true"]))
        results["python3 -I -S -c pass"] = await _median_ms(
            runs, lambda: _process([sys.executable, "-I", "-S", "-c", "pass"])
        )
        unshare = shutil.which("unshare")
        if unshare:
            results["unshare -U -r -n -p -f -m -i -u true"] = await _median_ms(
                runs, lambda: _process([unshare, "-U", "-r", "-n", "-p", "-f", "-m", "-i", "-u", "true"])
            )
        bwrap = shutil.which("bwrap")
        if bwrap:
            results["bwrap --unshare-all (ro /, dev, proc) true"] = await _median_ms(
                runs,
                lambda: _process(
                    [bwrap, "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"]
                ),
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    ours = results["sandboxed /bin/true (run_sandboxed)"]
    print(f"sandbox: {sandbox.name}, uid {os.getuid()}, {runs} runs each, medians")
    for name, ms in results.items():
        print(f"  {name:<45} {ms:8.2f} ms   sandboxed/this = {ours / ms:6.2f}x")
    if "bwrap" not in " ".join(results):
        print("  (bubblewrap not installed: `apt-get install bubblewrap` adds it as a baseline)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    anyio.run(main, parser.parse_args().runs)
