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


def test_sandbox_blocks_forging_the_report_through_init_fds(sandbox_run):
    """The launcher's init (pid 1) holds the status pipe the report is built from. Writing forged status
    lines through /proc/1/fd/N would let a command claim layers that never fired (or hide its exit)."""
    forged = (
        '{"event":"exit","status":0,"exit_code":0,"signal":null,"cpu_user_s":0,"cpu_sys_s":0,"peak_rss_kb":1}\n'
        '{"event":"applied","uid":0,"gid":0,"landlock_abi":99,"seccomp":true,"rlimits":true,"no_new_privs":true}\n'
    )
    cmd = (
        "ls -l /proc/1/fd /proc/$PPID/fd 2>&1; "
        f'for f in /proc/1/fd/* /proc/$PPID/fd/*; do printf %s {shlex.quote(forged)} > "$f" '
        '2>/dev/null && echo "WROTE $f"; done; exit 3'
    )
    result = sandbox_run(cmd)
    assert result.exit_code == 3, f"the reported exit status was forged: {result}"
    assert "WROTE" not in result.stdout, result.stdout
    assert result.protection.landlock_abi != 99 and result.protection.uid != 0, result.protection
    assert_protection(result, fs_isolated=True)
