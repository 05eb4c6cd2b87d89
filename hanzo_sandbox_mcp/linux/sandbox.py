"""`LinuxSandbox`: env scrub, namespaces, private /tmp, rlimits, no_new_privs, Landlock, seccomp, cgroups.

`harden` is pure (command + policy -> `LaunchPlan`); the launcher applies the plan and reports what fired.
`effective` predicts the report from a one-time probe: the real launcher run once on `/bin/true` with every
layer requested, so the prediction comes from the same code path as every call, not from guesses.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..env_scrub import scrub_env
from ..errors import SandboxUnavailable
from ..launch import LaunchReport, seal, start_launcher
from ..launch_plan import NAMESPACE_NAMES, LandlockSpec, LaunchPlan, RootSpec
from ..netproxy.env import DEFAULT_PROXY_PORT, proxy_env
from ..policy import NetworkMode, SandboxPolicy
from ..protection import EffectiveProtection, Layer, LayerStatus
from ..sandbox.base import Attachment, NoAttachment, require_workdir
from ..workdir import command_owner
from . import cgroups, diagnose
from .paths import RW_DEVICES, SYSTEM_READ_PATHS, python_paths, reachable_by

__all__ = ["LinuxSandbox", "command_ids"]

_log = logging.getLogger("hanzo_sandbox_mcp")
_MiB = 1024 * 1024


def command_ids(policy: SandboxPolicy, workdir: Path | None = None) -> tuple[int, int]:
    """The host uid/gid a command runs as: never 0.

    As root: the owner of the workdir when that is not root (a directory the user passed in is never
    chowned: the command runs as its owner instead), else the policy's unprivileged uid. As a normal user:
    that user.
    """
    if os.geteuid() == 0 and workdir is not None:
        try:
            st = os.stat(workdir)
        except OSError:
            pass
        else:
            if st.st_uid != 0:
                # Never group root either: a directory chowned to a user often keeps group 0.
                return st.st_uid, st.st_gid if st.st_gid != 0 else policy.sandbox_gid
    return command_owner(policy.sandbox_uid, policy.sandbox_gid)


@functools.lru_cache(maxsize=256)
def _reachable_path(path_var: str, uid: int, gid: int) -> str:
    """PATH without the entries `uid` cannot reach (cached: every call of a session asks the same)."""
    return ":".join(entry for entry in path_var.split(":") if entry and reachable_by(entry, uid, gid))


@functools.cache
def _seccomp_filter(network: NetworkMode) -> tuple[bytes | None, str | None]:
    """Compiled once per network mode (libseccomp handles arch and x32 checks): (program, None), or
    (None, why) when libseccomp is missing or refuses (it probes the kernel's seccomp support)."""
    from . import seccomp

    try:
        return seccomp.build_filter(network.value), None
    except ImportError as exc:
        why = f"pyseccomp/libseccomp is not installed ({exc}): `apt-get install libseccomp2`"
    except (OSError, RuntimeError, ValueError) as exc:
        why = f"the seccomp filter cannot be built here ({exc}); the kernel or a seccomp filter around the "
        why += "server may refuse seccomp (containers: --security-opt seccomp=config/container-seccomp.json)"
    _log.warning("seccomp filter unavailable: %s", why)
    return None, why


def _scratch(policy: SandboxPolicy) -> tuple[str, str] | None:
    scratch = policy.session_scratch
    return None if scratch is None else (str(scratch[0]), str(scratch[1]))


class LinuxSandbox:
    """Every Linux layer the kernel offers, reported truthfully per call."""

    def __init__(self) -> None:
        self._cgroup_root, self._cgroup_reason = cgroups.discover()

    @property
    def name(self) -> str:
        return "linux"

    # -- before spawn ---------------------------------------------------------------------------------

    def harden(self, argv: Sequence[str], policy: SandboxPolicy, *, env: Mapping[str, str] | None = None) -> LaunchPlan:
        workdir = require_workdir(policy)
        uid, gid = command_ids(policy, workdir)
        child_env = scrub_env(os.environ if env is None else env, policy, workdir)
        if os.geteuid() == 0:
            child_env["PATH"] = _reachable_path(child_env["PATH"], uid, gid)
        network = policy.network
        allowlist = network is NetworkMode.ALLOWLIST
        if allowlist:
            child_env.update(proxy_env(DEFAULT_PROXY_PORT))  # pip, npm, git, curl: all through the proxy
        namespaces = tuple(n for n in NAMESPACE_NAMES if not (n == "net" and network is NetworkMode.FULL))
        bpf, seccomp_error = _seccomp_filter(network)
        if bpf is None and policy.strict:
            # Fail closed: a filter that cannot even be built never reaches the launcher's strict check.
            raise SandboxUnavailable(f"strict policy: the seccomp layer cannot be applied: {seccomp_error}")
        # One allowlist, given to two layers: the private root's binds and Landlock's rules.
        read_only = (*SYSTEM_READ_PATHS, *python_paths(), *map(str, policy.extra_fs_read))
        read_write = (str(workdir), *RW_DEVICES, *map(str, policy.extra_fs_write))
        return LaunchPlan(
            argv=tuple(argv),
            env=child_env,
            cwd=str(workdir),
            namespaces=namespaces,
            uid=uid,
            gid=gid,
            loopback=network in (NetworkMode.LOOPBACK, NetworkMode.ALLOWLIST),
            proxy_port=DEFAULT_PROXY_PORT if allowlist else None,
            tmp_size_mb=policy.tmp_size_mb,
            rlimits={
                "as": policy.max_memory_mb * _MiB,
                "cpu": policy.max_cpu_secs,
                "nproc": policy.max_procs,
                "nofile": policy.max_open_fds,
                "fsize": policy.max_file_sz_mb * _MiB,
                "core": 0,
            },
            no_new_privs=True,
            landlock=LandlockSpec(
                read_exec=read_only, read_write=read_write, deny_tcp=network is NetworkMode.NONE, scope=True
            ),
            root=RootSpec(read_only=read_only, read_write=read_write),
            scratch=None
            if policy.session_scratch is None
            else (str(policy.session_scratch[0]), str(policy.session_scratch[1])),
            seccomp_bpf=bpf,
            strict=policy.strict,
        )

    # -- after spawn ----------------------------------------------------------------------------------

    def attach(self, pid: int, policy: SandboxPolicy) -> Attachment:
        """Put the launcher (before it forks: it waits for its plan) into a fresh per-call cgroup."""
        if self._cgroup_root is None:
            return NoAttachment()
        call = self._cgroup_root.create(policy.max_memory_mb * _MiB, policy.max_procs)
        try:
            call.join(pid)
        except OSError:
            call.release()
            raise
        return call

    # -- reporting ------------------------------------------------------------------------------------

    @functools.cached_property
    def probe(self) -> LaunchReport:
        """What the launcher manages on this machine, measured once by running it on /bin/true."""
        return _probe(self)

    def report(self, launch: LaunchReport, policy: SandboxPolicy) -> EffectiveProtection:
        """The protection a call really had, from what its launcher reported."""
        namespaces = [n for n in launch.namespaces if n != "user"]
        if launch.user_ns or "user" in launch.namespaces:
            namespaces.insert(0, "user")
        # Both halves or nothing: the namespace keeps the command off the host's network, and only the
        # seccomp family filter stops AF_VSOCK (a VM's host) and the families no namespace isolates.
        # For the allowlist, the proxy is the third: without it commands have no way out at all, but then
        # the mode is not what was asked for either.
        network_isolated = (
            policy.network is not NetworkMode.FULL
            and "net" in namespaces
            and launch.seccomp
            and (launch.proxy or policy.network is not NetworkMode.ALLOWLIST)
        )
        missing = list(self._missing(launch, policy, namespaces))
        return EffectiveProtection(
            fs_isolated=launch.landlock_abi is not None or launch.rootfs,
            network_isolated=network_isolated,
            rlimits_applied=launch.rlimits,
            sandbox=self.name,
            network=policy.network,
            env_scrubbed=True,
            namespaces=tuple(namespaces),
            landlock_abi=launch.landlock_abi,
            seccomp=launch.seccomp,
            no_new_privs=launch.no_new_privs,
            cgroup_limits=self._cgroup_root is not None,
            private_root=launch.rootfs,
            private_tmp=launch.private_tmp,
            uid=launch.uid,
            gid=launch.gid,
            groups=launch.groups,
            capabilities_empty=launch.capabilities_empty,
            missing=tuple(missing),
        )

    def _missing(self, launch: LaunchReport, policy: SandboxPolicy, namespaces: list[str]) -> list[str]:
        wanted = [n for n in NAMESPACE_NAMES if not (n == "net" and policy.network is NetworkMode.FULL)]
        lost = [n for n in wanted if n not in namespaces]
        out: list[str] = []
        if lost:
            why = launch.namespace_error or launch.errors.get("user namespace") or "not created"
            out.append(f"namespaces {', '.join(lost)}: {why}")
        if "mount" in namespaces and not launch.rootfs:
            why = diagnose.private_root(launch.errors.get("rootfs"))
            out.append(f"private root, fresh /proc and private /tmp: {why}")
        if launch.uid is None or launch.uid == 0 or "uid_drop" in launch.errors:
            why = launch.errors.get("uid_drop") or f"the command runs as host uid {launch.uid}"
            out.append(f"uid drop: {why}")
        allowlist = policy.network is NetworkMode.ALLOWLIST
        if (
            policy.network in (NetworkMode.LOOPBACK, NetworkMode.ALLOWLIST)
            and "net" in namespaces
            and not launch.loopback
        ):
            out.append(f"loopback interface: {launch.errors.get('loopback', 'not brought up')}")
        if allowlist and not launch.proxy:
            why = launch.errors.get("proxy", "its listener was not handed to the server")
            out.append(f"egress proxy (allowlist): {why}; commands have no way out")
        if policy.network is not NetworkMode.FULL:
            halves = (
                ("a network namespace", "net" in namespaces),
                ("the seccomp socket-family filter", launch.seccomp),
                *((("the egress proxy", launch.proxy),) if allowlist else ()),
            )
            absent = [half for half, ok in halves if not ok]
            if absent:
                out.append(
                    f"network isolation ({policy.network.value}): {' and '.join(absent)} did not fire, so "
                    "network_isolated is false (see the lines above for why)"
                )
        for key, ok in (
            ("landlock", launch.landlock_abi is not None),
            ("seccomp", launch.seccomp),
            ("rlimits", launch.rlimits),
            ("no_new_privs", launch.no_new_privs),
        ):
            if not ok:
                out.append(f"{key}: {self._why(key, launch, policy.network)}")
        if self._cgroup_root is None:
            out.append(f"cgroup limits: {self._cgroup_reason}")
        return out

    @staticmethod
    def _why(key: str, launch: LaunchReport, network: NetworkMode) -> str:
        """The launcher's own error for a layer, else why the seccomp filter could not be built, else the
        machine-level diagnosis."""
        why = launch.errors.get(key)
        if why is None and key == "seccomp":
            why = _seccomp_filter(network)[1]
        return why or diagnose.reason(key, launch.namespace_error)

    def effective(self, policy: SandboxPolicy) -> EffectiveProtection:
        probe = self.probe
        if policy.network is NetworkMode.ALLOWLIST:
            # The probe runs a loopback plan: the proxy's listener needs just that loopback (the server
            # always serves it), so predict it from there. Each call's report says what really was.
            probe = dataclasses.replace(probe, proxy=probe.loopback)
        return self.report(probe, policy)

    def layers(self) -> tuple[LayerStatus, ...]:
        probe = self.probe
        ns_ok = bool(probe.namespaces) and not probe.namespace_error

        def status(layer: Layer, ok: bool, good: str, key: str) -> LayerStatus:
            detail = good if ok else self._why(key, probe, NetworkMode.LOOPBACK)
            return LayerStatus(layer=layer, available=ok, detail=detail)

        ns_names = ", ".join(["user", *[n for n in probe.namespaces if n != "user"]]) if ns_ok else ""
        return (
            LayerStatus(layer=Layer.ENV_SCRUB, available=True, detail="only allowlisted variables pass"),
            status(Layer.NAMESPACES, ns_ok, f"namespaces: {ns_names}", "namespaces"),
            status(
                Layer.UID_DROP,
                probe.uid is not None and probe.uid != 0,
                f"commands run as uid {probe.uid}",
                "uid_drop",
            ),
            status(
                Layer.PRIVATE_ROOT,
                probe.rootfs,
                "private root: only allowlisted host paths, read-only; workdir read-write",
                "rootfs",
            ),
            status(Layer.PRIVATE_TMP, probe.private_tmp, "private size-capped /tmp and /dev/shm", "private_tmp"),
            status(Layer.RLIMITS, probe.rlimits, "memory, CPU, process, fd, file-size and core limits", "rlimits"),
            LayerStatus(layer=Layer.CGROUP, available=self._cgroup_root is not None, detail=self._cgroup_reason),
            status(
                Layer.NO_NEW_PRIVS,
                probe.no_new_privs,
                "setuid and file capabilities disabled",
                "no_new_privs",
            ),
            status(
                Layer.LANDLOCK,
                probe.landlock_abi is not None,
                f"Landlock ABI {probe.landlock_abi} filesystem allowlist",
                "landlock",
            ),
            status(Layer.SECCOMP, probe.seccomp, "seccomp deny-list installed", "seccomp"),
            LayerStatus(layer=Layer.SEATBELT, available=False, detail="macOS only", applicable=False),
        )


def _probe(sandbox: LinuxSandbox) -> LaunchReport:
    """Run the launcher once, synchronously, on /bin/true with every layer requested (not strict): a
    one-call session, made and run by the same code as every session's.

    It may run in an anyio worker thread (`capabilities`, the service's start): the launcher's parent-death
    signal fires when the thread that spawned it exits, and this thread blocks in `proc.wait()` until the
    launcher is gone, so no worker thread ending can kill a launcher it started."""
    with tempfile.TemporaryDirectory(prefix="hanzo-probe-") as tmp:
        workdir = Path(tmp)
        policy = SandboxPolicy().with_workdir(workdir)
        uid, gid = command_ids(policy)
        if os.geteuid() == 0:
            os.chown(workdir, uid, gid)
        plan, report = seal(sandbox.harden(["true"], policy, env={"PATH": "/usr/bin:/bin"}))
        run = start_launcher(plan.to_wire())
        with os.fdopen(run.status_fd, "rb") as status_pipe:
            report.feed_all(status_pipe.read())
        run.close()
        run.proc.wait()
    return report
