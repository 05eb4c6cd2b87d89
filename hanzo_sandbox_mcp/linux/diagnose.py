"""Why a Linux layer is missing on this machine, and how to fix it (for `doctor` and `capabilities`)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["private_root", "reason"]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _own_seccomp_mode() -> str | None:
    status = _read("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("Seccomp:"):
            return line.split()[1]
    return None


def _in_container() -> bool:
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


def _namespaces(error: str | None) -> str:
    hints: list[str] = []
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        hints.append(
            "AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+): "
            "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`, or an AppArmor profile granting `userns`"
        )
    if _read("/proc/sys/user/max_user_namespaces") == "0":
        hints.append("user.max_user_namespaces is 0: `sysctl user.max_user_namespaces=15000`")
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        hints.append("kernel.unprivileged_userns_clone is 0: `sysctl kernel.unprivileged_userns_clone=1`")
    if _own_seccomp_mode() == "2" or _in_container():
        hints.append(
            "the server runs under a seccomp filter or in a container (Docker's default profile blocks "
            "unshare and mount, the runtime masks /proc, AppArmor blocks mount): run the container with "
            "`--security-opt seccomp=config/container-seccomp.json` plus `--security-opt unmask=ALL` (podman) "
            "or `--security-opt systempaths=unconfined` (Docker), and `--security-opt apparmor=unconfined` "
            "where AppArmor is on (README: Containers)"
        )
    base = error or "namespaces could not be created"
    return base + ("; likely cause: " + "; ".join(hints) if hints else "")


def _landlock() -> str:
    lsm = _read("/sys/kernel/security/lsm")
    if lsm is not None and "landlock" not in lsm.split(","):
        return (
            "the kernel does not enable Landlock (not in /sys/kernel/security/lsm): boot with "
            "`lsm=landlock,...` on Linux 5.13+ built with CONFIG_SECURITY_LANDLOCK"
        )
    if _own_seccomp_mode() == "2":
        return "Landlock syscalls fail, likely blocked by a seccomp filter around the server (container)"
    return "the kernel has no Landlock support (Linux 5.13+ with CONFIG_SECURITY_LANDLOCK is needed)"


def private_root(error: str | None) -> str:
    """Why the private root is missing: the launcher's error and, in a container whose runtime masks paths
    under /proc (which makes the kernel refuse a fresh /proc in a user namespace), the flag that fixes it."""
    base = error or "not built"
    if _in_container() and "proc" in base:
        base += (
            "; the container runtime masks paths under /proc, so no fresh /proc can be mounted: run the container "
            "with `--security-opt unmask=ALL` (podman) or `--security-opt systempaths=unconfined` (Docker)"
        )
    return base


def reason(layer: str, namespace_error: str | None = None) -> str:
    """A short cause-and-fix sentence for a missing layer."""
    if layer in ("namespaces", "rootfs", "private_tmp", "proc", "loopback"):
        return _namespaces(namespace_error)
    if layer == "landlock":
        return _landlock()
    if layer == "seccomp":
        return "seccomp filter not installed: install libseccomp2 (`apt-get install libseccomp2`) and pyseccomp"
    if layer == "uid_drop":
        return "commands would run as uid 0: set policy.sandbox_uid to an unprivileged uid"
    if layer == "no_new_privs":
        return "PR_SET_NO_NEW_PRIVS was refused by the kernel"
    return f"{layer} was not applied"
