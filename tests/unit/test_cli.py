"""The command line, run for real: `python -m hanzo_sandbox_mcp run|doctor` in a subprocess.

Every run gets a clean environment (no user config file, no HANZO_SANDBOX unless a test sets it) and a
generous hang guard; exit codes, JSON, and the one-line error contract are checked as a user sees them.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hanzo_sandbox_mcp.protection import Layer
from hanzo_sandbox_mcp.version import package_version

REPO_ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
COMMAND_UID = 65534 if IS_ROOT else os.getuid()
HANG_GUARD_S = 90

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="runs the Linux sandbox")


@pytest.fixture(scope="module")
def base_dir() -> Iterator[Path]:
    """A 0711 parent (traversable by the command uid, like a sessions root) for workdirs and config."""
    path = Path(tempfile.mkdtemp(prefix="hanzo-cli-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cli_env(base_dir: Path) -> dict[str, str]:
    xdg = base_dir / "xdg-empty"
    xdg.mkdir(exist_ok=True)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(base_dir),
        "XDG_CONFIG_HOME": str(xdg),  # no user config file: the embedded defaults
        "PYTHONPATH": str(REPO_ROOT),
        "LANG": "C.UTF-8",
    }


@pytest.fixture
def cli(cli_env: dict[str, str]) -> Any:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hanzo_sandbox_mcp", *args],
            capture_output=True,
            text=True,
            env={**cli_env, **(env or {})},
            cwd=str(REPO_ROOT),
            timeout=HANG_GUARD_S,
            check=False,
        )

    return run


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.stdout.strip(), f"no output; rc={proc.returncode} stderr={proc.stderr!r}"
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    return data


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {proc.stderr!r}"
    assert lines[0].startswith("hanzo-sandbox-mcp: ")
    return lines[0]


# --- run ---------------------------------------------------------------------------------------------


def test_version_is_the_package_version(cli: Any) -> None:
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"hanzo-sandbox-mcp {package_version()}"


def test_run_json_echo(cli: Any) -> None:
    proc = cli("run", "--json", "--", "echo", "hi")
    assert proc.returncode == 0, proc.stderr
    data = _json(proc)
    assert data["exit_code"] == 0
    assert data["signal"] is None
    assert data["stdout"] == "hi\n"
    assert data["stderr"] == ""
    assert data["timed_out"] is False
    assert data["error"] is None
    assert data["resource_usage"]["peak_rss_kb"] > 0
    protection = data["protection"]
    assert protection["sandbox"] == "linux"
    assert protection["network"] == "loopback"
    assert protection["uid"] == COMMAND_UID
    for key in ("fs_isolated", "network_isolated", "rlimits_applied", "env_scrubbed", "seccomp", "no_new_privs"):
        assert protection[key] is True, key
    assert "Traceback" not in proc.stderr


def test_run_streams_stdout_and_stderr_without_json(cli: Any) -> None:
    proc = cli("run", "--", "sh", "-c", "echo out; echo err >&2")
    assert proc.returncode == 0
    assert proc.stdout == "out\n"
    assert proc.stderr == "err\n"


#: OSC 52 (write the clipboard), OSC 0 (window title), CSI (clear the screen), a carriage return that hides
#: the start of a line, a byte that is not UTF-8, the one-byte CSI of 8-bit terminals, a bidi override.
HOSTILE_OUTPUT = b"\x1b]52;c;aGVsbG8=\x07\x1b]0;pwned\x07\x1b[2Jsafe\rrm -rf\xff \xc2\x9b \xe2\x80\xae\tend\n"
ESCAPED_OUTPUT = b"\\x1b]52;c;aGVsbG8=\\x07\\x1b]0;pwned\\x07\\x1b[2Jsafe\\rrm -rf\\xff \\u009b \\u202e\tend\n"


def _printf_argv(data: bytes) -> list[str]:
    return ["printf", "".join(f"\\{byte:03o}" for byte in data)]


def _run_with_terminals(
    cli_env: dict[str, str], args: list[str], *, stdout_tty: bool, stderr_tty: bool
) -> tuple[bytes, bytes, int]:
    """Run the CLI with stdout and/or stderr on a pseudo-terminal (the others on pipes): what each received."""
    ends: dict[str, tuple[int, int]] = {}
    for name, on_tty in (("stdout", stdout_tty), ("stderr", stderr_tty)):
        ends[name] = pty.openpty() if on_tty else os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "hanzo_sandbox_mcp", *args],
            stdin=subprocess.DEVNULL,
            stdout=ends["stdout"][1],
            stderr=ends["stderr"][1],
            env=cli_env,
            cwd=str(REPO_ROOT),
        )
        for _, write_end in ends.values():
            os.close(write_end)
        received = {name: _read_to_end(read_end) for name, (read_end, _) in ends.items()}
        return received["stdout"], received["stderr"], process.wait(timeout=HANG_GUARD_S)
    finally:
        for read_end, _ in ends.values():
            os.close(read_end)


def _read_to_end(fd: int) -> bytes:
    # Both ends are drained in turn: the outputs here are small enough for the pipe and pty buffers.
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the pseudo-terminal's other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _tty_text(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")  # the terminal's own output processing (onlcr)


def test_run_escapes_control_sequences_on_a_terminal(cli_env: dict[str, str]) -> None:
    out, err, status = _run_with_terminals(
        cli_env, ["run", "--", *_printf_argv(HOSTILE_OUTPUT)], stdout_tty=True, stderr_tty=False
    )
    assert status == 0, err
    assert _tty_text(out) == ESCAPED_OUTPUT
    assert b"\x1b" not in out and b"\x07" not in out


def test_run_escapes_stderr_on_a_terminal_while_piped_stdout_stays_exact(cli_env: dict[str, str]) -> None:
    script = 'printf "$1"; printf "$1" >&2'
    octal = _printf_argv(HOSTILE_OUTPUT)[1]
    out, err, status = _run_with_terminals(
        cli_env, ["run", "--", "sh", "-c", script, "sh", octal], stdout_tty=False, stderr_tty=True
    )
    assert status == 0
    assert out == HOSTILE_OUTPUT
    assert _tty_text(err) == ESCAPED_OUTPUT


def test_run_raw_writes_control_sequences_to_a_terminal_unchanged(cli_env: dict[str, str]) -> None:
    out, err, status = _run_with_terminals(
        cli_env, ["run", "--raw", "--", *_printf_argv(HOSTILE_OUTPUT)], stdout_tty=True, stderr_tty=False
    )
    assert status == 0, err
    assert _tty_text(out) == HOSTILE_OUTPUT  # the control bytes arrive as they are


def test_run_output_to_a_pipe_is_byte_exact(cli_env: dict[str, str]) -> None:
    out, _err, status = _run_with_terminals(
        cli_env, ["run", "--", *_printf_argv(HOSTILE_OUTPUT)], stdout_tty=False, stderr_tty=False
    )
    assert status == 0 and out == HOSTILE_OUTPUT


def test_error_messages_quoting_the_command_are_escaped_on_a_terminal(cli_env: dict[str, str]) -> None:
    hostile = "/no-such-\x1b]0;pwned\x07"
    _out, err, status = _run_with_terminals(cli_env, ["run", "--", hostile], stdout_tty=False, stderr_tty=True)
    assert status != 0 and b"\x1b" not in err and b"\\x1b]0;pwned\\x07" in err


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["stream", "json"])
def test_exit_code_propagates(cli: Any, json_flag: list[str]) -> None:
    proc = cli("run", *json_flag, "--", "sh", "-c", "exit 7")
    assert proc.returncode == 7
    if json_flag:
        assert _json(proc)["exit_code"] == 7


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGKILL], ids=["USR1", "KILL"])
def test_death_by_signal_exits_128_plus_n(cli: Any, signum: signal.Signals) -> None:
    proc = cli("run", "--json", "--", "sh", "-c", f"kill -{signum.name[3:]} $$")
    assert proc.returncode == 128 + signum
    data = _json(proc)
    assert data["exit_code"] is None
    assert data["signal"] == signum


def test_command_not_found_exits_127_with_the_reason_in_json(cli: Any) -> None:
    proc = cli("run", "--json", "--", "no-such-command-hanzo")
    assert proc.returncode == 127
    data = _json(proc)
    assert data["exit_code"] == 127
    assert "no-such-command-hanzo: command not found" in data["stderr"]
    assert "Traceback" not in proc.stderr


def test_command_not_found_is_explained_on_stderr_when_streaming(cli: Any) -> None:
    proc = cli("run", "--", "no-such-command-hanzo")
    assert proc.returncode == 127
    assert "no-such-command-hanzo: command not found" in proc.stderr


def test_timeout_kills_and_returns_quickly(cli: Any) -> None:
    started = time.monotonic()
    proc = cli("run", "--json", "--timeout", "0.5", "--", "sleep", "30")
    elapsed = time.monotonic() - started
    assert elapsed < 25, f"took {elapsed:.1f} s: the 30 s sleep was not killed"  # hang guard only
    data = _json(proc)
    assert data["timed_out"] is True
    assert data["exit_code"] is None
    assert data["signal"] == signal.SIGKILL
    assert proc.returncode == 128 + signal.SIGKILL


def test_timeout_is_announced_on_stderr_without_json(cli: Any) -> None:
    proc = cli("run", "--timeout", "0.5", "--", "sleep", "30")
    assert proc.returncode == 128 + signal.SIGKILL
    assert "hanzo-sandbox-mcp: timed out after 0.5 s" in proc.stderr


def test_network_flag_reaches_the_policy(cli: Any) -> None:
    data = _json(cli("run", "--json", "--network", "none", "--", "true"))
    assert data["protection"]["network"] == "none"
    assert data["protection"]["network_isolated"] is True


def test_strict_runs_when_every_layer_applies(cli: Any) -> None:
    proc = cli("run", "--json", "--strict", "--", "true")
    assert proc.returncode == 0, proc.stderr
    missing = _json(proc)["protection"]["missing"]
    assert all(m.startswith("cgroup") for m in missing), missing


def test_a_fresh_workdir_is_removed_after_the_run(cli: Any) -> None:
    proc = cli("run", "--json", "--", "sh", "-c", "pwd; touch made-here")
    path = Path(_json(proc)["stdout"].strip())
    made = path.parent if path.name == "work" else path  # as root: `work/` on a filesystem mounted at hanzo-run-*
    assert made.name.startswith("hanzo-run-")
    assert not made.exists()


# --- run --workdir: runs there, never changes its owner or mode ------------------------------------------


def _meta(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.mark.parametrize("mode", [0o700, 0o750])
def test_workdir_owned_by_the_command_user(cli: Any, base_dir: Path, mode: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="w-", dir=base_dir))
    workdir.chmod(mode)
    if IS_ROOT:
        os.chown(workdir, COMMAND_UID, COMMAND_UID)
    before = _meta(workdir)
    proc = cli("run", "--json", "--workdir", str(workdir), "--", "sh", "-c", "pwd; id -u; echo x > made-here")
    data = _json(proc)
    assert data["exit_code"] == 0, data
    assert data["stdout"].splitlines() == [str(workdir), str(COMMAND_UID)]
    assert (workdir / "made-here").read_text() == "x\n"
    assert _meta(workdir) == before


@pytest.mark.skipif(not IS_ROOT, reason="a directory owned by root needs a root server")
def test_a_root_owned_workdir_is_not_chowned(cli: Any, base_dir: Path) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="w-", dir=base_dir))
    workdir.chmod(0o755)
    before = _meta(workdir)
    assert before[0] == 0
    proc = cli("run", "--json", "--workdir", str(workdir), "--", "sh", "-c", "pwd; id -u")
    data = _json(proc)
    assert data["stdout"].splitlines() == [str(workdir), "65534"]  # the sandbox uid, never root
    assert _meta(workdir) == before


def test_a_missing_workdir_is_a_usage_error(cli: Any, base_dir: Path) -> None:
    line = _one_line_error(cli("run", "--workdir", str(base_dir / "nope"), "--", "true"))
    assert "is not an existing directory" in line


# --- usage and configuration errors: exit 2, one line, no traceback ----------------------------------------


def test_allow_domain_reaches_the_allowlist_policy(cli: Any) -> None:
    data = _json(cli("run", "--json", "--network", "allowlist", "--allow-domain", "PyPI.org", "--", "true"))
    assert data["exit_code"] == 0 and data["protection"]["network"] == "allowlist"


def test_allow_domain_without_the_allowlist_mode_is_refused(cli: Any) -> None:
    assert "--allow-domain needs --network allowlist" in _one_line_error(
        cli("run", "--allow-domain", "x.com", "--", "true")
    )


def test_allow_domain_with_a_bad_name_is_one_clear_line(cli: Any) -> None:
    line = _one_line_error(cli("run", "--network", "allowlist", "--allow-domain", "*.com", "--", "true"))
    assert "top-level domain" in line


def test_bad_network_value(cli: Any) -> None:
    proc = cli("run", "--network", "bogus", "--", "true")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert "argument --network: invalid choice: 'bogus'" in errors[0]
    assert proc.stderr.strip().splitlines()[-1] == errors[0]


@pytest.mark.parametrize(
    "args", [["run"], ["run", "--json"], ["run", "--json", "--"]], ids=["bare", "json", "dashdash"]
)
def test_missing_command(cli: Any, args: list[str]) -> None:
    line = _one_line_error(cli(*args))
    assert "no command given" in line


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_non_positive_timeout(cli: Any, value: str) -> None:
    line = _one_line_error(cli("run", "--timeout", value, "--", "true"))
    assert "--timeout must be a positive number of seconds" in line


def test_bogus_hanzo_sandbox_value(cli: Any) -> None:
    line = _one_line_error(cli("run", "--", "true", env={"HANZO_SANDBOX": "bogus"}))
    assert "HANZO_SANDBOX='bogus' is not valid" in line
    assert "auto, on, off" in line


def test_missing_config_file(cli: Any, base_dir: Path) -> None:
    line = _one_line_error(cli("run", "--config", str(base_dir / "nope.toml"), "--", "true"))
    assert "does not exist" in line


# --- sandbox modes -------------------------------------------------------------------------------------


def test_hanzo_sandbox_off_runs_unconfined_and_says_so(cli: Any) -> None:
    proc = cli("run", "--json", "--", "true", env={"HANZO_SANDBOX": "off"})
    assert proc.returncode == 0
    data = _json(proc)
    assert data["protection"]["sandbox"] == "null"
    assert data["protection"]["fs_isolated"] is False
    assert "sandbox disabled" in proc.stderr


def test_hanzo_sandbox_on_uses_the_os_sandbox(cli: Any) -> None:
    data = _json(cli("run", "--json", "--", "true", env={"HANZO_SANDBOX": "ON"}))
    assert data["protection"]["sandbox"] == "linux"


# --- doctor --------------------------------------------------------------------------------------------


def test_doctor_json(cli: Any) -> None:
    proc = cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    data = _json(proc)
    assert data["sandbox"] == "linux"
    assert data["mode"] == "auto"
    assert data["running_as_uid"] == os.getuid()
    assert isinstance(data["ok"], bool)
    layers = data["layers"]
    assert sorted(layer["layer"] for layer in layers) == sorted(layer.value for layer in Layer)
    for layer in layers:
        assert isinstance(layer["available"], bool)
        assert isinstance(layer["detail"], str) and layer["detail"]
    effective = data["effective"]
    for key in ("fs_isolated", "network_isolated", "rlimits_applied"):
        assert isinstance(effective[key], bool)
    assert effective["sandbox"] == "linux"


def test_doctor_text(cli: Any) -> None:
    proc = cli("doctor")
    assert proc.returncode == 0
    assert proc.stdout.startswith("platform: linux ")
    assert "sandbox:  linux (HANZO_SANDBOX=auto" in proc.stdout
    assert "verdict: " in proc.stdout


def test_doctor_with_hanzo_sandbox_off(cli: Any) -> None:
    data = _json(cli("doctor", "--json", env={"HANZO_SANDBOX": "off"}))
    assert data["sandbox"] == "null"
    assert data["mode"] == "off"
    assert data["ok"] is False
