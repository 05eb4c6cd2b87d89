"""tools/bench.py runs end to end and its JSON has the shape the README and the coordinator's table rely on.

A smoke test only: `--quick` takes a handful of samples, and nothing here looks at how fast anything was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "tools" / "bench.py"
SERIES_KEYS = {"unit", "n", "median", "p10", "p90", "p99", "min", "max"}


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=180, cwd=REPO_ROOT, check=False
    )


def test_bench_quick_spawn_json_has_every_figure_field() -> None:
    done = _bench("--quick", "--only", "spawn", "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["version"] == 1 and report["quick"] is True
    assert isinstance(report["machine"]["uid"], int) and isinstance(report["machine"]["pool_size_known"], bool)
    assert list(report["figures"]) == ["spawn"]
    spawn = report["figures"]["spawn"]
    assert spawn["skipped"] is None and spawn["unit"] == "ms"
    assert spawn["value"] > 0 and spawn["n"] == spawn["series"]["library"]["n"] > 0
    for name, series in spawn["series"].items():
        assert set(series) == SERIES_KEYS, name
        assert series["min"] <= series["median"] <= series["max"], name
    assert {"library", "bare"} <= set(spawn["series"])
    if spawn["baseline"] is None:  # bubblewrap missing or broken here: the row says why instead of a ratio
        assert "bwrap" not in spawn["series"] and any("bwrap" in note for note in spawn["notes"])
        assert spawn["ratio"] is None and spawn["met"] is None
    else:
        assert spawn["baseline"] == spawn["series"]["bwrap"]["median"]
        assert spawn["ratio"] == spawn["value"] / spawn["baseline"]
        assert isinstance(spawn["met"], bool) and spawn["verdict"].startswith("met" if spawn["met"] else "missed by")
    assert spawn["target"] == {"kind": "ratio_max", "limit": 0.7, "aim": 0.5}
    assert spawn["target_text"] == "<= 0.70x (aim 0.50x)"
    assert "sandbox=" in spawn["facts"]["layers"]


def test_bench_refuses_an_unknown_figure_by_name() -> None:
    done = _bench("--only", "spawn,warp")
    assert done.returncode == 2
    assert "unknown figure warp" in done.stderr and "choose from spawn" in done.stderr
