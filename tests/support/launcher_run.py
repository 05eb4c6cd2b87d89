"""Run the real launcher on a plan, optionally with one step broken on purpose, and collect its report.

`run_launcher(plan, mutation=...)` runs a one-call session in a fresh `python -I -S` like a cold session
start, but first executes `mutation` (Python source) in that interpreter, before the launcher is imported:
patching a module attribute there (`rlimits.apply_rlimits = ...`) breaks that step in the supervisor, the
init and the command alike, as a bug would. The plan is sealed with a fresh token and every status line is fed to the
strict `LaunchReport`, so the test sees exactly what the server would report.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hanzo_sandbox_mcp.launch import LaunchReport, seal, start_launcher
from hanzo_sandbox_mcp.launch_plan import LaunchPlan

__all__ = ["LauncherRun", "run_launcher"]

REPO_ROOT = Path(__file__).resolve().parents[2]
_MAIN = """
import os, sys
sys.path.insert(0, {root!r})
{mutation}
from hanzo_sandbox_mcp import launcher
os._exit(launcher.main(["launcher.py", *sys.argv[1:]]))
"""


@dataclass
class LauncherRun:
    report: LaunchReport
    returncode: int
    stdout: str
    stderr: str


def run_launcher(plan: LaunchPlan, *, mutation: str = "", timeout_s: float = 30.0) -> LauncherRun:
    """The launcher's whole run (bounded by `timeout_s`); status lines are at most a few KB, so the pipe
    never fills while the launcher runs."""
    sealed, report = seal(plan)
    code = _MAIN.format(root=str(REPO_ROOT), mutation=mutation)
    run = start_launcher(
        sealed.to_wire(),
        capture=True,
        argv_for=lambda ctrl, status: [sys.executable, "-I", "-S", "-c", code, "session", str(ctrl), str(status)],
    )
    proc = run.proc
    # The one-call session ends once its call has (its control socket closed now, its cancel pipe after).
    run.control.close()
    with os.fdopen(run.status_fd, "rb") as status:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            run.close()
        report.feed_all(status.read())
    return LauncherRun(report, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
