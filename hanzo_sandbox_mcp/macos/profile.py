"""Seatbelt (SBPL) profile generator for the macOS backend. Pure Python: importable and testable anywhere.

`build_profile(policy, workdir)` turns a `SandboxPolicy` into a `SeatbeltProfile`: the profile text for
`sandbox-exec -p` plus the parameters for `-D NAME=VALUE`. `SeatbeltProfile.argv(command)` gives the full
command line. Nothing here runs a process or touches the filesystem.

Design (after Codex's seatbelt policies and Chromium's):

* ``(deny default)`` comes first; every ``allow`` after it has a comment saying why it is needed.
* Caller-supplied paths (the workdir, ``extra_fs_read``, ``extra_fs_write``, the home directory) never
  appear in the profile text. They are referenced as ``(param "NAME")`` and passed on the command line
  as ``-D NAME=VALUE``, so quotes, backslashes, spaces, non-ASCII or newlines in a path cannot change
  the profile. The only string literals in the text are fixed system paths and names from this module.
* Seatbelt matches the *real* path of a vnode, so ``/tmp/x`` must be granted as ``/private/tmp/x``.
  `resolve_macos_path` does that with a fixed table of the macOS system symlinks (``/tmp``, ``/var``,
  ``/etc``) plus lexical ``.``/``..`` handling: pure and deterministic, the same on every host. Other
  symlinks (a user's own) are not followed; a caller running on macOS should pass ``os.path.realpath``
  results if it wants them honoured (an unresolved symlinked path fails closed: access is denied).
* The order of rules never matters: nothing allowed is later denied by a competing rule (exclusions
  are written as ``require-not`` inside the allow), so the profile does not depend on SBPL's
  precedence rules.

What a command gets (see the comments in the generated text for the reasons):

* **Processes**: fork; exec of programs under the readable roots; signals and process info only
  within the sandbox; a fixed list of read-only sysctls; the Mach services libc needs to look up users
  and groups and to receive notifications.
* **Reads** (``file-read*``, plus mapping as code and exec): a narrow system allowlist (``/usr``,
  ``/bin``, ``/sbin``, ``/System/Library``, the OS cryptex, ``/Library/Apple``,
  ``/Library/Frameworks``, ``/Library/Developer/CommandLineTools``, ``/Applications/Xcode*.app``,
  Homebrew, MacPorts, a few files of ``/private/etc``, time zone data ...), the session workdir,
  ``extra_fs_read`` and ``extra_fs_write``. ``/Users`` (so ``$HOME``) is *not* in it, nor is
  ``/System/Volumes/Data`` (the firmlink back to the whole data volume, home included).
* **Metadata** (``stat``, ``access``) is allowed everywhere: ``getcwd``, ``realpath`` and path lookups
  stat every ancestor of a path. It reveals that a file exists and its size and dates, never its
  contents nor a directory listing.
* **Writes** (``file-write*``): only the session workdir and ``extra_fs_write``, plus ``/dev/null``,
  ``/dev/zero``, ``/dev/tty``, ``/dev/dtracehelper``, already-open descriptors under ``/dev/fd`` and
  pseudo-terminals the command creates itself. There is no private ``/tmp`` on macOS, and the shared
  ``/tmp`` and ``/private/var/folders`` are neither readable nor writable (other processes' files live
  there). The launcher is expected to point ``TMPDIR`` (and ``HOME``) into the session workdir, as the
  Linux backend does; Python, git, compilers and most tools honour ``TMPDIR``. Tools that ignore it
  and write to the per-user ``confstr`` temp dir fail unless that dir is in ``extra_fs_write``.
* **Exec** is allowed only from the readable roots; a bare command name is searched on ``PATH`` by
  ``sandbox-exec`` after the profile is applied, so launchers should pass an absolute program path or a
  ``PATH`` of readable directories.
* **Network**: see `NETWORK_DETAIL`.
* **Home protection** (when ``home`` is given): credential stores under it (``.ssh``, ``.gnupg``,
  ``.aws``, keychains ...) are carved out of every grant that merely *contains* them (for instance a
  workdir equal to ``$HOME``), and shell start-up files, ``.gitconfig`` and ``LaunchAgents`` are carved
  out of every write grant that contains them, so a sandboxed command can neither read secrets nor
  plant code that runs later outside the sandbox. A grant that names such a path (or a path inside it)
  explicitly is honoured.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ..policy import NetworkMode, SandboxPolicy

__all__ = [
    "MACOS_SYMLINKS",
    "NETWORK_DETAIL",
    "SEATBELT_EXECUTABLE",
    "WORKDIR_PARAM",
    "SeatbeltProfile",
    "build_profile",
    "resolve_macos_path",
]

#: `sandbox-exec` by its full path only: a writable directory early on ``PATH`` must not be able to
#: substitute its own. Replacing ``/usr/bin/sandbox-exec`` itself needs root (and defeats SIP).
SEATBELT_EXECUTABLE = "/usr/bin/sandbox-exec"

#: The system symlinks of macOS that Seatbelt sees through (it matches real paths), as prefix
#: replacements: ``/tmp/x`` is granted as ``/private/tmp/x``.
MACOS_SYMLINKS: Mapping[str, str] = MappingProxyType(
    {"/tmp": "/private/tmp", "/var": "/private/var", "/etc": "/private/etc"}
)

#: Name of the profile parameter holding the session workdir.
WORKDIR_PARAM = "WORKDIR"
_EXTRA_WRITE_PARAM = "EXTRA_WRITE_{}"
_EXTRA_READ_PARAM = "EXTRA_READ_{}"
_PROTECTED_PARAM = "PROTECTED_{}"

#: What each network mode means under Seatbelt, for the protection report.
NETWORK_DETAIL: Mapping[NetworkMode, str] = MappingProxyType(
    {
        NetworkMode.NONE: "Seatbelt denies every network operation (IP and Unix-domain sockets alike; "
        "socketpair() still works). Unlike Linux, Unix sockets in the workdir are refused too.",
        NetworkMode.LOOPBACK: "Seatbelt allows only localhost (bind, accept, connect) and Unix sockets "
        "under the writable paths. It cannot give a private loopback: services the host listens on at "
        "localhost are reachable. No DNS (use 127.0.0.1 / ::1).",
        NetworkMode.FULL: "Unrestricted network, DNS and TLS trust evaluation.",
    }
)

# Paths under the user's home that hold credentials: never readable or writable through a grant that
# merely contains them (a workdir equal to $HOME, an extra_fs_read of $HOME ...).
_HOME_SECRETS = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".config/gh",
    ".kube",
    ".docker",
    ".netrc",
    ".git-credentials",
    ".pypirc",
    ".npmrc",
    ".password-store",
    "Library/Keychains",
    "Library/Cookies",
)
# Paths under the user's home that run code later, outside the sandbox: never writable through a grant
# that merely contains them.
_HOME_AUTORUN = (
    ".zshenv",
    ".zprofile",
    ".zshrc",
    ".zlogin",
    ".bash_profile",
    ".bash_login",
    ".bashrc",
    ".profile",
    ".config/fish",
    ".gitconfig",
    ".config/git",
    "Library/LaunchAgents",
)


def resolve_macos_path(path: str | os.PathLike[str]) -> str:
    """Return the real macOS path Seatbelt will match for an absolute `path`, without touching the disk.

    Empty and ``.`` components are dropped, ``..`` removes the previous component (never above ``/``),
    and whenever the path built so far is one of `MACOS_SYMLINKS` (``/tmp``, ``/var``, ``/etc``) it is
    replaced by its target, exactly as the kernel would follow those links (so ``/private/..`` then
    ``tmp`` gives ``/private/tmp`` too). Case is kept as given (a case-mismatched path fails closed).
    Other symlinks are not followed. Raises `ValueError` for a relative path or one containing a NUL
    byte, and `TypeError` for bytes.
    """
    raw = os.fspath(path)
    if not isinstance(raw, str):
        raise TypeError(f"path must be str or os.PathLike[str], not {type(raw).__name__}")
    if "\x00" in raw:
        raise ValueError(f"path {raw!r} contains a NUL byte, which no macOS path can hold")
    if not raw.startswith("/"):
        raise ValueError(f"path {raw!r} must be absolute (start with '/')")
    parts: list[str] = []
    for component in raw.split("/"):
        if component in ("", "."):
            continue
        if component == "..":
            if parts:
                parts.pop()
            continue
        parts.append(component)
        target = MACOS_SYMLINKS.get("/" + "/".join(parts))
        if target is not None:
            parts = target.strip("/").split("/")
    return "/" + "/".join(parts)


def _is_strictly_under(path: str, root: str) -> bool:
    if root == "/":
        return path != "/"
    return path.startswith(root + "/")


def _q(value: str) -> str:
    """Quote a fixed string of this module as an SBPL string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _param(name: str) -> str:
    return f"(param {_q(name)})"


@dataclass(frozen=True)
class _Protected:
    param: str
    path: str
    read: bool  # carved out of read grants too (credentials), not only write grants


@dataclass(frozen=True)
class _Root:
    """A granted directory or file: its SBPL expression and, for exclusions, its resolved path."""

    expr: str  # '(param "NAME")' or a quoted fixed path
    path: str

    def subpath(self, exclusions: Iterable[_Protected]) -> str:
        """``(subpath ROOT)``, minus the `exclusions` strictly inside ROOT (one filter per line)."""
        base = f"(subpath {self.expr})"
        carve = self.carved(exclusions)
        if not carve:
            return base
        lines = ["(require-all", f"  {base}"]
        for p in carve:
            # Both forms, as Codex does: the literal also covers creating the excluded path itself.
            lines.append(f"  (require-not (literal {_param(p.param)}))")
            lines.append(f"  (require-not (subpath {_param(p.param)}))")
        lines[-1] += ")"
        return "\n".join(lines)

    def carved(self, exclusions: Iterable[_Protected]) -> list[_Protected]:
        return [p for p in exclusions if _is_strictly_under(p.path, self.path)]


@dataclass(frozen=True)
class SeatbeltProfile:
    """A generated profile: SBPL `text` for ``sandbox-exec -p`` and `params` for ``-D NAME=VALUE``.

    `text` only ever references caller paths as ``(param "NAME")``; `params` maps each NAME to the
    resolved path. `argv` builds the command line; the profile is inherited by every child process.
    """

    text: str
    params: dict[str, str] = field(hash=False)

    def argv(self, command: Sequence[str]) -> list[str]:
        """Return ``[SEATBELT_EXECUTABLE, "-p", text, "-D", "NAME=VALUE", ..., "--", *command]``.

        Raises `ValueError` if `command` is empty or is a bare string (a common slip that would
        otherwise run each character as an argument).
        """
        if isinstance(command, str | bytes):
            raise ValueError("command must be a sequence of arguments, not a single string")
        if not command:
            raise ValueError("command must not be empty")
        argv = [SEATBELT_EXECUTABLE, "-p", self.text]
        for name, value in self.params.items():
            argv += ["-D", f"{name}={value}"]
        return [*argv, "--", *command]


# --- fixed sections -------------------------------------------------------------------------------

_HEADER = """\
; hanzo-sandbox-mcp Seatbelt profile (generated; caller paths are passed as parameters).
(version 1)

; Closed by default: anything not allowed below is denied.
(deny default)
"""

_PROCESS = """\
; Commands start programs and subshells; children inherit this profile (exec is limited to the
; readable roots further down).
(allow process-fork)

; Job control and waiting on children, but only for processes inside this sandbox.
(allow signal (target same-sandbox))

; ps/top-style inspection and libproc queries, again only within the sandbox.
(allow process-info* (target same-sandbox))

; Host CPU and memory statistics (host_processor_info): Node's os.cpus(), Python's os.cpu_count().
(allow mach-host*)

; Read-only system facts that libc, language runtimes and build tools query at start-up: the hardware
; description (CPU count and features, page and cache sizes, memory size), OS version and limits,
; the load average, and the kinfo_proc of processes (ps, libproc) - no process arguments or
; environments (kern.procargs2 stays denied).
(allow sysctl-read
  (sysctl-name-prefix "hw.")
  (sysctl-name-prefix "machdep.cpu.")
  (sysctl-name "kern.argmax")
  (sysctl-name "kern.boottime")
  (sysctl-name "kern.hostname")
  (sysctl-name "kern.maxfiles")
  (sysctl-name "kern.maxfilesperproc")
  (sysctl-name "kern.maxproc")
  (sysctl-name "kern.ngroups")
  (sysctl-name "kern.osproductversion")
  (sysctl-name "kern.osrelease")
  (sysctl-name "kern.ostype")
  (sysctl-name "kern.osvariant_status")
  (sysctl-name "kern.osversion")
  (sysctl-name "kern.secure_kernel")
  (sysctl-name "kern.usrstack64")
  (sysctl-name "kern.version")
  (sysctl-name-prefix "kern.proc.pgrp.")
  (sysctl-name-prefix "kern.proc.pid.")
  (sysctl-name "sysctl.proc_cputype")
  (sysctl-name "sysctl.proc_translated")
  (sysctl-name "vm.loadavg"))

; The JVM reads the CPU grade through a sysctl that passes a buffer, which counts as a write.
(allow sysctl-write (sysctl-name "kern.grade_cputype"))

; getpwuid/getgrgid and group membership (whoami, id, ssh, git, Python's getpass) go through
; opendirectoryd; notify(3) is used by libc at start-up (time zone and locale change notices).
(allow mach-lookup
  (global-name "com.apple.system.opendirectoryd.libinfo")
  (global-name "com.apple.system.opendirectoryd.membership")
  (global-name "com.apple.system.notification_center"))

; POSIX named semaphores: Python multiprocessing's SemLock and other process pools need them.
(allow ipc-posix-sem)
"""

_METADATA = """\
; stat/lstat/access everywhere: getcwd, realpath and every path lookup stat the ancestors of a path
; (including the workdir's). This reveals that a file exists, its size and dates; never its contents
; nor a directory listing (that is file-read-data, allowed only on the roots below).
(allow file-read-metadata)

; access(2)/faccessat existence checks, for the same reason and with the same (lack of) content.
(allow file-test-existence)

; Listing / itself (getcwd from the root, shells completing paths) shows only top-level names.
(allow file-read* (literal "/"))
"""

# System code: readable, mappable as code (dylibs, frameworks, Python extensions) and executable.
# Each entry: (real path, why).
_SYSTEM_CODE: tuple[tuple[str, str], ...] = (
    ("/bin", "POSIX shells and core utilities"),
    ("/sbin", "system utilities some scripts call (ping, ifconfig, md5)"),
    ("/usr", "system binaries, libraries, headers and share/ data; /usr/local is Homebrew on Intel"),
    ("/System/Library", "frameworks, dylibs, CoreServices/SystemVersion.plist, root certificates"),
    ("/System/iOSSupport", "Catalyst frameworks some system libraries link against"),
    ("/System/Cryptexes", "the OS cryptex (system libraries shipped outside the sealed volume)"),
    ("/System/Volumes/Preboot/Cryptexes", "where /System/Cryptexes really lives"),
    ("/Library/Apple", "Apple system libraries and Rosetta outside /System"),
    ("/Library/Frameworks", "framework installs such as Python.org's Python.framework"),
    ("/Library/Developer/CommandLineTools", "clang, git, make, python3 behind the /usr/bin shims"),
    ("/Library/Java", "JDKs behind the /usr/bin/java shim"),
    ("/opt/homebrew", "Homebrew on Apple silicon"),
    ("/opt/local", "MacPorts"),
    ("/nix/store", "Nix packages (immutable, world-readable store)"),
)

# System data files: readable only. Each entry: (SBPL filter kind, real path, why).
_SYSTEM_DATA: tuple[tuple[str, str, str], ...] = (
    ("literal", "/private/etc/passwd", "user names for tools that read the file directly"),
    ("literal", "/private/etc/group", "group names for tools that read the file directly"),
    ("literal", "/private/etc/hosts", "static host names (localhost)"),
    ("literal", "/private/etc/services", "service names to port numbers"),
    ("literal", "/private/etc/protocols", "protocol names to numbers"),
    ("literal", "/private/etc/shells", "valid login shells"),
    ("literal", "/private/etc/localtime", "the system time zone (a symlink into /var/db/timezone)"),
    ("literal", "/private/etc/profile", "login-shell start-up (bash -l, sh -l)"),
    ("literal", "/private/etc/bashrc", "bash start-up"),
    ("literal", "/private/etc/zshenv", "zsh start-up"),
    ("literal", "/private/etc/zprofile", "zsh login start-up"),
    ("literal", "/private/etc/zshrc", "zsh interactive start-up"),
    ("literal", "/private/etc/paths", "PATH entries for path_helper"),
    ("subpath", "/private/etc/paths.d", "PATH entries for path_helper"),
    ("subpath", "/private/etc/ssl", "the system CA bundle (cert.pem) for OpenSSL/LibreSSL clients"),
    ("subpath", "/private/var/db/timezone", "time zone database (/usr/share/zoneinfo points here)"),
    ("subpath", "/private/var/select", "which shell /bin/sh runs (the sh shim reads it)"),
    ("literal", "/private/var/db/xcode_select_link", "the developer dir chosen by xcode-select"),
    ("subpath", "/Library/Preferences/Logging", "os_log configuration read by every process"),
    ("literal", "/Library/Preferences/.GlobalPreferences.plist", "system locale and units"),
)

# Xcode installs carry version suffixes (Xcode-beta.app, Xcode-15.4.app); xcrun and the /usr/bin
# shims run the toolchain from there.
_XCODE_REGEX = '(regex #"^/Applications/Xcode[^/]*[.]app(/|$)")'

_DEVICES = """\
; The bit buckets: every shell redirects to /dev/null; /dev/zero is read (and sometimes written).
(allow file-read* file-write-data (literal "/dev/null") (literal "/dev/zero"))

; Entropy for every TLS library, hash seed and UUID generator.
(allow file-read* (literal "/dev/random") (literal "/dev/urandom"))

; getfsstat/automount probes made by libinfo and Foundation (read-only, no automount triggered).
(allow file-read* (literal "/dev/autofs_nowait"))

; The process's own controlling terminal, if any (no ioctl, so no TIOCSTI input injection).
(allow file-read* file-write-data (literal "/dev/tty"))

; /dev/fd/N (and /dev/stdin, /dev/stdout, /dev/stderr, which point there) only reopen descriptors
; the process already holds: bash process substitution, `tee /dev/stderr`.
(allow file-read-data file-write-data (subpath "/dev/fd"))

; dyld registers DTrace probes through this device at every exec; denying it only spams the log.
(allow file-read* file-write-data file-ioctl (literal "/dev/dtracehelper"))

; Pseudo-terminals the command opens itself (script, expect, Python's pty): the new pty carries the
; com.apple.sandbox.pty extension, so terminals that belong to other sessions stay untouchable.
(allow pseudo-tty)
; The pty multiplexer, opened by openpty()/posix_openpt() to create such a terminal.
(allow file-read* file-write* file-ioctl (literal "/dev/ptmx"))
; The terminal side of a pty created inside this sandbox (it carries the extension).
(allow file-read* file-write* file-ioctl
  (require-all
    (regex #"^/dev/ttys[0-9]+$")
    (extension "com.apple.sandbox.pty")))
"""

_NETWORK_NONE = """\
; Network mode "none": no network operation at all, IP or Unix-domain. Already implied by
; (deny default); spelled out so the intent is explicit. socketpair() needs no network operation.
(deny network*)
"""

_NETWORK_FULL = """\
; Network mode "full": every network operation (IP and Unix-domain), as without a sandbox.
(allow network*)

; Unix-domain sockets themselves (connecting is covered by network* above; this is socket(2)).
(allow system-socket (socket-domain AF_UNIX))

; Kernel control sockets (AF_SYSTEM, SYSPROTO_CONTROL) that network status and NetworkExtension
; clients open; no other AF_SYSTEM protocol.
(allow system-socket (require-all (socket-domain AF_SYSTEM) (socket-protocol 2)))

; The routing table: getifaddrs, interface and route discovery.
(allow sysctl-read (sysctl-name-prefix "net.routetable."))

; DNS (mDNSResponder serves getaddrinfo), resolver and proxy configuration (configd: curl and
; Python's urllib read proxy settings there), TLS certificate trust and revocation (trustd, ocspd)
; and Network.framework (networkd). com.apple.SecurityServer (the keychain) stays denied.
(allow mach-lookup
  (global-name "com.apple.dnssd.service")
  (global-name "com.apple.SystemConfiguration.DNSConfiguration")
  (global-name "com.apple.SystemConfiguration.configd")
  (global-name "com.apple.trustd")
  (global-name "com.apple.trustd.agent")
  (global-name "com.apple.ocspd")
  (global-name "com.apple.networkd"))

; The resolver configuration, for resolvers that read it directly (Go, c-ares, dig).
(allow file-read* (literal "/private/var/run/resolv.conf"))
"""


def _protected_paths(home: str | None) -> list[_Protected]:
    if home is None:
        return []
    entries = [(rel, True) for rel in _HOME_SECRETS] + [(rel, False) for rel in _HOME_AUTORUN]
    return [
        _Protected(_PROTECTED_PARAM.format(index), resolve_macos_path(f"{home}/{rel}"), read)
        for index, (rel, read) in enumerate(entries)
    ]


def _dedupe(paths: Iterable[str], seen: set[str]) -> list[str]:
    out: list[str] = []
    for path in paths:
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out


def build_profile(policy: SandboxPolicy, workdir: Path, *, home: Path | None = None) -> SeatbeltProfile:
    """Build the Seatbelt profile enforcing `policy` for a command whose session workdir is `workdir`.

    `workdir` is readable, writable and executable; so are `policy.extra_fs_write` entries;
    `policy.extra_fs_read` entries are readable and executable. Every path is normalised with
    `resolve_macos_path` (``/tmp/x`` becomes ``/private/tmp/x``) and passed as a parameter, never
    written into the text; duplicates are dropped (a path both in ``extra_fs_read`` and
    ``extra_fs_write`` is just writable). `policy.session_workdir` is ignored in favour of `workdir`.
    `home` (the user's real home, e.g. ``Path.home()``) enables the home protection described in the
    module docstring; without it no home-specific rule is emitted. Only the file-system and network
    parts of the policy apply here: resource limits and the environment scrub are the launcher's job.

    Raises `ValueError` if `workdir` or `home` is relative or contains a NUL byte.
    """
    workdir_path = resolve_macos_path(workdir)
    home_path = resolve_macos_path(home) if home is not None else None
    protected = _protected_paths(home_path)
    read_protected = [p for p in protected if p.read]

    seen = {workdir_path}
    extra_write = _dedupe((resolve_macos_path(p) for p in policy.extra_fs_write), seen)
    extra_read = _dedupe((resolve_macos_path(p) for p in policy.extra_fs_read), seen)

    params: dict[str, str] = {WORKDIR_PARAM: workdir_path}
    write_roots = [_Root(_param(WORKDIR_PARAM), workdir_path)]
    for index, path in enumerate(extra_write):
        name = _EXTRA_WRITE_PARAM.format(index)
        params[name] = path
        write_roots.append(_Root(_param(name), path))
    read_roots: list[_Root] = []
    for index, path in enumerate(extra_read):
        name = _EXTRA_READ_PARAM.format(index)
        params[name] = path
        read_roots.append(_Root(_param(name), path))

    # Only exclusions that some grant actually contains are emitted (and passed as parameters).
    code_roots = [_Root(_q(path), path) for path, _ in _SYSTEM_CODE]
    all_read_roots = code_roots + write_roots + read_roots
    used = [
        p
        for p in protected
        if any(_is_strictly_under(p.path, r.path) for r in (all_read_roots if p.read else write_roots))
    ]
    for p in used:
        params[p.param] = p.path

    sections = [_HEADER, _PROCESS, _METADATA]

    lines = ["; System code: readable, mappable as code (dylibs, frameworks, extensions), executable."]
    lines += [f";   {path}: {why}" for path, why in _SYSTEM_CODE]
    lines += [";   /Applications/Xcode*.app: " + "the Xcode toolchain xcrun and the /usr/bin shims run"]
    code_filters = [r.subpath(read_protected) for r in code_roots] + [_XCODE_REGEX]
    lines.append(_rule("file-read* file-map-executable", code_filters))
    lines.append("; Programs may be started from the same system roots (and nowhere else in the system).")
    lines.append(_rule("process-exec", code_filters))
    sections.append("\n".join(lines) + "\n")

    lines = ["; System data programs read at start-up (nothing user-specific):"]
    lines += [f";   {path}: {why}" for _, path, why in _SYSTEM_DATA]
    lines.append(_rule("file-read*", [f"({kind} {_q(path)})" for kind, path, _ in _SYSTEM_DATA]))
    sections.append("\n".join(lines) + "\n")

    sections.append(_DEVICES)

    session = []
    if used:
        session += [
            "; Credential stores and auto-run files under $HOME are carved out (require-not) of the",
            "; grants below that merely contain them, so they stay unreadable / unwritable.",
        ]
    session.append("; The session workdir and extra_fs_write: the only places a command may write.")
    session.append(_rule("file-write*", [r.subpath(protected) for r in write_roots]))
    read_filters = [r.subpath(read_protected) for r in write_roots]
    session.append("; What a command writes it may read back and map as code (built extensions, libraries).")
    session.append(_rule("file-read* file-map-executable", read_filters))
    session.append("; ... and run (build outputs, scripts, virtualenvs in the workdir).")
    session.append(_rule("process-exec", read_filters))
    if read_roots:
        extra_filters = [r.subpath(read_protected) for r in read_roots]
        session.append("")
        session.append("; extra_fs_read: readable and mappable as code, never writable.")
        session.append(_rule("file-read* file-map-executable", extra_filters))
        session.append("; extra_fs_read: programs there may be run (the policy grants read and execute).")
        session.append(_rule("process-exec", extra_filters))
    sections.append("\n".join(session) + "\n")

    sections.append(_network_section(policy.network, write_roots, protected))
    return SeatbeltProfile(text="\n".join(sections), params=params)


def _rule(operations: str, filters: Sequence[str]) -> str:
    body = "\n".join("  " + flt.replace("\n", "\n  ") for flt in filters)
    return f"(allow {operations}\n{body})"


def _network_section(mode: NetworkMode, write_roots: Sequence[_Root], protected: Sequence[_Protected]) -> str:
    if mode is NetworkMode.NONE:
        return _NETWORK_NONE
    if mode is NetworkMode.FULL:
        return _NETWORK_FULL
    # Roots that contain a protected path get no socket grant at all (fail closed): an ssh
    # ControlMaster socket under ~/.ssh must stay unreachable, and a carve-out cannot be expressed
    # inside a unix-socket filter.
    socket_roots = [r for r in write_roots if not r.carved(protected)]
    lines = [
        '; Network mode "loopback": bind, accept and connect on localhost only (127.0.0.1 and ::1).',
        "; Seatbelt cannot make the loopback private: the host's localhost listeners are reachable.",
        "; No DNS lookups (mDNSResponder stays denied): use 127.0.0.1 or ::1.",
        "; Listening sockets only on a loopback address (never 0.0.0.0: nothing exposed to the LAN).",
        '(allow network-bind (local ip "localhost:*"))',
        "; Accepting connections on those loopback listeners.",
        '(allow network-inbound (local ip "localhost:*"))',
        "; Connecting to loopback addresses only.",
        '(allow network-outbound (remote ip "localhost:*"))',
    ]
    if socket_roots:
        lines += [
            "",
            "; Unix-domain sockets, only at paths the command may write (a server and its clients inside",
            "; the session); the host's sockets (ssh-agent, docker.sock, mDNSResponder) stay unreachable.",
            "(allow system-socket (socket-domain AF_UNIX))",
            "; Creating (binding) a Unix socket file under the writable paths.",
            _rule("network-bind", [f"(local unix-socket (subpath {r.expr}))" for r in socket_roots]),
            "; Connecting to a Unix socket under the writable paths.",
            _rule("network-outbound", [f"(remote unix-socket (subpath {r.expr}))" for r in socket_roots]),
        ]
    return "\n".join(lines) + "\n"
