"""The generated Seatbelt profile under the real `/usr/bin/sandbox-exec` (macOS only).

Each test runs a small shell command through `SeatbeltProfile.argv` and checks what the kernel let it
do: writes inside the workdir work, writes and reads outside are refused, TCP is refused under the
`none` network mode (and, as a control, allowed to localhost under `loopback`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from hanzo_sandbox_mcp.macos.profile import SEATBELT_EXECUTABLE, build_profile
from hanzo_sandbox_mcp.policy import NetworkMode, SandboxPolicy

pytestmark = [
    pytest.mark.macos,
    pytest.mark.skipif(
        sys.platform != "darwin" or not os.path.exists(SEATBELT_EXECUTABLE),
        reason="needs macOS with /usr/bin/sandbox-exec",
    ),
]

SECRET = "top-secret-4f2a"


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    # tmp_path lives under /var/folders on macOS; realpath gives the /private/var form Seatbelt sees,
    # though build_profile would resolve that prefix by itself.
    base = Path(os.path.realpath(tmp_path))
    out = {name: base / name for name in ("work", "outside", "secret")}
    for path in out.values():
        path.mkdir()
    (out["secret"] / "key").write_text(SECRET)
    (out["work"] / "tmp").mkdir()
    return out


def run(
    command: Sequence[str],
    workdir: Path,
    *,
    network: NetworkMode = NetworkMode.NONE,
    home: Path | None = None,
    extra_read: Sequence[Path] = (),
) -> subprocess.CompletedProcess[str]:
    policy = SandboxPolicy(network=network, extra_fs_read=tuple(extra_read))
    profile = build_profile(policy, workdir, home=home)
    env = {
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "LANG": "C",
    }
    return subprocess.run(
        profile.argv(command),
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def sh(script: str, workdir: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run(["/bin/sh", "-c", script], workdir, **kwargs)


@pytest.mark.parametrize("mode", list(NetworkMode))
def test_profile_compiles_and_runs_a_command(dirs: dict[str, Path], mode: NetworkMode) -> None:
    result = run(["/usr/bin/true"], dirs["work"], network=mode)
    assert result.returncode == 0, result.stderr


def test_write_inside_the_workdir_succeeds(dirs: dict[str, Path]) -> None:
    work = dirs["work"]
    result = sh("echo hello > inside.txt && mkdir -p a/b && cp inside.txt a/b/ && cat a/b/inside.txt", work)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello"
    assert (work / "inside.txt").read_text().strip() == "hello"


def test_tmpdir_inside_the_workdir_is_usable(dirs: dict[str, Path]) -> None:
    result = sh('f=$(mktemp) && echo ok > "$f" && cat "$f"', dirs["work"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_write_outside_the_workdir_fails(dirs: dict[str, Path]) -> None:
    target = dirs["outside"] / "escaped.txt"
    result = sh(f"echo pwned > '{target}'", dirs["work"])
    assert result.returncode != 0
    assert not target.exists()
    tmp_target = Path("/private/tmp") / f"hanzo-seatbelt-{os.getpid()}"
    result = sh(f"echo pwned > '{tmp_target}'", dirs["work"])
    assert result.returncode != 0
    assert not tmp_target.exists()


def test_read_outside_the_allowlist_fails(dirs: dict[str, Path]) -> None:
    result = sh(f"cat '{dirs['secret'] / 'key'}'", dirs["work"])
    assert result.returncode != 0
    assert SECRET not in result.stdout


def test_symlink_out_of_the_workdir_does_not_leak(dirs: dict[str, Path]) -> None:
    result = sh(f"ln -s '{dirs['secret'] / 'key'}' link && cat link", dirs["work"])
    assert SECRET not in result.stdout


def test_hard_link_out_of_the_workdir_does_not_leak(dirs: dict[str, Path]) -> None:
    result = sh(f"ln '{dirs['secret'] / 'key'}' hard; cat hard", dirs["work"])
    assert SECRET not in result.stdout


def test_home_credentials_stay_hidden_when_the_workdir_is_home(dirs: dict[str, Path]) -> None:
    home = dirs["work"]
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text(SECRET)
    (home / "notes.txt").write_text("notes")
    result = sh("cat notes.txt; echo; cat .ssh/id_ed25519; echo x >> .zshrc", home, home=home)
    assert "notes" in result.stdout
    assert SECRET not in result.stdout
    assert not (home / ".zshrc").exists()


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def _connect_script(port: int) -> list[str]:
    # bash's /dev/tcp needs no extra tool; the connect happens inside the sandboxed bash itself.
    return ["/bin/bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"]


def test_tcp_connect_fails_under_none(dirs: dict[str, Path], listener: int) -> None:
    result = run(_connect_script(listener), dirs["work"], network=NetworkMode.NONE)
    assert result.returncode != 0
    assert "connected" not in result.stdout


def test_tcp_connect_to_localhost_works_under_loopback(dirs: dict[str, Path], listener: int) -> None:
    # Control for the test above: the same connect is allowed when the mode permits it.
    result = run(_connect_script(listener), dirs["work"], network=NetworkMode.LOOPBACK)
    assert result.returncode == 0, result.stderr
    assert "connected" in result.stdout


def test_profile_params_survive_tricky_workdir_names(tmp_path: Path) -> None:
    work = Path(os.path.realpath(tmp_path)) / 'dir with "quotes" \\ and é日本'
    (work / "tmp").mkdir(parents=True)
    result = sh("echo ok > f && cat f", work)
    assert result.returncode == 0, result.stderr
    assert (work / "f").read_text().strip() == "ok"
    result = sh("echo pwned > ../escaped", work)
    assert result.returncode != 0
    assert not (work.parent / "escaped").exists()
