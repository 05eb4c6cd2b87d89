"""Command line: `hanzo-sandbox-mcp [serve|run|doctor]`.

`run` executes one command exactly as the server would (same sandbox, same policy, a fresh workdir unless
`--workdir` is given), streams its output and exits with its status (128 + signal when killed). On a
terminal the command's control characters are shown as text (`--raw` writes them as they are); pipes
and files get the exact bytes. Errors are one clear line on stderr, never a traceback: exit 2 for bad
usage or configuration, 125 when the sandbox cannot run the command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import anyio
from pydantic import ValidationError

from .config import Settings, load_settings
from .errors import ConfigError, HanzoSandboxError, RequestError
from .policy import NetworkMode, SandboxPolicy
from .terminal import TerminalEscaper, escape_for_terminal, wants_escaping
from .version import package_version

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_SANDBOX = 125


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hanzo-sandbox-mcp",
        description="MCP server that runs commands and Python code inside an OS-level sandbox.",
    )
    parser.add_argument("--config", type=Path, help="TOML config file (default: the user's, else built in)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the MCP server (default)")
    serve.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML config file")
    serve.add_argument("--transport", choices=("stdio", "http", "sse"), default="stdio")
    serve.add_argument("--host", help="bind address for http/sse (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port for http/sse (default from config)")

    run = sub.add_parser("run", help="run one command through the sandbox, as the server would")
    run.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML config file")
    run.add_argument("--network", choices=[m.value for m in NetworkMode], help="override the network mode")
    run.add_argument(
        "--allow-domain",
        action="append",
        default=[],
        metavar="NAME",
        help="with --network allowlist: a name ('pypi.org') or '*.example.com' the proxy lets the command "
        "reach, added to the configured allowed_domains (repeatable)",
    )
    run.add_argument("--workdir", type=Path, help="existing directory to run in (default: a fresh one)")
    run.add_argument("--timeout", type=float, help="wall-clock timeout in seconds")
    run.add_argument("--strict", action="store_true", help="refuse to run if any layer cannot be applied")
    run.add_argument("--json", action="store_true", help="print the whole result as one JSON object")
    run.add_argument(
        "--raw",
        action="store_true",
        help="write the command's output to a terminal unchanged (by default its control characters, such "
        "as escape sequences, are shown as text there; pipes and files always get the exact bytes)",
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")

    doctor = sub.add_parser("doctor", help="show which sandbox layers this machine supports")
    doctor.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML config file")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _say(message: str, *, raw: bool) -> None:
    """One line on stderr; the message can quote the command, so on a terminal it is escaped too."""
    if wants_escaping(sys.stderr.fileno(), raw=raw):
        message = escape_for_terminal(message)
    print(f"hanzo-sandbox-mcp: {message}", file=sys.stderr)


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level, format="hanzo-sandbox-mcp: %(levelname)s %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        _setup_logging(settings.log_level)
        if args.command == "run":
            return _run(args, settings)
        if args.command == "doctor":
            return _doctor(args, settings)
        from .server import serve

        serve(
            settings,
            args.__dict__.get("transport", "stdio"),
            args.__dict__.get("host"),
            args.__dict__.get("port"),
        )
        return 0
    except (ConfigError, RequestError) as exc:
        _say(str(exc), raw=args.__dict__.get("raw", False))
        return EXIT_USAGE
    except HanzoSandboxError as exc:
        _say(str(exc), raw=args.__dict__.get("raw", False))
        return EXIT_SANDBOX
    except KeyboardInterrupt:
        return 130


def _doctor(args: argparse.Namespace, settings: Settings) -> int:
    from .doctor import diagnose, render_text
    from .sandbox import for_mode

    report = diagnose(for_mode(settings.mode), settings.policy, settings.mode)
    print(report.model_dump_json(indent=2) if args.json else render_text(report))
    return 0


def _run_policy(args: argparse.Namespace, configured: SandboxPolicy) -> SandboxPolicy:
    """The configured policy with `run`'s flags applied, validated again (a flag can carry a bad name)."""
    updates: dict[str, object] = {}
    if args.network:
        updates["network"] = NetworkMode(args.network)
    if args.strict:
        updates["strict"] = True
    if args.allow_domain:
        if updates.get("network", configured.network) is not NetworkMode.ALLOWLIST:
            raise RequestError('--allow-domain needs --network allowlist (or network = "allowlist" in the config)')
        updates["allowed_domains"] = (*configured.allowed_domains, *args.allow_domain)
    try:
        return SandboxPolicy.model_validate({**configured.model_dump(), **updates})
    except ValidationError as exc:  # only --allow-domain can be invalid here: the other flags are choices
        problems = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in exc.errors())
        raise RequestError(f"--allow-domain: {problems}") from None


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from .quota import QuotaLimits, WorkdirFactory, WorkdirQuota
    from .results import ExecResult
    from .runner import run_sandboxed
    from .sandbox import ensure_required, for_mode
    from .session_sandbox import bound_policy
    from .treewalk import remove_tree
    from .workdir import command_owner

    command = list(args.argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise RequestError("no command given: hanzo-sandbox-mcp run [options] -- CMD [ARG...]")
    policy = _run_policy(args, settings.policy)
    timeout = args.timeout if args.timeout is not None else settings.exec.default_timeout_s
    if not timeout > 0:
        raise RequestError("--timeout must be a positive number of seconds")
    sandbox = for_mode(settings.mode)
    ensure_required(settings.mode, sandbox, policy)

    fresh_root: Path | None = None
    workdir: Path | None = None
    if args.workdir is not None:
        workdir = args.workdir.resolve()
        if not workdir.is_dir():
            raise RequestError(f"--workdir {args.workdir} is not an existing directory")
    else:
        # A private parent (0711) holds the fresh workdir and, in filesystem mode, its image (0700 inside).
        fresh_root = Path(tempfile.mkdtemp(prefix="hanzo-run-root-", dir=tempfile.gettempdir()))
        os.chmod(fresh_root, 0o711)
    stream = not args.json
    targets = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    # Each stream on its own: `run ... | less` keeps stdout exact while stderr on the terminal is escaped.
    escapers = {
        name: TerminalEscaper() for name, target in targets.items() if wants_escaping(target.fileno(), raw=args.raw)
    }

    async def echo(name: str, chunk: bytes) -> None:
        escaper = escapers.get(name)
        targets[name].write(escaper.feed(chunk) if escaper else chunk)
        targets[name].flush()

    async def run_once() -> ExecResult:
        factory: WorkdirFactory | None = None
        quota: WorkdirQuota | None = None
        target = workdir
        if fresh_root is not None:
            factory = WorkdirFactory(
                fresh_root,
                command_owner(policy.sandbox_uid, policy.sandbox_gid),
                QuotaLimits.of(policy.workdir_quota_mb, settings.sessions.workdir_inodes),
                force_polled=settings.sessions.quota_mode == "polled",
                disk_reserve_bytes=settings.sessions.disk_reserve_mb * 1024 * 1024,
            )
            quota = await factory.create("hanzo-run-")
            target = quota.path
        assert target is not None
        try:
            return await run_sandboxed(
                sandbox,
                bound_policy(policy, quota) if quota is not None else policy.with_workdir(target),
                command,
                timeout_s=timeout,
                output=settings.output,
                on_output=echo if stream else None,
                quota=quota,
            )
        finally:
            if factory is not None and quota is not None:
                with anyio.CancelScope(shield=True):
                    await factory.release(quota)

    try:
        result = anyio.run(run_once)
    finally:
        if fresh_root is not None:
            remove_tree(fresh_root)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        for name, escaper in escapers.items():
            targets[name].write(escaper.flush())
            targets[name].flush()
        if result.timed_out:
            _say(f"timed out after {timeout:g} s", raw=args.raw)
        if result.error:  # never streamed: it comes from the launcher, not from the command
            _say(result.error, raw=args.raw)
    return result.returncode
