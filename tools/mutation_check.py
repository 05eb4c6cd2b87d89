"""Break each sandbox layer on purpose, in a copy of the checkout, and check that the tests notice.

    .venv/bin/python tools/mutation_check.py [--only NAME]... [--json] [--seed N] [--maxfail N] [--list] [--diff]

Each mutation switches one layer off where it is applied, while the code around it believes it succeeded
(a report that echoed the plan would still claim the layer). The tool copies the checkout (tracked and
untracked, not ignored, files) to a temporary directory, applies the edits there and runs that mutation's
tests from the copy with this checkout's `.venv` python. A mutation is caught when at least one test
fails. The unmutated copy runs every listed test first (the baseline), so that a failure means the
mutation and not a broken suite. Exit status: 0 when every mutation was caught, 1 when one was not, 2 when
an anchor no longer matches the code or the baseline fails.

Anchors are function names found with `ast` and small source snippets that must match exactly once within
that function (or file): when the code changes under a mutation, the tool says which anchor is gone
instead of silently testing nothing, and tests/unit/test_mutation_check.py fails in the ordinary suite.
Fix the anchor in `mutations()` below whenever a layer's code moves. Mutations are chosen so that a broken
layer never touches the host: the mount namespace is dropped together with every mount (and pivot_root)
the init would make, and the rlimits and quota mutations run only tests whose resource use is bounded
without them.

Run it before any change to the launcher or a layer; it is not part of `.ci/run` (about two minutes).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
IS_ROOT = os.geteuid() == 0
PKG = "hanzo_sandbox_mcp"


class AnchorError(Exception):
    """A mutation's anchor no longer matches the code: update `mutations()`."""


# --- edits ---------------------------------------------------------------------------------------------


def _function(tree: ast.Module, dotted: str, path: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    """The function `name` or method `Class.name` at the top level of `tree`, exactly one."""
    scope: list[ast.stmt] = tree.body
    *classes, name = dotted.split(".")
    for cls in classes:
        found = [n for n in scope if isinstance(n, ast.ClassDef) and n.name == cls]
        if len(found) != 1:
            raise AnchorError(f"{path}: class {cls} not found (anchor {dotted})")
        scope = found[0].body
    funcs = [n for n in scope if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name]
    if len(funcs) != 1:
        raise AnchorError(f"{path}: function {dotted} found {len(funcs)} times, expected once")
    return funcs[0]


def _body_span(func: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int, int]:
    """(first line, last line, indent) of the body without its docstring; lines are 1-based."""
    body = func.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        body = body[1:] or body  # a function that is only a docstring keeps it as its body
    end = body[-1].end_lineno
    assert end is not None
    return body[0].lineno, end, body[0].col_offset


@dataclass(frozen=True)
class Edit:
    """One change to one file of the package."""

    path: str

    def apply(self, source: str) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class ReplaceBody(Edit):
    """Replace the body (docstring kept) of `function` with `code`."""

    function: str
    code: str
    keep_body = False

    def apply(self, source: str) -> str:
        first, last, indent = _body_span(_function(ast.parse(source), self.function, self.path))
        lines = source.splitlines(keepends=True)
        new = textwrap.indent(textwrap.dedent(self.code).strip("\n") + "\n", " " * indent)
        return "".join([*lines[: first - 1], new, *lines[first - 1 if self.keep_body else last :]])


@dataclass(frozen=True)
class Prepend(ReplaceBody):
    """Insert `code` at the start of `function`'s body (after its docstring)."""

    keep_body = True


@dataclass(frozen=True)
class Replace(Edit):
    """Replace the snippet `old`, which must occur exactly once inside `function` (None: in the whole file),
    with `new`."""

    function: str | None
    old: str
    new: str

    def apply(self, source: str) -> str:
        start, end = 0, len(source)
        if self.function is not None:
            func = _function(ast.parse(source), self.function, self.path)
            lines = source.splitlines(keepends=True)
            assert func.end_lineno is not None
            start = sum(len(line) for line in lines[: func.lineno - 1])
            end = sum(len(line) for line in lines[: func.end_lineno])
        segment = source[start:end]
        count = segment.count(self.old)
        if count != 1:
            where = self.function or "the file"
            raise AnchorError(f"{self.path}: {self.old!r} occurs {count} times in {where}, expected once")
        return source[:start] + segment.replace(self.old, self.new) + source[end:]


# --- the mutations -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]
    root_only: bool = False


SEC = "tests/security/"
LAUNCHER = f"{PKG}/launcher.py"
NAMESPACES = f"{PKG}/linux/namespaces.py"
LANDLOCK = f"{PKG}/linux/landlock.py"
SECCOMP = f"{PKG}/linux/seccomp.py"
#: Without a mount namespace the init's mounts (and its pivot_root) would land on the host: every one of them
#: goes with it.
NO_MOUNTS = (
    ReplaceBody(f"{PKG}/linux/mounts.py", "mount", "return None"),
    ReplaceBody(f"{PKG}/linux/mounts.py", "make_private", "return None"),
    ReplaceBody(f"{PKG}/linux/rootfs.py", "_pivot", "return None"),
    ReplaceBody(f"{PKG}/linux/rootfs.py", "build_root", "return None"),
)
NAMESPACE_TESTS = {
    "user": (f"{SEC}test_single_layer_process.py::test_each_reported_namespace_is_new[user]",),
    "pid": (
        f"{SEC}test_single_layer_process.py::test_each_reported_namespace_is_new[pid]",
        f"{SEC}test_host_processes.py",
    ),
    "mount": (f"{SEC}test_single_layer_process.py::test_each_reported_namespace_is_new[mount]",),
    "net": (
        f"{SEC}test_single_layer_process.py::test_each_reported_namespace_is_new[net]",
        f"{SEC}test_network_loopback.py",
    ),
    "ipc": (
        f"{SEC}test_single_layer_process.py::test_each_reported_namespace_is_new[ipc]",
        f"{SEC}test_host_processes.py::test_sandbox_blocks_host_sysv_shared_memory",
    ),
    "uts": (f"{SEC}test_single_layer_process.py::test_each_reported_namespace_is_new[uts]",),
}


def _namespace_mutation(name: str) -> Mutation:
    edits: tuple[Edit, ...] = (Prepend(NAMESPACES, "unshare", f'flags &= ~CLONE_FLAGS["{name}"]'),)
    if name == "mount":
        edits += NO_MOUNTS
    if name == "net":
        edits += (ReplaceBody(f"{PKG}/linux/loopback.py", "bring_up_loopback", "return None"),)
    what = f"unshare() drops the {name} namespace's flag"
    return Mutation(f"{name}_namespace", what, edits, NAMESPACE_TESTS[name])


def denied_syscalls(source: str) -> list[str]:
    """The names in seccomp.py's `_DENIED` table of (name, reason) pairs."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign | ast.Assign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_DENIED" for t in targets):
                return [str(name) for name, _ in ast.literal_eval(node.value)]
    raise AnchorError(f"{SECCOMP}: no _DENIED table of (name, reason) pairs")


def mutations(seed: int, deny_entry: str | None = None) -> list[Mutation]:
    """Every mutation; the deny-list entry dropped is `deny_entry`, else one chosen with `seed`."""
    names = denied_syscalls((REPO / SECCOMP).read_text())
    if deny_entry is not None and deny_entry not in names:
        raise AnchorError(f"{deny_entry} is not in seccomp.py's deny-list ({', '.join(names)})")
    dropped = deny_entry or random.Random(seed).choice(names)
    return [
        Mutation(
            "env_scrub",
            "every server variable passes the allowlist",
            (ReplaceBody(f"{PKG}/env_scrub.py", "_allowed", "return True"),),
            (f"{SEC}test_environment.py", "tests/unit/test_env_scrub.py"),
        ),
        *(_namespace_mutation(name) for name in ("user", "pid", "mount", "net", "ipc", "uts")),
        Mutation(
            "private_root",
            "build_root() returns without building",
            (ReplaceBody(f"{PKG}/linux/rootfs.py", "build_root", "return None"),),
            (f"{SEC}test_single_layer_fs.py", f"{SEC}test_fs_read_secrets.py"),
        ),
        Mutation(
            "uid_drop",
            "a root server's command keeps uid 0",
            (
                Replace(LAUNCHER, None, "os.setresgid(gid, gid, gid)", "pass"),
                Replace(LAUNCHER, None, "os.setresuid(uid, uid, uid)", "pass"),
            ),
            (
                f"{SEC}test_privileges.py",
                f"{SEC}test_single_layer_privilege.py",
                f"{SEC}test_single_layer_fs.py::test_uid_drop_alone_blocks_root_files",
            ),
            root_only=True,
        ),
        Mutation(
            "rlimits",
            "apply_rlimits() sets nothing",
            (ReplaceBody(f"{PKG}/linux/rlimits.py", "apply_rlimits", "return None"),),
            # Only tests whose resource use is bounded without the limits (never the fork bomb).
            (f"{SEC}test_single_layer_process.py::test_rlimits_alone_stop_resource_grabs",),
        ),
        Mutation(
            "no_new_privs",
            "PR_SET_NO_NEW_PRIVS is never set",
            (
                Replace(LAUNCHER, "_confine", "libc.prctl(PR_SET_NO_NEW_PRIVS, 1)", "pass"),
                Replace(LAUNCHER, "_session_landlock", "libc.prctl(PR_SET_NO_NEW_PRIVS, 1)", "pass"),
            ),
            (f"{SEC}test_privileges.py", f"{SEC}test_single_layer_privilege.py"),
        ),
        Mutation(
            "landlock_fs",
            "Landlock grants every filesystem right under / (domain, TCP rules and scopes kept)",
            (Prepend(LANDLOCK, "build_ruleset", 'read_write = (*read_write, "/")'),),
            (f"{SEC}test_single_layer_fs.py", f"{SEC}test_degradation.py"),
        ),
        Mutation(
            "landlock_net",
            "Landlock never denies TCP",
            (Prepend(LANDLOCK, "build_ruleset", "deny_tcp = False"),),
            (f"{SEC}test_single_layer_network.py", f"{SEC}test_network_none.py"),
        ),
        Mutation(
            "landlock_scope",
            "Landlock never scopes signals and abstract unix sockets",
            (Prepend(LANDLOCK, "build_ruleset", "scope = False"), ReplaceBody(LANDLOCK, "scope_self", "return False")),
            (
                f"{SEC}test_single_layer_process.py::test_landlock_signal_scope_alone_blocks_killing_host_process",
                f"{SEC}test_single_layer_network.py",
                f"{SEC}test_degradation.py",
            ),
        ),
        Mutation(
            "seccomp_filter",
            "install_filter() installs nothing",
            (ReplaceBody(SECCOMP, "install_filter", "return None"),),
            (
                f"{SEC}test_privileges.py",
                f"{SEC}test_single_layer_process.py::test_seccomp_alone_blocks_ptrace_of_host_process",
                f"{SEC}test_kernel_attack_surface.py",
            ),
        ),
        Mutation(
            "seccomp_sockets",
            "socket() and socketpair() may create every family (the allowlist and raw-socket rules dropped)",
            (ReplaceBody(SECCOMP, "_add_socket_rules", "return None"),),
            (
                f"{SEC}test_single_layer_network.py",
                f"{SEC}test_socket_families.py",
                f"{SEC}test_network_none.py",
                "tests/unit/test_seccomp.py",
            ),
        ),
        Mutation(
            "seccomp_setuid_modes",
            "chmod, mknod and creating opens may set S_ISUID and S_ISGID",
            (ReplaceBody(SECCOMP, "_add_mode_rules", "return None"),),
            (f"{SEC}test_setuid_files.py", "tests/unit/test_seccomp.py"),
        ),
        Mutation(
            "seccomp_deny_entry",
            f"the deny-list entry {dropped} ({'given' if deny_entry else f'chosen with seed {seed}'}) is dropped",
            (
                Replace(
                    SECCOMP,
                    "build_filter",
                    "for name in DENIED_SYSCALLS:",
                    f"for name in [n for n in DENIED_SYSCALLS if n != {dropped!r}]:",
                ),
            ),
            (f"{SEC}test_kernel_attack_surface.py", f"{SEC}test_single_layer_seccomp.py", "tests/unit/test_seccomp.py"),
        ),
        Mutation(
            "output_caps",
            "CappedBuffer keeps everything",
            (
                Replace(
                    f"{PKG}/output.py",
                    "CappedBuffer.__init__",
                    "self._head_cap = cap - cap // 2",
                    "self._head_cap = 1 << 62",
                ),
            ),
            ("tests/unit/test_output.py", f"{SEC}test_resource_exhaustion.py::test_sandbox_caps_output_flood"),
        ),
        Mutation(
            "quota_polled",
            "the polled quota never finds a workdir over it, and no file size is capped to what it leaves",
            (
                ReplaceBody(f"{PKG}/quota.py", "PolledQuota.excess", "return None"),
                ReplaceBody(f"{PKG}/runner.py", "_cap_file_size", "return plan"),
            ),
            # Bounded without the quota: 60 files of 1 MiB, never the fallocate overshoot test.
            (f"{SEC}test_resource_exhaustion.py::test_polled_quota_stops_a_call_exceeding_it",),
        ),
        Mutation(
            "quota_filesystem",
            "each workdir filesystem is made 64 times the size of its quota",
            (Prepend(f"{PKG}/linux/quotafs.py", "create", "quota_bytes *= 64"),),
            (
                f"{SEC}test_resource_exhaustion.py::test_filesystem_quota_refuses_writes_past_it_and_lets_the_command_go_on",
            ),
            root_only=True,  # loop devices and mount need root: an unprivileged server has the polled quota only
        ),
        Mutation(
            "tree_kill",
            "the session's init leaves a call's orphans alive, and the supervisor its own",
            (
                ReplaceBody(LAUNCHER, "_kill_orphans", "return None"),
                ReplaceBody(LAUNCHER, "_reap_descendants", "return None"),
            ),
            (
                f"{SEC}test_process_tree.py",
                f"{SEC}test_degradation.py::test_daemon_is_killed_without_pid_namespace",
                f"{SEC}test_session_sandboxes.py::test_a_daemon_started_by_a_call_is_dead_when_the_call_returns",
            ),
        ),
    ]


# --- running -------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    mutation: str
    what: str
    failed: int = 0
    passed: int = 0
    skipped: int = 0
    caught: bool | None = None  # None: not applicable here (a root-only layer, run as another user)
    seconds: float = 0.0
    first_failures: list[str] = field(default_factory=list)


#: Never copied when the checkout is not a git work tree (the hanzo-test copy that scripts/test makes).
_NOT_SOURCE = {".git", ".venv", "__pycache__", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def checkout_files() -> list[str]:
    """The checkout's files, relative to it: git's tracked and untracked-but-not-ignored files, or (outside a
    git work tree) every file but virtualenvs, caches and byte code."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        ).stdout.decode()
        return [name for name in out.split("\0") if name and (REPO / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        pass
    files = []
    for parent, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _NOT_SOURCE and not d.endswith(".egg-info")]
        files += [os.path.relpath(os.path.join(parent, n), REPO) for n in names if not n.endswith(".pyc")]
    return files


def make_copy(files: Sequence[str], edits: Sequence[Edit]) -> Path:
    root = Path(tempfile.mkdtemp(prefix="hanzo-mutation-"))
    root.chmod(0o755)  # the sandbox uid reads the package, as it does a normal checkout
    for name in files:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    for edit in edits:
        path = root / edit.path
        source = edit.apply(path.read_text())
        compile(source, str(path), "exec")  # a mutation must break a layer, never the syntax
        path.write_text(source)
    return root


_COUNT = re.compile(r"(\d+) (failed|passed|skipped|error|errors)\b")


def run_tests(copy: Path, tests: Sequence[str], maxfail: int) -> tuple[dict[str, int], list[str], str]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("HANZO_SANDBOX", None)
    proc = subprocess.run(
        [str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--maxfail={maxfail}", "-rf", *tests],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    counts = {"failed": 0, "passed": 0, "skipped": 0, "error": 0}
    for number, kind in _COUNT.findall(tail):
        counts["error" if kind.startswith("error") else kind] += int(number)
    failures = [line[7:] for line in proc.stdout.splitlines() if line.startswith(("FAILED ", "ERROR  "))][:3]
    return counts, failures, tail


def check(mutation: Mutation, files: Sequence[str], maxfail: int) -> Outcome:
    outcome = Outcome(mutation.name, mutation.what)
    if mutation.root_only and not IS_ROOT:
        return outcome
    started = time.monotonic()
    copy = make_copy(files, mutation.edits)
    try:
        counts, outcome.first_failures, _ = run_tests(copy, mutation.tests, maxfail)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    outcome.failed = counts["failed"] + counts["error"]
    outcome.passed, outcome.skipped = counts["passed"], counts["skipped"]
    outcome.caught = outcome.failed > 0
    outcome.seconds = round(time.monotonic() - started, 1)
    return outcome


def baseline(chosen: Sequence[Mutation], files: Sequence[str]) -> str | None:
    """Run every chosen mutation's tests on an unmutated copy; the reason when they do not all pass."""
    tests = sorted({test for m in chosen if not (m.root_only and not IS_ROOT) for test in m.tests})
    copy = make_copy(files, ())
    try:
        counts, failures, tail = run_tests(copy, tests, maxfail=5)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    if counts["failed"] or counts["error"] or not counts["passed"]:
        return f"the unmutated tests do not pass ({tail}): {failures}"
    return None


def diff(mutation: Mutation) -> str:
    """The mutation's edits as a unified diff against this checkout."""
    out = []
    for path in dict.fromkeys(edit.path for edit in mutation.edits):
        before = (REPO / path).read_text()
        after = before
        for edit in mutation.edits:
            if edit.path == path:
                after = edit.apply(after)
        lines = difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{path}", f"b/{path}"
        )
        out.append("".join(lines))
    return f"# {mutation.name}: {mutation.what}\n" + "".join(out)


def table(outcomes: Sequence[Outcome]) -> str:
    rows = [("mutation", "tests failed", "caught", "broken on purpose")]
    for o in outcomes:
        caught = "n/a (root only)" if o.caught is None else "yes" if o.caught else "NO"
        ran = o.failed + o.passed
        rows.append((o.mutation, f"{o.failed}/{ran}" if o.caught is not None else "-", caught, o.what))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run this mutation (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    parser.add_argument("--seed", type=int, default=None, help="seed for the deny-list entry to drop")
    parser.add_argument("--deny-entry", metavar="SYSCALL", help="drop this deny-list entry instead of a random one")
    parser.add_argument("--maxfail", type=int, default=2, help="stop a mutation's tests after N failures")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests")
    parser.add_argument("--diff", action="store_true", help="print each chosen mutation's edits as a diff")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"seed {seed}", file=sys.stderr)
    try:
        every = mutations(seed, args.deny_entry)
        files = checkout_files()
        for mutation in every:  # every anchor is checked, even for mutations not run this time
            for edit in mutation.edits:
                edit.apply((REPO / edit.path).read_text())
    except AnchorError as exc:
        print(f"anchor gone: {exc}", file=sys.stderr)
        return 2
    names = {m.name for m in every}
    wanted = list(args.only)
    unknown = [n for n in wanted if n not in names]
    if unknown:
        print(f"unknown mutation(s) {unknown}; known: {sorted(names)}", file=sys.stderr)
        return 2
    chosen = [m for m in every if not wanted or m.name in wanted]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.what}{' (root only)' if m.root_only else ''}\n    " + "\n    ".join(m.tests))
        return 0
    if args.diff:
        for m in chosen:
            print(diff(m))
        return 0
    if not args.no_baseline:
        problem = baseline(chosen, files)
        if problem:
            print(problem, file=sys.stderr)
            return 2
    outcomes = []
    for mutation in chosen:
        outcome = check(mutation, files, args.maxfail)
        first = f"; first failure: {outcome.first_failures[0]}" if outcome.first_failures else ""
        print(f"{outcome.mutation}: caught={outcome.caught} ({outcome.seconds} s){first}", file=sys.stderr)
        outcomes.append(outcome)
    if args.json:
        print(json.dumps({"seed": seed, "root": IS_ROOT, "outcomes": [asdict(o) for o in outcomes]}, indent=2))
    else:
        print(table(outcomes))
    return 1 if any(o.caught is False for o in outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
