"""The launch plan: everything the launcher needs to confine and exec one command.

Imported by the launcher under `python -I -S` before every command, so it uses nothing but builtins:
`dataclasses` would import `inspect` and `re`, and `json` would import `re` (about 15 ms together, more than
the launcher's own work). The plan crosses the process boundary in `marshal` format through an inherited
pipe: both ends are this package (the format never leaves the machine or meets untrusted input), it is
built in, and it is the fastest codec Python has. Never argv, which other processes can read in /proc.
"""

from __future__ import annotations

import marshal

__all__ = ["CALL_FIELDS", "NAMESPACE_NAMES", "LandlockSpec", "LaunchPlan", "RootSpec"]

#: The namespaces the launcher knows how to create.
NAMESPACE_NAMES = ("user", "pid", "mount", "net", "ipc", "uts")
#: The fields each call sets; every other field belongs to the session's sandbox, which is made once.
CALL_FIELDS = ("argv", "cwd", "env", "no_new_privs", "rlimits", "status_token", "strict", "wrapper")


def _frozen(value: object) -> object:
    """A hashable stand-in that is equal exactly when the values are (dicts compare without order)."""
    if isinstance(value, dict):
        return frozenset((key, _frozen(item)) for key, item in value.items())
    return value


class _Record:
    """Immutable record with keyword construction, equality, repr, `replace` and a plain-dict form."""

    __slots__: tuple[str, ...] = ()

    def __init__(self, **fields: object) -> None:
        for name in self.__slots__:
            object.__setattr__(self, name, fields[name])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; use replace()")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(tuple(_frozen(getattr(self, name)) for name in self.__slots__))

    def __repr__(self) -> str:
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({body})"

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


class LandlockSpec(_Record):
    """Filesystem and network allowlist handed to Landlock."""

    __slots__ = ("deny_tcp", "read_exec", "read_write", "scope")
    read_exec: tuple[str, ...]
    read_write: tuple[str, ...]
    deny_tcp: bool
    scope: bool

    def __init__(
        self,
        read_exec: tuple[str, ...] = (),
        read_write: tuple[str, ...] = (),
        deny_tcp: bool = False,
        scope: bool = True,
    ) -> None:
        super().__init__(read_exec=tuple(read_exec), read_write=tuple(read_write), deny_tcp=deny_tcp, scope=scope)


class RootSpec(_Record):
    """The host paths bound into the private root (read-only, or read-write), built inside the mount
    namespace. Kept apart from `LandlockSpec` although `LinuxSandbox.harden` fills both with the same lists:
    each layer can then be switched off alone (`plan.replace(landlock=None)` keeps the private root,
    `plan.replace(root=None)` keeps Landlock), which is how tests show that one layer holds by itself."""

    __slots__ = ("read_only", "read_write")
    read_only: tuple[str, ...]
    read_write: tuple[str, ...]

    def __init__(self, read_only: tuple[str, ...] = (), read_write: tuple[str, ...] = ()) -> None:
        super().__init__(read_only=tuple(read_only), read_write=tuple(read_write))


class LaunchPlan(_Record):
    """One command, the layers to apply to it, and how strictly."""

    __slots__ = (
        "argv",
        "cwd",
        "env",
        "gid",
        "landlock",
        "loopback",
        "namespaces",
        "no_new_privs",
        "parent_pid",
        "proxy_port",
        "rlimits",
        "root",
        "scratch",
        "seccomp_bpf",
        "status_token",
        "strict",
        "tmp_size_mb",
        "uid",
        "wrapper",
    )
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    namespaces: tuple[str, ...]
    uid: int | None
    gid: int | None
    loopback: bool
    tmp_size_mb: int | None
    rlimits: dict[str, int]
    no_new_privs: bool
    parent_pid: int | None
    """The server's pid (`launch.seal`): a launcher whose parent is no longer it exits at once, since the
    parent-death signal it arms would never come."""
    proxy_port: int | None
    """`network = "allowlist"`: the session's init listens on 127.0.0.1 at this port, in the session's
    network namespace, and hands the listening socket to the server's egress proxy."""
    landlock: LandlockSpec | None
    root: RootSpec | None
    """The private root's contents; None: no private root, even in a mount namespace."""
    scratch: tuple[str, str] | None
    """Host directories bound as the session's /tmp and /dev/shm (on its quota filesystem); None: tmpfs."""
    seccomp_bpf: bytes | None
    status_token: str
    """A per-call secret every status line carries (`launch.seal`): lines without it are forged."""
    strict: bool
    wrapper: tuple[str, ...]
    """Argv prepended to `argv` before exec (macOS `sandbox-exec -p ...`)."""

    def __init__(
        self,
        *,
        argv: tuple[str, ...],
        env: dict[str, str],
        cwd: str,
        namespaces: tuple[str, ...] = (),
        uid: int | None = None,
        gid: int | None = None,
        loopback: bool = False,
        tmp_size_mb: int | None = None,
        rlimits: dict[str, int] | None = None,
        no_new_privs: bool = False,
        parent_pid: int | None = None,
        proxy_port: int | None = None,
        landlock: LandlockSpec | None = None,
        root: RootSpec | None = None,
        scratch: tuple[str, str] | None = None,
        seccomp_bpf: bytes | None = None,
        status_token: str = "",
        strict: bool = False,
        wrapper: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            argv=tuple(argv),
            env=dict(env),
            cwd=cwd,
            namespaces=tuple(namespaces),
            uid=uid,
            gid=gid,
            loopback=loopback,
            tmp_size_mb=tmp_size_mb,
            rlimits=dict(rlimits or {}),
            no_new_privs=no_new_privs,
            parent_pid=parent_pid,
            proxy_port=proxy_port,
            landlock=landlock,
            root=root,
            scratch=None if scratch is None else (scratch[0], scratch[1]),
            seccomp_bpf=seccomp_bpf,
            status_token=status_token,
            strict=strict,
            wrapper=tuple(wrapper),
        )

    def replace(self, **changes: object) -> LaunchPlan:
        return LaunchPlan(**{**self.as_dict(), **changes})  # type: ignore[arg-type]

    def session_part(self) -> LaunchPlan:
        """This plan without its call: what the session's sandbox is made from (and compared by)."""
        return self.replace(argv=(), cwd="/", env={}, rlimits={}, status_token="", wrapper=())

    def call_wire(self) -> bytes:
        """The call's own fields, as the session's sandbox receives them for each call."""
        return marshal.dumps({name: getattr(self, name) for name in CALL_FIELDS})

    def with_call(self, raw: bytes) -> LaunchPlan:
        """This (session) plan with the call fields of `raw` (`call_wire`); ValueError when malformed."""
        call = marshal.loads(raw)
        if not isinstance(call, dict) or set(call) != set(CALL_FIELDS):
            raise ValueError("a call must carry exactly the call fields")
        return self.replace(**call)

    def to_wire(self) -> bytes:
        data = self.as_dict()
        for name in ("landlock", "root"):
            record = getattr(self, name)
            if record is not None:
                data[name] = record.as_dict()
        return marshal.dumps(data)

    @classmethod
    def from_wire(cls, raw: bytes) -> LaunchPlan:
        data = marshal.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a launch plan must be a mapping")
        for name, record in (("landlock", LandlockSpec), ("root", RootSpec)):
            if data.get(name) is not None:
                data[name] = record(**data[name])
        return cls(**data)
