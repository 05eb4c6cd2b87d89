#!/usr/bin/env python3
"""Benchmark of the sandbox against its baselines, every figure measured side by side in one run.

    python tools/bench.py [--quick] [--only NAME[,NAME]] [--json] [--by-workdir-size [--files N]]

Figures (medians unless the unit says otherwise; each measured in the same rounds as its baseline):

    spawn       library `run_command "true"` in a warm session        vs bwrap --unshare-all (also unshare, bare)
    stdio       MCP tools/call run_command "true" over stdio          vs bwrap's spawn alone (also an echo tool)
    http        streamable HTTP call without session_id (new session) vs bwrap's spawn
    throughput  100 calls, concurrency 10, 10 sessions, over stdio   vs an unsandboxed MCP server + subprocess
    cold        create_session + first call, pool empty               vs a later call in the same session
    pss         the server's PSS with 64 idle sessions                vs the idle server
    workdir     a call in a workdir of 100k files (per quota mode)    vs an empty workdir (only when asked for)

Prints one row per figure (value, baseline, ratio, target, met or missed by how much) and the details of every
series; `--json` prints all of it as one JSON object instead. Not a test: it never fails on timing. Exit
status 0 when every figure asked for was measured, 1 when one could not be, 2 for bad usage, 128 + the signal
when interrupted. Progress goes to stderr. Servers, sessions and temporary files are cleaned up on every exit path,
Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import anyio  # noqa: E402
from benchkit.figures import FIGURES, Run, Sizes  # noqa: E402
from benchkit.model import Figure  # noqa: E402
from benchkit.servers import pool_size_known  # noqa: E402
from benchkit.spawns import baselines  # noqa: E402

DEFAULT_FIGURES = ("spawn", "stdio", "http", "throughput", "cold", "pss")
#: No figure may run longer than this (a stuck server stops the figure, not the run).
FIGURE_TIMEOUT_S = 900.0
JSON_VERSION = 1


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _machine() -> dict[str, Any]:
    uname = os.uname()
    return {
        "uid": os.geteuid(),
        "cpus": os.cpu_count(),
        "kernel": f"{uname.sysname} {uname.release} {uname.machine}",
        "python": sys.version.split()[0],
        "load_average_start": list(os.getloadavg()),
        "hanzo_sandbox": os.environ.get("HANZO_SANDBOX"),
    }


async def _measure(names: Sequence[str], run: Run) -> list[Figure]:
    figures: list[Figure] = []
    for name in names:
        _say(f"measuring {name}")
        started = time.perf_counter()
        try:
            with anyio.fail_after(FIGURE_TIMEOUT_S):
                figures.extend(await FIGURES[name](run))
        except Exception as exc:  # one broken figure is reported, the others still run
            why = f"failed: {type(exc).__name__}: {exc}"
            _say(f"{name} {why}")
            figures.append(Figure(name=name, title=name, unit="", skipped=why))
        _say(f"{name} took {time.perf_counter() - started:.1f} s")
    return figures


async def _main(names: Sequence[str], run: Run) -> list[Figure] | signal.Signals:
    """The figures, or the signal that stopped the run (everything started was cleaned up by then)."""
    stopped: list[signal.Signals] = []
    async with anyio.create_task_group() as group:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
                async for signum in signals:
                    stopped.append(signal.Signals(signum))
                    _say(f"{stopped[0].name}: stopping, cleaning up")
                    group.cancel_scope.cancel()
                    return

        group.start_soon(stop_on_signal)
        figures = await _measure(names, run)
        group.cancel_scope.cancel()
    return stopped[0] if stopped else figures


# -- output ----------------------------------------------------------------------------------------------


def _amount(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    digits = 2 if unit == "ms" and value < 100 else 1
    return f"{value:.{digits}f} {unit}"


def table(figures: Sequence[Figure]) -> str:
    header = ("figure", "value", "baseline", "ratio", "target", "result", "n")
    rows = [header]
    for figure in figures:
        if figure.skipped is not None:
            rows.append((figure.title, "-", "-", "-", "-", figure.skipped, "-"))
            continue
        verdict = figure.verdict
        ratio = figure.ratio
        baseline = _amount(figure.baseline, figure.unit)
        rows.append(
            (
                figure.title,
                _amount(figure.value, figure.unit),
                f"{baseline} ({figure.baseline_label})" if figure.baseline is not None else "-",
                f"{ratio:.2f}x" if ratio is not None else "-",
                figure.target.describe(figure.unit) if figure.target is not None else "-",
                verdict.text if verdict is not None else "reported",
                str(figure.n),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def details(figures: Sequence[Figure]) -> str:
    lines: list[str] = []
    for figure in figures:
        if figure.skipped is not None:
            continue
        lines.append(f"{figure.name}:")
        for name, series in figure.series.items():
            lines.append(
                f"  {name:<22} median {series.median:9.2f} {series.unit:<8} p10 {series.p10:9.2f}  p90 "
                f"{series.p90:9.2f}  p99 {series.p99:9.2f}  n {series.n}"
            )
        for name, fact in figure.facts.items():
            shown = f"{fact:.2f}" if isinstance(fact, float) else str(fact)
            lines.append(f"  {name:<22} {shown}")
        lines.extend(f"  note: {note}" for note in figure.notes)
    return "\n".join(lines)


def _parse_only(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in FIGURES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown figure {', '.join(unknown) or '(none given)'}; choose from {', '.join(FIGURES)}"
        )
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few iterations: a smoke test, not a measurement")
    parser.add_argument("--only", type=_parse_only, metavar="NAME[,NAME]", help="measure only these figures")
    parser.add_argument("--json", action="store_true", help="print every figure as one JSON object")
    parser.add_argument("--by-workdir-size", action="store_true", help="add the workdir figure")
    parser.add_argument("--files", type=int, help="files in the full workdir (default 100000, --quick 2000)")
    args = parser.parse_args(argv)
    names: list[str] = args.only or [*DEFAULT_FIGURES, *(["workdir"] if args.by_workdir_size else [])]
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.files is not None:
        if args.files < 1000:
            parser.error("--files must be at least 1000")
        sizes = dataclasses.replace(sizes, workdir_files=args.files)

    machine = _machine()
    directory = Path(tempfile.mkdtemp(prefix="hanzo-bench-"))
    try:
        run = Run(directory=directory, sizes=sizes, baselines=baselines(), pool_size_known=pool_size_known())
        figures = anyio.run(_main, names, run)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if isinstance(figures, signal.Signals):
        return 128 + figures.value
    machine["load_average_end"] = list(os.getloadavg())
    machine["pool_size_known"] = run.pool_size_known
    if args.json:
        report = {
            "version": JSON_VERSION,
            "quick": args.quick,
            "machine": machine,
            "figures": {figure.name: figure.to_json() for figure in figures},
        }
        print(json.dumps(report, indent=2))
    else:
        load = " ".join(f"{value:.1f}" for value in machine["load_average_start"])
        print(
            f"uid {machine['uid']}, {machine['cpus']} CPUs, {machine['kernel']}, load {load} at start"
            f"{', QUICK (smoke test, not a measurement)' if args.quick else ''}"
        )
        print(table(figures))
        print()
        print(details(figures))
    return 1 if any(figure.skipped is not None for figure in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
