"""The Seatbelt profile generator, checked structurally on any OS.

The profile text is parsed with a small s-expression reader (below) and then inspected: the shape of the
profile, the operations and filters it uses, which paths each rule covers once parameters are resolved,
and that caller paths never reach the text. Whether macOS accepts and enforces the profile is checked
by tests/integration/test_macos_sandbox.py on a Mac.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hanzo_sandbox_mcp.macos.profile import (
    SEATBELT_EXECUTABLE,
    WORKDIR_PARAM,
    SeatbeltProfile,
    build_profile,
    resolve_macos_path,
)
from hanzo_sandbox_mcp.policy import NetworkMode, SandboxPolicy

# --- a small SBPL reader -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sym:
    name: str


@dataclass(frozen=True)
class Str:
    value: str
    regex: bool = False


Atom = Sym | Str | int | bool
Form = Atom | list["Form"]


@dataclass(frozen=True)
class TopForm:
    form: list[Form]
    commented: bool  # a comment appeared between the previous top-level form and this one


class SbplSyntaxError(ValueError):
    pass


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"'}
_DELIMS = set('()";') | set(string.whitespace)


def _tokens(text: str) -> Iterator[tuple[str, object]]:
    """Yield (kind, value): kinds are '(', ')', 'str', 'regex', 'bool', 'int', 'sym', 'comment'."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in string.whitespace:
            i += 1
        elif c == ";":
            end = text.find("\n", i)
            end = n if end < 0 else end
            yield "comment", text[i + 1 : end]
            i = end
        elif c in "()":
            yield c, c
            i += 1
        elif c == '"' or text.startswith('#"', i):
            regex = c == "#"
            i += 2 if regex else 1
            out: list[str] = []
            while True:
                if i >= n:
                    raise SbplSyntaxError("unterminated string")
                ch = text[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\":
                    if i + 1 >= n:
                        raise SbplSyntaxError("dangling backslash")
                    esc = text[i + 1]
                    if esc not in _ESCAPES:
                        raise SbplSyntaxError(f"unknown escape \\{esc}")
                    out.append(_ESCAPES[esc])
                    i += 2
                    continue
                if ch == "\n":
                    raise SbplSyntaxError("newline inside a string")
                out.append(ch)
                i += 1
            yield ("regex" if regex else "str"), "".join(out)
        elif c == "#":
            word = text[i : i + 2]
            if word not in ("#t", "#f") or (i + 2 < n and text[i + 2] not in _DELIMS):
                raise SbplSyntaxError(f"bad # syntax at {i}")
            yield "bool", word == "#t"
            i += 2
        else:
            j = i
            while j < n and text[j] not in _DELIMS:
                j += 1
            word = text[i:j]
            if re.fullmatch(r"-?[0-9]+", word):
                yield "int", int(word)
            else:
                yield "sym", word
            i = j


def parse_sbpl(text: str) -> list[TopForm]:
    """Parse a whole profile; raises SbplSyntaxError on unbalanced parentheses or a stray atom."""
    top: list[TopForm] = []
    stack: list[list[Form]] = []
    commented = False
    for kind, value in _tokens(text):
        if kind == "comment":
            if not stack:
                commented = True
            continue
        if kind == "(":
            stack.append([])
            continue
        if kind == ")":
            if not stack:
                raise SbplSyntaxError("unbalanced ')'")
            done = stack.pop()
            if stack:
                stack[-1].append(done)
            else:
                top.append(TopForm(done, commented))
                commented = False
            continue
        atom: Atom
        if kind == "str":
            atom = Str(str(value))
        elif kind == "regex":
            atom = Str(str(value), regex=True)
        elif kind == "sym":
            atom = Sym(str(value))
        elif kind == "bool":
            atom = bool(value)
        else:
            assert isinstance(value, int)
            atom = value
        if not stack:
            raise SbplSyntaxError(f"atom {atom!r} outside any form")
        stack[-1].append(atom)
    if stack:
        raise SbplSyntaxError("unbalanced '('")
    return top


def unparse(form: Form) -> str:
    if isinstance(form, list):
        return "(" + " ".join(unparse(f) for f in form) + ")"
    if isinstance(form, Sym):
        return form.name
    if isinstance(form, Str):
        body = form.value.replace("\\", "\\\\").replace('"', '\\"')
        return ('#"' if form.regex else '"') + body + '"'
    if isinstance(form, bool):
        return "#t" if form else "#f"
    return str(form)


def head(form: Form) -> str | None:
    if isinstance(form, list) and form and isinstance(form[0], Sym):
        return form[0].name
    return None


@dataclass(frozen=True)
class Rule:
    action: str  # allow / deny
    operations: tuple[str, ...]
    filters: tuple[Form, ...]
    commented: bool


def rules(text: str) -> list[Rule]:
    out = []
    for top in parse_sbpl(text):
        action = head(top.form)
        if action not in ("allow", "deny"):
            continue
        ops: list[str] = []
        rest = top.form[1:]
        while rest and isinstance(rest[0], Sym):
            ops.append(rest[0].name)
            rest = rest[1:]
        out.append(Rule(action, tuple(ops), tuple(rest), top.commented))
    return out


def walk(form: Form) -> Iterator[Form]:
    yield form
    if isinstance(form, list):
        for sub in form:
            yield from walk(sub)


def strings(text: str) -> set[str]:
    """Every string literal in the profile except parameter names."""
    found: set[str] = set()
    for top in parse_sbpl(text):
        for f in walk(top.form):
            if isinstance(f, list) and head(f) != "param":
                found |= {a.value for a in f[1:] if isinstance(a, Str)}
    return found


def param_refs(text: str) -> set[str]:
    refs: set[str] = set()
    for top in parse_sbpl(text):
        for f in walk(top.form):
            if isinstance(f, list) and head(f) == "param":
                assert len(f) == 2 and isinstance(f[1], Str), unparse(f)
                refs.add(f[1].value)
    return refs


# --- evaluating rules against paths ------------------------------------------------------------------


def _value(form: Form, params: dict[str, str]) -> str:
    if isinstance(form, Str):
        return form.value
    assert isinstance(form, list) and head(form) == "param", unparse(form)
    name = form[1]
    assert isinstance(name, Str)
    return params[name.value]


def _covers(flt: Form, path: str, params: dict[str, str]) -> bool:
    """Whether a path filter matches `path`; non-path conditions are assumed true (over-approximation)."""
    kind = head(flt)
    assert isinstance(flt, list)
    if kind == "subpath":
        root = _value(flt[1], params)
        return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")
    if kind == "literal":
        return path == _value(flt[1], params)
    if kind == "regex":
        return re.search(_value(flt[1], params), path) is not None
    if kind == "require-all":
        return all(_covers(f, path, params) for f in flt[1:])
    if kind == "require-any":
        return any(_covers(f, path, params) for f in flt[1:])
    if kind == "require-not":
        return not _covers(flt[1], path, params)
    # A sandbox extension is assumed present; other non-path filters never grant a path.
    return kind == "extension"


def _op_covers(granted: str, wanted: str) -> bool:
    return granted == wanted or granted == "default" or (granted.endswith("*") and wanted.startswith(granted[:-1]))


def allowed(profile: SeatbeltProfile, operation: str, path: str) -> bool:
    for rule in rules(profile.text):
        if rule.action != "allow" or not any(_op_covers(op, operation) for op in rule.operations):
            continue
        if not rule.filters or any(_covers(f, path, profile.params) for f in rule.filters):
            return True
    return False


def readable(profile: SeatbeltProfile, path: str) -> bool:
    return allowed(profile, "file-read-data", path)


def writable(profile: SeatbeltProfile, path: str) -> bool:
    return any(allowed(profile, op, path) for op in ("file-write-data", "file-write-create", "file-write-unlink"))


# --- fixtures and constants ---------------------------------------------------------------------------

KNOWN_OPERATIONS = {
    "default",
    "process-fork",
    "process-exec",
    "signal",
    "process-info*",
    "mach-host*",
    "sysctl-read",
    "sysctl-write",
    "mach-lookup",
    "ipc-posix-sem",
    "file-read-metadata",
    "file-test-existence",
    "file-read*",
    "file-read-data",
    "file-map-executable",
    "file-write*",
    "file-write-data",
    "file-ioctl",
    "pseudo-tty",
    "network*",
    "network-bind",
    "network-inbound",
    "network-outbound",
    "system-socket",
}
KNOWN_FILTERS = {
    "literal",
    "subpath",
    "regex",
    "param",
    "require-all",
    "require-any",
    "require-not",
    "extension",
    "target",
    "sysctl-name",
    "sysctl-name-prefix",
    "global-name",
    "local",
    "remote",
    "socket-domain",
    "socket-protocol",
}
KNOWN_SYMBOL_ARGS = {"same-sandbox", "ip", "unix-socket", "AF_UNIX", "AF_SYSTEM"}
NETWORK_OPS = {"network*", "network-bind", "network-inbound", "network-outbound"}

HOME = "/Users/alice"
WORKDIR = "/private/var/folders/xy/abc123/T/hanzo/sessions/s1"
MODES = list(NetworkMode)

# Device files a command may write (besides the workdir and extra_fs_write).
DEVICE_WRITE_FILTERS = {
    '(literal "/dev/null")',
    '(literal "/dev/zero")',
    '(literal "/dev/tty")',
    '(literal "/dev/dtracehelper")',
    '(literal "/dev/ptmx")',
    '(subpath "/dev/fd")',
    '(require-all (regex #"^/dev/ttys[0-9]+$") (extension "com.apple.sandbox.pty"))',
}


def profile_for(
    network: NetworkMode = NetworkMode.LOOPBACK,
    workdir: str = WORKDIR,
    extra_read: Sequence[str] = (),
    extra_write: Sequence[str] = (),
    home: str | None = HOME,
) -> SeatbeltProfile:
    policy = SandboxPolicy(
        network=network,
        extra_fs_read=tuple(Path(p) for p in extra_read),
        extra_fs_write=tuple(Path(p) for p in extra_write),
    )
    return build_profile(policy, Path(workdir), home=None if home is None else Path(home))


def _constant_strings() -> set[str]:
    out: set[str] = set()
    for mode in MODES:
        out |= strings(profile_for(mode).text)
    return out


CONSTANT_STRINGS = _constant_strings()


def assert_well_formed(profile: SeatbeltProfile) -> None:
    tops = parse_sbpl(profile.text)
    assert unparse(tops[0].form) == "(version 1)"
    assert unparse(tops[1].form) == "(deny default)"
    for top in tops[2:]:
        assert head(top.form) in ("allow", "deny"), unparse(top.form)
    for rule in rules(profile.text):
        assert rule.operations, rule
        assert set(rule.operations) <= KNOWN_OPERATIONS, rule.operations
        if rule.action == "allow":
            assert rule.commented, f"allow without a comment saying why: {rule}"
        for flt in rule.filters:
            for sub in walk(flt):
                if isinstance(sub, list):
                    assert head(sub) in KNOWN_FILTERS, unparse(sub)
                elif isinstance(sub, Sym):
                    assert sub.name in KNOWN_FILTERS | KNOWN_SYMBOL_ARGS, sub.name
    # Every parameter the text uses is supplied, and nothing else is.
    assert param_refs(profile.text) == set(profile.params)
    # Caller paths never reach the text: its only string literals are this module's constants.
    assert strings(profile.text) <= CONSTANT_STRINGS


# --- shape -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_profile_is_well_formed_for_every_mode(mode: NetworkMode) -> None:
    profile = profile_for(mode, extra_read=["/opt/data"], extra_write=["/Volumes/scratch"])
    assert_well_formed(profile)
    assert profile.params[WORKDIR_PARAM] == WORKDIR


def test_parser_rejects_unbalanced_and_handles_escapes() -> None:
    with pytest.raises(SbplSyntaxError):
        parse_sbpl('(allow (literal "/x")')
    with pytest.raises(SbplSyntaxError):
        parse_sbpl("(allow))")
    with pytest.raises(SbplSyntaxError):
        parse_sbpl('(allow (literal "/x))')
    tops = parse_sbpl('; c\n(f "a\\"b\\\\c" #"^x$" #t #f 12 sym)\n(g) ; trailing')
    assert tops[0].commented and not tops[1].commented
    assert tops[0].form == [Sym("f"), Str('a"b\\c'), Str("^x$", regex=True), True, False, 12, Sym("sym")]


def test_deny_default_comes_first_and_nothing_is_allowed_wholesale() -> None:
    for mode in (NetworkMode.NONE, NetworkMode.LOOPBACK):
        for rule in rules(profile_for(mode).text):
            if rule.action != "allow" or rule.filters:
                continue
            # Filterless allows are limited to operations that carry no file or network access.
            assert set(rule.operations) <= {
                "process-fork",
                "mach-host*",
                "ipc-posix-sem",
                "file-read-metadata",
                "file-test-existence",
                "pseudo-tty",
            }, rule


def test_profile_is_deterministic() -> None:
    assert profile_for(extra_read=["/a", "/b"]) == profile_for(extra_read=["/a", "/b"])


# --- writes ------------------------------------------------------------------------------------------


def _write_rules(profile: SeatbeltProfile) -> list[Rule]:
    return [
        r
        for r in rules(profile.text)
        if r.action == "allow" and any(op.startswith("file-write") or op == "default" for op in r.operations)
    ]


@pytest.mark.parametrize("mode", MODES)
def test_only_the_allowed_set_is_writable(mode: NetworkMode) -> None:
    profile = profile_for(mode, extra_write=["/Volumes/scratch", "/tmp/shared"])
    write_params = {WORKDIR_PARAM, "EXTRA_WRITE_0", "EXTRA_WRITE_1"}
    allowed_filters = DEVICE_WRITE_FILTERS | {f'(subpath (param "{p}"))' for p in write_params}
    for rule in _write_rules(profile):
        assert rule.filters, f"write rule without filter: {rule}"
        for flt in rule.filters:
            assert unparse(flt) in allowed_filters, unparse(flt)
    assert {profile.params[p] for p in write_params} == {WORKDIR, "/Volumes/scratch", "/private/tmp/shared"}


def test_workdir_and_extra_write_are_writable_and_nothing_else() -> None:
    profile = profile_for(extra_write=["/Volumes/scratch"], extra_read=["/opt/data"])
    for path in (WORKDIR, WORKDIR + "/a/b.txt", "/Volumes/scratch/x", "/dev/null", "/dev/fd/1"):
        assert writable(profile, path), path
    for path in (
        WORKDIR + "-sibling",  # a prefix match is not a subpath
        str(Path(WORKDIR).parent) + "/other",
        "/private/tmp/x",
        "/tmp/x",
        "/private/var/folders/xy/abc123/T/x",
        HOME + "/.zshrc",
        HOME + "/.ssh/authorized_keys",
        "/opt/data/x",  # extra_fs_read is not writable
        "/usr/local/bin/x",
        "/private/etc/hosts",
        "/Library/LaunchDaemons/x.plist",
        "/dev/disk0",
    ):
        assert not writable(profile, path), path


def test_extra_read_that_is_also_written_is_just_writable() -> None:
    profile = profile_for(extra_read=["/data"], extra_write=["/data"])
    assert "EXTRA_READ_0" not in profile.params
    assert profile.params["EXTRA_WRITE_0"] == "/data"
    assert writable(profile, "/data/x") and readable(profile, "/data/x")


def test_duplicates_and_workdir_repeats_are_dropped() -> None:
    profile = profile_for(extra_write=[WORKDIR, "/tmp/a", "/private/tmp/a"], extra_read=["/b", "/b/"])
    assert profile.params == {WORKDIR_PARAM: WORKDIR, "EXTRA_WRITE_0": "/private/tmp/a", "EXTRA_READ_0": "/b"}


# --- reads -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_home_secrets_are_not_readable(mode: NetworkMode) -> None:
    profile = profile_for(mode, extra_read=["/opt/data"])
    for path in (HOME, HOME + "/.ssh", HOME + "/.ssh/id_ed25519", HOME + "/Documents/x", "/Users"):
        assert not readable(profile, path), path
    assert readable(profile, WORKDIR + "/src/main.py")
    assert readable(profile, "/opt/data/x")


def test_system_paths_programs_need_are_readable() -> None:
    profile = profile_for()
    for path in (
        "/bin/sh",
        "/usr/bin/env",
        "/usr/lib/libSystem.B.dylib",
        "/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation",
        "/private/etc/hosts",
        "/private/etc/ssl/cert.pem",
        "/private/var/db/timezone/zoneinfo/UTC",
        "/opt/homebrew/bin/python3",
        "/Library/Developer/CommandLineTools/usr/bin/git",
        "/Applications/Xcode-beta.app/Contents/Developer/usr/bin/xcodebuild",
        "/dev/urandom",
        "/",
    ):
        assert readable(profile, path), path
    for path in (
        "/System/Volumes/Data/Users/alice/.ssh/id_rsa",  # the firmlink back to the data volume
        "/Applications/Xcode.application/x",
        "/Applications/Safari.app/Contents/Info.plist",
        "/private/etc/master.passwd",
        "/private/etc/sudoers",
        "/private/var/db/DarwinDirectory/local/recordStore.data",
        "/Library/Keychains/System.keychain",
        "/private/tmp/x",
        "/private/var/folders/xy/abc123/T/other",
    ):
        assert not readable(profile, path), path


def test_metadata_is_broad_but_data_is_not() -> None:
    profile = profile_for()
    assert allowed(profile, "file-read-metadata", HOME + "/.ssh/id_rsa")
    assert not allowed(profile, "file-read-data", HOME + "/.ssh/id_rsa")
    assert not allowed(profile, "file-read-xattr", HOME + "/.ssh/id_rsa")


def test_exec_is_limited_to_readable_roots() -> None:
    profile = profile_for(extra_read=["/opt/tools"])
    for path in ("/bin/sh", "/usr/bin/git", WORKDIR + "/build/a.out", "/opt/tools/bin/x"):
        assert allowed(profile, "process-exec", path), path
    for path in (HOME + "/bin/x", "/private/tmp/x"):
        assert not allowed(profile, "process-exec", path), path


def test_workdir_equal_to_home_still_hides_credentials() -> None:
    profile = profile_for(workdir=HOME)
    assert_well_formed(profile)
    assert readable(profile, HOME + "/notes.txt") and writable(profile, HOME + "/notes.txt")
    for secret in (
        ".ssh/id_rsa",
        ".ssh",
        ".aws/credentials",
        ".gnupg/x",
        "Library/Keychains/login.keychain-db",
    ):
        assert not readable(profile, f"{HOME}/{secret}"), secret
        assert not writable(profile, f"{HOME}/{secret}"), secret
    for autorun in (".zshrc", ".bash_profile", ".gitconfig", "Library/LaunchAgents/x.plist"):
        assert readable(profile, f"{HOME}/{autorun}"), autorun
        assert not writable(profile, f"{HOME}/{autorun}"), autorun
    # No Unix-socket grant for a root that contains protected paths (an ssh ControlMaster socket).
    assert not allowed(profile, "network-outbound", HOME + "/.ssh/cm-socket")


def test_extra_read_of_home_hides_credentials_but_explicit_grants_win() -> None:
    profile = profile_for(extra_read=[HOME, HOME + "/.ssh/known_hosts"])
    assert readable(profile, HOME + "/Documents/a.txt")
    assert not readable(profile, HOME + "/.ssh/id_rsa")
    assert readable(profile, HOME + "/.ssh/known_hosts")
    assert not writable(profile, HOME + "/.ssh/known_hosts")


def test_without_home_no_home_rules_are_emitted() -> None:
    profile = profile_for(workdir=HOME, home=None)
    assert not any(name.startswith("PROTECTED_") for name in profile.params)
    assert readable(profile, HOME + "/.ssh/id_rsa")  # documented: pass home to get the protection


def test_protection_params_only_when_a_grant_contains_them() -> None:
    assert set(profile_for().params) == {WORKDIR_PARAM}
    profile = profile_for(workdir=HOME)
    assert profile.params["PROTECTED_0"] == HOME + "/.ssh"


def test_home_under_var_is_resolved() -> None:
    profile = profile_for(workdir="/var/root", home="/var/root")
    assert profile.params[WORKDIR_PARAM] == "/private/var/root"
    assert profile.params["PROTECTED_0"] == "/private/var/root/.ssh"
    assert not readable(profile, "/private/var/root/.ssh/id_rsa")


# --- network -----------------------------------------------------------------------------------------


def _network_rules(profile: SeatbeltProfile) -> list[Rule]:
    return [r for r in rules(profile.text) if set(r.operations) & NETWORK_OPS]


def _mach_names(profile: SeatbeltProfile) -> set[str]:
    names: set[str] = set()
    for rule in rules(profile.text):
        if rule.action == "allow" and "mach-lookup" in rule.operations:
            for flt in rule.filters:
                if isinstance(flt, list) and head(flt) == "global-name" and isinstance(flt[1], Str):
                    names.add(flt[1].value)
    return names


def test_network_none_allows_nothing() -> None:
    profile = profile_for(NetworkMode.NONE)
    net = _network_rules(profile)
    assert [(r.action, r.operations, r.filters) for r in net] == [("deny", ("network*",), ())]
    assert not any(r.action == "allow" for r in net)
    assert not any("system-socket" in r.operations for r in rules(profile.text))
    assert "com.apple.dnssd.service" not in _mach_names(profile)
    for op in ("network-outbound", "network-bind", "network-inbound"):
        assert not allowed(profile, op, WORKDIR + "/sock")


def test_network_loopback_allows_localhost_only() -> None:
    profile = profile_for(NetworkMode.LOOPBACK, extra_write=["/Volumes/scratch"])
    net = {f"{r.action} {' '.join(r.operations)} " + " ".join(map(unparse, r.filters)) for r in _network_rules(profile)}
    assert net == {
        'allow network-bind (local ip "localhost:*")',
        'allow network-inbound (local ip "localhost:*")',
        'allow network-outbound (remote ip "localhost:*")',
        'allow network-bind (local unix-socket (subpath (param "WORKDIR")))'
        ' (local unix-socket (subpath (param "EXTRA_WRITE_0")))',
        'allow network-outbound (remote unix-socket (subpath (param "WORKDIR")))'
        ' (remote unix-socket (subpath (param "EXTRA_WRITE_0")))',
    }
    assert "com.apple.dnssd.service" not in _mach_names(profile)
    assert '"*:*"' not in profile.text


def test_network_full_allows_everything_and_dns() -> None:
    profile = profile_for(NetworkMode.FULL)
    net = _network_rules(profile)
    assert [(r.action, r.operations, r.filters) for r in net] == [("allow", ("network*",), ())]
    names = _mach_names(profile)
    assert {"com.apple.dnssd.service", "com.apple.trustd.agent"} <= names
    assert "com.apple.SecurityServer" not in names


def test_dns_and_network_config_only_for_full() -> None:
    for mode in (NetworkMode.NONE, NetworkMode.LOOPBACK):
        profile = profile_for(mode)
        assert not (_mach_names(profile) & {"com.apple.dnssd.service", "com.apple.SystemConfiguration.configd"})
        assert not readable(profile, "/private/var/run/resolv.conf")
    assert readable(profile_for(NetworkMode.FULL), "/private/var/run/resolv.conf")


# --- tricky paths, parameters and argv ---------------------------------------------------------------

TRICKY = [
    '/Users/alice/my "quoted" dir',
    "/Users/alice/back\\slash\\",
    "/Users/alice/with space/and\ttab",
    "/Users/alice/é/日本/проект",
    "/Users/alice/new\nline",
    '/Users/alice/paren) (allow default) ;"',
    "/Users/alice/$(HOME)/`x`/%s/{}",
]


@pytest.mark.parametrize("path", TRICKY)
def test_tricky_paths_only_reach_params_and_argv(path: str) -> None:
    profile = profile_for(workdir=path, extra_read=[path + "/r"], extra_write=[path + "/w"])
    assert_well_formed(profile)
    assert path not in profile.text
    assert profile.params[WORKDIR_PARAM] == path
    argv = profile.argv(["/bin/echo", "hi"])
    assert f"{WORKDIR_PARAM}={path}" in argv
    assert f"EXTRA_READ_0={path}/r" in argv and f"EXTRA_WRITE_0={path}/w" in argv
    assert writable(profile, path + "/f") and not writable(profile, path + "x/f")


@pytest.mark.parametrize(
    ("given_path", "real"),
    [
        ("/tmp/x", "/private/tmp/x"),
        ("/tmp", "/private/tmp"),
        ("/var/folders/ab/cd/T/../T/work", "/private/var/folders/ab/cd/T/work"),
        ("/etc/hosts", "/private/etc/hosts"),
        ("/private/tmp/x", "/private/tmp/x"),
        ("/tmpfoo/x", "/tmpfoo/x"),
        ("/TMP/x", "/TMP/x"),
        ("//tmp//x/./y/", "/private/tmp/x/y"),
        ("/tmp/..", "/private"),
        ("/private/../tmp/x", "/private/tmp/x"),
        ("/../../tmp", "/private/tmp"),
        ("/a/b/../../var/x", "/private/var/x"),
        ("/", "/"),
        ("/..", "/"),
        ("/Users/alice/tmp", "/Users/alice/tmp"),
        ("/Users/é/日本", "/Users/é/日本"),
    ],
)
def test_resolve_macos_path(given_path: str, real: str) -> None:
    assert resolve_macos_path(given_path) == real
    assert resolve_macos_path(Path(given_path)) == real


def test_symlinked_system_dirs_are_granted_by_real_path() -> None:
    profile = profile_for(workdir="/tmp/session", extra_write=["/var/folders/ab/T/x"], extra_read=["/etc/ssh"])
    assert profile.params == {
        WORKDIR_PARAM: "/private/tmp/session",
        "EXTRA_WRITE_0": "/private/var/folders/ab/T/x",
        "EXTRA_READ_0": "/private/etc/ssh",
    }
    assert writable(profile, "/private/tmp/session/f")
    assert not writable(profile, "/private/tmp/other")


@pytest.mark.parametrize("bad", ["relative/path", "", ".", "~/x", "/a\x00b"])
def test_bad_paths_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match=r"absolute|NUL"):
        resolve_macos_path(bad)
    with pytest.raises(ValueError, match=r"absolute|NUL"):
        build_profile(SandboxPolicy(), Path(bad))
    with pytest.raises(ValueError, match=r"absolute|NUL"):
        build_profile(SandboxPolicy(), Path(WORKDIR), home=Path(bad))


def test_bad_extra_paths_raise_value_error_even_unvalidated() -> None:
    # SandboxPolicy validates its paths; build_profile re-checks policies built without validation.
    bad_paths = (Path("rel"), Path("/a\x00b"))
    for policy in [SandboxPolicy.model_construct(extra_fs_read=(bad,)) for bad in bad_paths] + [
        SandboxPolicy.model_construct(extra_fs_write=(bad,)) for bad in bad_paths
    ]:
        with pytest.raises(ValueError, match=r"absolute|NUL"):
            build_profile(policy, Path(WORKDIR))


def test_bytes_paths_are_refused() -> None:
    with pytest.raises(TypeError):
        resolve_macos_path(b"/tmp")  # type: ignore[arg-type]


def test_argv_layout() -> None:
    profile = profile_for(extra_write=["/w"], extra_read=["/r"])
    argv = profile.argv(["/bin/sh", "-c", "echo -D X=Y -- hi"])
    assert argv[:3] == [SEATBELT_EXECUTABLE, "-p", profile.text]
    assert SEATBELT_EXECUTABLE == "/usr/bin/sandbox-exec"
    sep = argv.index("--")
    pairs = argv[3:sep]
    assert pairs[0::2] == ["-D"] * len(profile.params)
    assert dict(p.split("=", 1) for p in pairs[1::2]) == profile.params
    assert argv[sep + 1 :] == ["/bin/sh", "-c", "echo -D X=Y -- hi"]


@pytest.mark.parametrize("command", [[], (), "ls -l"])
def test_argv_refuses_empty_or_string_commands(command: Sequence[str]) -> None:
    with pytest.raises(ValueError):
        profile_for().argv(command)


# --- property test ------------------------------------------------------------------------------------

_component = st.one_of(
    st.sampled_from([".", "..", "tmp", "var", "etc", "private", "Users", " ", '"', "\\", ";", "(", ")"]),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00/"), min_size=1, max_size=8),
)
_abs_path = st.lists(_component, max_size=6).map(lambda parts: "/" + "/".join(parts))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    workdir=_abs_path,
    extra_read=st.lists(_abs_path, max_size=3),
    extra_write=st.lists(_abs_path, max_size=3),
    home=st.one_of(st.none(), _abs_path),
    mode=st.sampled_from(MODES),
)
def test_random_paths_never_reach_the_text(
    workdir: str, extra_read: list[str], extra_write: list[str], home: str | None, mode: NetworkMode
) -> None:
    profile = profile_for(mode, workdir=workdir, extra_read=extra_read, extra_write=extra_write, home=home)
    assert_well_formed(profile)
    real_workdir = resolve_macos_path(workdir)
    assert profile.params[WORKDIR_PARAM] == real_workdir
    assert set(profile.params.values()) >= {resolve_macos_path(p) for p in extra_read + extra_write}
    assert writable(profile, real_workdir.rstrip("/") + "/file")
    for value in profile.params.values():
        assert value.startswith("/") and "/./" not in value + "/" and "/../" not in value + "/"
    argv = profile.argv(["/usr/bin/true"])
    assert argv[2] == profile.text and argv[-2:] == ["--", "/usr/bin/true"]
