"""A server whose Python the command cannot reach (pyenv under a 0700 /root, uv, pipx) still runs commands.

The launcher runs with the server's interpreter; after the uid switch and the pivot that interpreter's
standard library is gone for the command process, so any import from then on fails. `os.execvpe` imports
`warnings` lazily, which broke every command not given as an absolute path (`ModuleNotFoundError`).

These tests run the server side (`hanzo-sandbox-mcp run`, `SandboxService`) with such an interpreter,
as root (only a root server switches to a uid that cannot reach it), and the server's dependencies from
this checkout's venv on PYTHONPATH. The positive control for each is the precondition that the sandbox
uid really cannot reach that interpreter.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest

from hanzo_sandbox_mcp.linux.paths import reachable_by

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_UID = 65534
pytestmark = pytest.mark.skipif(os.uname().sysname != "Linux", reason="the Linux launcher")


def _unreachable_python() -> str:
    if os.geteuid() != 0:
        pytest.skip("only a root server switches the command to a uid that cannot reach the server's Python")
    for candidate in sorted(glob.glob("/root/.pyenv/versions/3.11*/bin/python3.11")):
        real = os.path.realpath(candidate)
        stdlib = os.path.join(os.path.dirname(os.path.dirname(real)), "lib", "python3.11")
        if os.access(real, os.X_OK) and os.path.isdir(stdlib) and not reachable_by(stdlib, SANDBOX_UID, SANDBOX_UID):
            return real
    pytest.skip("no Python 3.11 in a directory uid 65534 cannot reach (a pyenv under a 0700 /root)")


@pytest.fixture(scope="module")
def server_python() -> str:
    return _unreachable_python()


def _env(tmp_path: Path) -> dict[str, str]:
    site = sysconfig.get_paths()["purelib"]  # this venv's packages: the same Python minor version
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": f"{REPO_ROOT}:{site}", "LANG": "C.UTF-8"}


def _server_side(server_python: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The server's Python running `args`, with this checkout's package and dependencies."""
    return subprocess.run(
        [server_python, *args],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=str(tmp_path),
        timeout=120,
        check=False,
    )


def _run_cli(server_python: str, tmp_path: Path, *argv: str) -> dict:
    proc = _server_side(server_python, tmp_path, "-m", "hanzo_sandbox_mcp", "run", "--json", "--", *argv)
    assert proc.stdout.startswith("{"), proc.stderr
    return json.loads(proc.stdout)


def test_the_server_python_is_unreachable_for_the_command(server_python: str, tmp_path: Path) -> None:
    """Precondition, seen from inside the sandbox: the server's interpreter cannot be run there."""
    result = _run_cli(server_python, tmp_path, "/bin/sh", "-c", f"test -x {server_python} && echo reachable; true")
    assert result["exit_code"] == 0, result
    assert "reachable" not in result["stdout"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["ls", "/usr"], "bin\n"), (["python3", "-c", "print(6 * 7)"], "42\n"), (["env"], "PATH=")],
    ids=["ls", "python3", "env"],
)
def test_a_program_found_on_path_runs(server_python: str, tmp_path: Path, argv: list[str], expected: str) -> None:
    result = _run_cli(server_python, tmp_path, *argv)
    assert result["exit_code"] == 0, result
    assert expected in result["stdout"]
    assert "ModuleNotFoundError" not in result["stderr"]


def test_missing_and_unexecutable_programs_get_the_shells_codes(server_python: str, tmp_path: Path) -> None:
    missing = _run_cli(server_python, tmp_path, "no-such-program-hanzo")
    assert missing["exit_code"] == 127 and "command not found" in missing["stderr"], missing
    not_exec = _run_cli(server_python, tmp_path, "/usr")  # a directory: EACCES
    assert not_exec["exit_code"] == 126 and "cannot execute" in not_exec["stderr"], not_exec


SERVICE_SCRIPT = """
import anyio, json, sys
from pathlib import Path
from hanzo_sandbox_mcp.config import Settings
from hanzo_sandbox_mcp.service import SandboxService

async def main():
    settings = Settings.model_validate({"sessions": {"root": sys.argv[1]}})
    async with SandboxService(settings) as service:
        command = await service.run_command("python3 -c 'print(6 * 7)' && ls /usr | head -1")
        code = await service.run_python("import sys; print(sys.version_info[:2] >= (3, 8))")
    for result in (command, code):
        print(json.dumps({"exit_code": result.exit_code, "stdout": result.stdout, "error": result.error}))

anyio.run(main)
"""


def test_run_command_and_run_python_through_the_service(server_python: str, tmp_path: Path) -> None:
    # Sessions under a directory the sandbox uid may traverse (pytest's tmp_path is 0700).
    sessions = Path(tempfile.mkdtemp(prefix="hanzo-unreachable-python-", dir="/var/tmp"))
    sessions.chmod(0o711)
    try:
        proc = _server_side(server_python, tmp_path, "-c", SERVICE_SCRIPT, str(sessions))
    finally:
        shutil.rmtree(sessions, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    command, code = (json.loads(line) for line in proc.stdout.splitlines()[-2:])
    assert (command["exit_code"], command["stdout"]) == (0, "42\nbin\n"), command
    assert (code["exit_code"], code["stdout"]) == (0, "True\n"), code
