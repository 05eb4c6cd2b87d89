#!/usr/bin/env python3
"""Write config/container-seccomp.json: a container runtime's default seccomp profile plus exactly what the
sandbox needs, so that a container never has to run with `seccomp=unconfined`.

    python tools/container_seccomp.py [--base FILE] [--output FILE]
    python tools/container_seccomp.py --check      # exit 1 when the output differs from what --base gives

The base defaults to podman's (containers-common, /usr/share/containers/seccomp.json); Docker reads the same
format, and a Docker user may regenerate the file from Docker's own default (moby's
profiles/seccomp/default.json) with --base. Docker's default allows unshare, mount, umount2 and pivot_root
only with CAP_SYS_ADMIN, which a container's processes lack; podman's allows them already. The sandbox calls
them inside its own user namespace (the capabilities they check are the ones it holds there, never the
host's), and its own filter denies all of them to the command.

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = Path("/usr/share/containers/seccomp.json")
DEFAULT_OUTPUT = REPO_ROOT / "config" / "container-seccomp.json"
TAG = "hanzo-sandbox-mcp: "

#: The rules the sandbox adds: allowed without any capability, whatever the arguments.
SANDBOX_RULES: tuple[dict[str, Any], ...] = (
    {
        "names": ["unshare"],
        "action": "SCMP_ACT_ALLOW",
        "comment": TAG + "the launcher's user, pid, mount, net, ipc and uts namespaces (one unshare call)",
    },
    {
        "names": ["mount", "umount2", "pivot_root"],
        "action": "SCMP_ACT_ALLOW",
        "comment": TAG + "the private root, built inside the sandbox's own user and mount namespaces: binds of "
        "the allowlist, tmpfs, a fresh /proc, pivot_root into it and the old root detached",
    },
    {
        "names": ["landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"],
        "action": "SCMP_ACT_ALLOW",
        "comment": TAG + "the Landlock allowlist (older default profiles do not list these)",
    },
)


def with_sandbox_rules(base: dict[str, Any]) -> dict[str, Any]:
    """The base profile, untouched, with the sandbox's rules appended (any earlier copy of them replaced)."""
    profile = dict(base)
    kept = [rule for rule in base.get("syscalls", []) if not str(rule.get("comment", "")).startswith(TAG)]
    profile["syscalls"] = [*kept, *(dict(rule) for rule in SANDBOX_RULES)]
    return profile


def render(profile: dict[str, Any]) -> str:
    return json.dumps(profile, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE, help=f"the runtime's default ({DEFAULT_BASE})")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the profile")
    parser.add_argument("--check", action="store_true", help="only compare the output with what --base gives")
    args = parser.parse_args(argv)
    try:
        base = json.loads(args.base.read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read the base profile {args.base}: {exc} (install podman, or pass --base)", file=sys.stderr)
        return 2
    text = render(with_sandbox_rules(base))
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is not {args.base} plus the sandbox's rules: regenerate it", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output} ({args.base} plus {len(SANDBOX_RULES)} rules)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
