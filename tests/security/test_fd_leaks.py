"""File descriptors leaking into the command: only 0, 1 and 2 may be open at exec.

A leaked descriptor is a capability the sandbox cannot take back: a server socket, the launcher's status
pipe (to forge the protection report), or a secret file the server had open. The test process opens
inheritable descriptors of each kind before the call; none may reach the command.
"""

from __future__ import annotations

import os
import shlex
import socket

from _security_support import assert_protection, json_lines, py

FD_LIST = r"""
import json, os
me = f"/proc/{os.getpid()}/fd"
fds = {}
for name in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{name}")
    except OSError:
        continue  # the directory fd listdir used, already closed
    fds[int(name)] = target
print(json.dumps(fds))
"""


def test_only_stdio_fds_are_open_in_the_command(sandbox_run):
    result = sandbox_run("ls -l /proc/self/fd; " + py(FD_LIST))
    assert result.exit_code == 0, result
    rows = json_lines(result.stdout)
    assert rows, result
    fds = {int(k): v for k, v in rows[-1].items()}
    assert set(fds) == {0, 1, 2}, f"unexpected descriptors in the command: {fds}\n{result.stdout}"
    # `ls -l /proc/self/fd` shows 0-2 and the directory ls itself opened, nothing else.
    ls_fds = [line.split()[-3] for line in result.stdout.splitlines() if " -> " in line]
    extra = [fd for fd in ls_fds if fd not in ("0", "1", "2", "3")]
    assert not extra, result.stdout


def test_inheritable_server_fds_do_not_reach_the_command(sandbox_run, private_secret):
    """The server holds an inheritable secret file, a listening socket and a pipe at spawn time."""
    secret_fd = os.open(private_secret.path, os.O_RDONLY)
    os.set_inheritable(secret_fd, True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.set_inheritable(True)
    pipe_r, pipe_w = os.pipe()
    os.set_inheritable(pipe_r, True)
    os.set_inheritable(pipe_w, True)
    try:
        numbers = [secret_fd, sock.fileno(), pipe_r, pipe_w]
        reads = "; ".join(f"cat <&{n} 2>/dev/null; cat /proc/self/fd/{n} 2>/dev/null" for n in numbers if n < 10)
        result = sandbox_run(py(FD_LIST) + "; " + (reads or "true") + "; true")
        rows = json_lines(result.stdout)
        assert rows, result
        fds = {int(k): v for k, v in rows[0].items()}
        assert set(fds) == {0, 1, 2}, f"server descriptors leaked into the command: {fds}"
        assert private_secret.content not in result.stdout
        assert str(private_secret.path) not in result.stdout
    finally:
        os.close(secret_fd)
        sock.close()
        os.close(pipe_r)
        os.close(pipe_w)


def test_stdio_fds_are_pipes_or_dev_null(sandbox_run):
    """0-2 are the runner's pipes (or /dev/null), never a host file or terminal."""
    result = sandbox_run(py(FD_LIST))
    fds = json_lines(result.stdout)[0]
    for fd, target in fds.items():
        assert target.startswith("pipe:") or target == "/dev/null", f"fd {fd} -> {target}"


# Forged status lines in the parser's own syntax (Python literals, as the launcher writes them): without a
# token, with a wrong one, and with a guessed empty one. Were any accepted, the exit status and the layers
# would change; the unit tests in test_launch_report.py show that the same events with the right token do.
_FORGED_EVENTS = (
    {"event": "exit", "status": 0, "exit_code": 0, "signal": None, "cpu_user_s": 0.0, "cpu_sys_s": 0.0,
     "peak_rss_kb": 1},
    {"event": "applied", "errors": {}, "user_ns": True, "landlock_abi": 99, "uids": [0, 0, 0], "gids": [0, 0, 0],
     "groups": [], "no_new_privs": 1, "seccomp_mode": 2, "seccomp_filters": 1,
     "caps": {"inh": 0, "prm": 0, "eff": 0, "bnd": 0, "amb": 0}, "rlimits": {}},
)  # fmt: skip
FORGED = "".join(
    repr(token_fields | event) + "\n"
    for event in _FORGED_EVENTS
    for token_fields in ({}, {"token": ""}, {"token": "0" * 32})
)
# Control first: another process of the command's uid, in the same sandbox, whose stdout is a pipe; writing
# to that pipe through /proc/PID/fd/1 must work, or the attack below proves nothing. Then the attack on every
# descriptor of pid 1, the command's parent (the init) and its parent (the supervisor, 0 in a pid namespace),
# which hold the status pipe.
FORGE_SCRIPT = f"""
sh -c 'echo $$ > holder.pid; exec sleep 30' | cat > control.out &
i=0; while [ ! -s holder.pid ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
printf CONTROL > /proc/$(cat holder.pid)/fd/1 && echo CONTROL-WROTE
kill $(cat holder.pid); wait
SUPERVISOR=$(awk '/^PPid:/ {{print $2}}' /proc/$PPID/status)
for f in /proc/1/fd/* /proc/$PPID/fd/* /proc/$SUPERVISOR/fd/*; do
  printf %s {shlex.quote(FORGED)} > "$f" 2>/dev/null && echo "WROTE $f"
done
exit 3
"""


def _assert_forgery_failed(stdout: str, control: str) -> None:
    assert "CONTROL-WROTE" in stdout and control == "CONTROL", (
        f"control: writing to a same-uid process's pipe through /proc failed, so the attack shows nothing: {stdout}"
    )
    assert "WROTE /proc" not in stdout, stdout


def test_sandbox_blocks_forging_the_report_through_init_fds(sandbox_run, workdir):
    """All layers: the launcher's init and supervisor hold the status pipe; a command that could write to it
    would claim layers that never fired (or hide its exit). The report must equal that of an honest run."""
    honest = sandbox_run("exit 3")
    result = sandbox_run(FORGE_SCRIPT)
    _assert_forgery_failed(result.stdout, (workdir / "control.out").read_text())
    assert result.exit_code == 3, f"the reported exit status was forged: {result}"
    assert result.protection == honest.protection, result.protection
    assert_protection(result, fs_isolated=True)


def test_forging_the_report_fails_without_landlock_or_namespaces(workdir):
    """Where no user namespace can be made (a non-root server under Docker's profile, say), the command
    has the launcher's uid, no capability less than it, no pid namespace, and here no Landlock either:
    only the launcher's processes being non-dumpable keeps their /proc/PID/fd closed to it (and a line
    that got through would still lack the call's token)."""
    from support.launcher_run import run_launcher

    from hanzo_sandbox_mcp.linux.sandbox import LinuxSandbox
    from hanzo_sandbox_mcp.policy import SandboxPolicy

    policy = SandboxPolicy().with_workdir(workdir)
    plan = LinuxSandbox().harden(["/bin/sh", "-c", FORGE_SCRIPT], policy, env={"PATH": "/usr/bin:/bin"})
    run = run_launcher(plan.replace(landlock=None, namespaces=(), root=None))
    _assert_forgery_failed(run.stdout, (workdir / "control.out").read_text())
    assert run.report.landlock_abi is None and run.report.rejected == 0
    assert run.report.exit is not None and run.report.exit["exit_code"] == 3, run
    assert run.report.uid == plan.uid and not run.report.errors
