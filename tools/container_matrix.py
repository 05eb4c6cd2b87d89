#!/usr/bin/env python3
"""Measure the truthful-degradation matrix in real containers: for each runtime setting, what `doctor --json`
claims, whether `run --strict` refuses, and which attacks of tools/attack_suite.py are blocked.

    python tools/container_matrix.py --engine podman --image IMAGE --recommended "FLAGS" --profile FILE
        [--engine-flags "FLAGS"] [--docker-profile FILE] [--quick] [--json]

Normally started by `scripts/container-test matrix`. Each setting is one `ENGINE run --rm` of the test image
(Dockerfile.test), as root and as hanzo-test inside. `--quick` skips the attack suite (doctor and strict
only). A layer that the report claims must never fail its attack: such rows are printed as CLAIMED-BUT-FAILED
and make the exit status 1. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

ROOT_CHECKOUT = "/opt/hanzo-sandbox-mcp"
USER_CHECKOUT = "/home/hanzo-test/hanzo-sandbox-mcp"
MARK = "=====hanzo-matrix:"
#: Which reported layers stop each attack (README "Security model"): whenever one of them is reported in
#: force, the attack must be blocked. "landlock6" is Landlock with scopes (signals, abstract sockets);
#: "uid_drop" a root server whose command runs as another uid; "net" the call's own network_isolated;
#: "always" what every call gets (environment scrub, closed descriptors). An attack with no entry (the
#: polled disk quota) is judged by the attack suite alone.
STOPPED_BY: dict[str, tuple[str, ...]] = {
    "read server's 0600 key": ("landlock", "root", "uid_drop"),
    "read world-readable file outside allowlist": ("landlock", "root"),
    "read via symlink in workdir": ("landlock", "root"),
    "read via /proc/self/root": ("landlock", "root"),
    "read /etc/shadow": ("landlock", "root", "uid_drop"),
    "list server home": ("landlock", "root", "uid_drop"),
    "write into world-writable dir outside": ("landlock", "root"),
    "hard link to outside file": ("landlock", "root"),
    "chmod server's 0600 key": ("root", "uid_drop"),  # Landlock does not cover chmod
    "write /proc/sys/kernel/core_pattern": ("landlock", "root", "uid_drop", "user"),
    "see host process": ("root",),  # the fresh /proc; the old one lists every process
    "kill host process": ("pid", "landlock6"),
    "kill -9 -1": ("pid", "landlock6"),
    "read host process environ": ("root",),
    "ptrace sandbox init (pid 1)": ("seccomp",),
    "read server env secret": ("always",),
    "loopback: host abstract UNIX socket": ("net", "landlock6"),
    "loopback: host pathname UNIX socket": ("root",),  # connect() is no file access for Landlock
    "none: host pathname UNIX socket": ("root",),
    "NoNewPrivs not set": ("nnp",),
    "effective capabilities": ("nnp",),
    "bounding capabilities": ("user",),  # dropping it needs CAP_SETPCAP, which only the user namespace gives
    "su to root": ("nnp",),
    "fill private /tmp": ("root",),
    "fallocate burst past 5 MiB quota": (),  # the polled quota is no layer (README: approximate)
    "setsid daemon outlives call": ("pid",),
    "timeout leaves grandchild": ("pid",),
    "leaked file descriptors": ("always",),
}
#: By category, for the attacks not named above.
STOPPED_BY_CATEGORY = {"network": ("net",), "kernel": ("seccomp",), "resource": ("rlimits",)}


@dataclass
class Setting:
    name: str
    flags: list[str]
    user: str  # "root" or "hanzo-test"
    attacks: bool = True


def settings(recommended: list[str], profile: str, docker_profile: str | None, quick: bool) -> list[Setting]:
    """Every row of the matrix. `recommended` are the engine's smallest flags that give every layer; the
    Docker snippet's flags (our profile, systempaths=unconfined) are measured too, since podman takes them."""
    docker_flags = [f"--security-opt=seccomp={profile}", "--security-opt=systempaths=unconfined"]
    none = "--network=none"
    out = [
        Setting("runtime defaults, root", [], "root"),
        Setting("runtime defaults, non-root", [], "hanzo-test"),
        Setting("recommended, root", recommended, "root"),
        Setting("recommended, non-root", recommended, "hanzo-test"),
        Setting("recommended + --network none, root", [*recommended, none], "root"),
        Setting("recommended + --network none, non-root", [*recommended, none], "hanzo-test"),
        Setting("Docker snippet's flags, root", docker_flags, "root"),
        Setting("Docker snippet's flags, non-root", docker_flags, "hanzo-test", attacks=False),
        Setting("our seccomp profile only (/proc masked), root", docker_flags[:1], "root", attacks=False),
    ]
    if docker_profile:
        out += [
            Setting("Docker's default seccomp profile, root", [f"--security-opt=seccomp={docker_profile}"], "root"),
            Setting(
                "Docker's default seccomp profile, non-root",
                [f"--security-opt=seccomp={docker_profile}"],
                "hanzo-test",
                attacks=False,
            ),
        ]
    if quick:
        for setting in out:
            setting.attacks = False
    return out


def inner_script(setting: Setting) -> str:
    checkout = ROOT_CHECKOUT if setting.user == "root" else USER_CHECKOUT
    cli = f"{checkout}/.venv/bin/hanzo-sandbox-mcp"
    steps = [
        f"cd {checkout}",
        f"echo '{MARK}doctor'; {cli} doctor --json",
        f"echo '{MARK}strict'; {cli} run --strict -- true >/dev/null 2>/tmp/strict.err; echo $?; cat /tmp/strict.err",
    ]
    if setting.attacks:
        steps.append(f"echo '{MARK}attacks'; .venv/bin/python tools/attack_suite.py --json --cli {cli} 2>/dev/null")
    return "; ".join(steps)


def run_setting(engine: str, image: str, engine_flags: list[str], setting: Setting) -> dict[str, str]:
    user = [] if setting.user == "root" else ["--user", "hanzo-test"]
    argv = [engine, "run", "--rm", *engine_flags, *setting.flags, *user, image, "sh", "-c", inner_script(setting)]
    print(f"# {setting.name}: {shlex.join(argv[:-1])} ...", file=sys.stderr)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    parts: dict[str, str] = {"stderr": proc.stderr[-2000:]}
    for chunk in proc.stdout.split(MARK)[1:]:
        name, _, body = chunk.partition("\n")
        parts[name.strip()] = body
    return parts


def summarize(setting: Setting, parts: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {"setting": setting.name, "flags": " ".join(setting.flags) or "(none)"}
    try:
        doctor = json.loads(parts.get("doctor", ""))
    except ValueError:
        row["error"] = "doctor did not run: " + parts.get("stderr", "")[-300:]
        return row
    eff = doctor["effective"]
    row["uid"] = f"{doctor['running_as_uid']} -> {eff['uid']}"
    row["layers"] = _layers(eff)
    row["missing"] = [m.split(":")[0] for m in eff["missing"]]
    row["missing_detail"] = eff["missing"]
    row["doctor_ok"] = doctor["ok"]
    strict_lines = parts.get("strict", "").strip().splitlines()
    row["strict_exit"] = int(strict_lines[0]) if strict_lines and strict_lines[0].isdigit() else None
    row["strict_message"] = " ".join(strict_lines[1:])[:300]
    if "attacks" in parts:
        row.update(_attacks(parts["attacks"], _claims(doctor)))
    return row


def _claims(doctor: dict[str, Any]) -> set[str]:
    """The layer names of `STOPPED_BY` that the report says are in force (network: per call)."""
    eff = doctor["effective"]
    abi = eff["landlock_abi"] or 0
    claims = {
        "always": True,
        "landlock": abi > 0,
        "landlock6": abi >= 6,
        "root": eff["private_root"],
        "seccomp": eff["seccomp"],
        "nnp": eff["no_new_privs"],
        "pid": "pid" in eff["namespaces"],
        "user": "user" in eff["namespaces"],
        "rlimits": eff["rlimits_applied"],
        "uid_drop": doctor["running_as_uid"] == 0 and eff["uid"] not in (0, None),
    }
    return {name for name, held in claims.items() if held}


def _layers(eff: dict[str, Any]) -> str:
    names = []
    if eff["namespaces"]:
        names.append("ns[" + ",".join(eff["namespaces"]) + "]")
    for key, label in (
        ("private_root", "root"),
        ("private_tmp", "tmp"),
        ("rlimits_applied", "rlimits"),
        ("no_new_privs", "nnp"),
        ("seccomp", "seccomp"),
        ("cgroup_limits", "cgroup"),
    ):
        if eff[key]:
            names.append(label)
    if eff["landlock_abi"]:
        names.append(f"landlock{eff['landlock_abi']}")
    names.append("fs_isolated" if eff["fs_isolated"] else "-fs_isolated")
    names.append("network_isolated" if eff["network_isolated"] else "-network_isolated")
    return " ".join(names)


def _attacks(text: str, claims: set[str]) -> dict[str, Any]:
    try:
        rows = json.loads(text)
    except ValueError:
        return {"attacks": "the attack suite did not run"}
    judged = [r for r in rows if not r.get("control")]
    controls = [r for r in rows if r.get("control")]
    succeeded = [r for r in judged if r["blocked"] is False]
    claimed_but_failed = []
    for r in succeeded:
        stopped_by = STOPPED_BY.get(r["attack"], STOPPED_BY_CATEGORY.get(r["category"], ()))
        held = claims | ({"net"} if "net" in r["layers"].split() else set())
        if held.intersection(stopped_by):
            claimed_but_failed.append(f"{r['attack']} (reported: {', '.join(sorted(held & set(stopped_by)))})")
    return {
        "attacks": f"{sum(r['blocked'] is True for r in judged)}/{len(judged)} blocked",
        "controls_ok": all(r["blocked"] is False for r in controls),
        "not_judged": [f"{r['attack']}: {r['evidence']}" for r in judged if r["blocked"] is None],
        "succeeded": [f"{r['attack']} [{r['layers']}]: {str(r['evidence'])[:120]}" for r in succeeded],
        "claimed_but_failed": claimed_but_failed,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| Setting | uid server -> command | Layers reported | Missing | `run --strict` | Attacks |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setting']} | | {r['error']} | | | |")
            continue
        strict = "runs" if r["strict_exit"] == 0 else f"refuses ({r['strict_exit']})"
        attacks = r.get("attacks", "not run")
        if r.get("succeeded"):
            attacks += "; got through: " + "; ".join(s.split(" [")[0] for s in r["succeeded"])
        lines.append(
            f"| {r['setting']} | {r['uid']} | {r['layers']} | {', '.join(r['missing']) or 'none'} | {strict} | "
            f"{attacks} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="podman")
    parser.add_argument("--image", required=True)
    parser.add_argument("--engine-flags", default="", help="flags every run needs on this machine (ulimits)")
    parser.add_argument("--recommended", required=True, help="the recommended security flags")
    parser.add_argument("--profile", required=True, help="config/container-seccomp.json")
    parser.add_argument("--docker-profile", help="Docker's default seccomp profile (moby's default.json)")
    parser.add_argument("--quick", action="store_true", help="doctor and strict only, no attack suite")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args(argv)
    rows = []
    for setting in settings(shlex.split(args.recommended), args.profile, args.docker_profile, args.quick):
        parts = run_setting(args.engine, args.image, shlex.split(args.engine_flags), setting)
        row = summarize(setting, parts)
        rows.append(row)
        print(json.dumps(row, indent=1), file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    print(markdown(rows))
    bad = [r for r in rows if r.get("claimed_but_failed") or r.get("controls_ok") is False]
    for r in bad:
        print(f"CLAIMED-BUT-FAILED in {r['setting']}: {r.get('claimed_but_failed')}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
