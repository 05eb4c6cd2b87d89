"""Sessions: unguessable handles, each owning one private workdir that persists between calls.

A session is an explicit handle. Every run result carries `session_id`; passing it back reuses the
session's workdir, so files persist between calls. Handles are `secrets.token_urlsafe(24)` (192 bits) and
are matched against a strict pattern before any use: a malformed handle is an error, never a path
component. Workdir names are drawn separately, so a path that shows up in output reveals no handle.

Lifetime rules (the tool descriptions repeat them to the model):

- a session expires after `idle_ttl_s` seconds without a call; one with a call running never expires;
- there are three kinds (`SessionKind`): explicit (`create_session`), a client's default (calls without
  `session_id` from a client with a protocol session; it ends with that protocol session) and single-call
  (calls without `session_id` from any other client);
- each session has an owner, the client that made it. When `max_sessions` exist, creating another
  reclaims the oldest idle single-call session that nobody used again, else the creating client's own
  least recently used idle session (not its default one). No other session is ever ended for another
  client's sake: when none can go, creation waits up to `create_wait_s` for room, then fails with
  `SessionLimitReached`;
- `close()` ends a session at once: its running calls are cancelled (the runner kills their process
  trees), then its workdir is deleted;
- `aclose()` (server shutdown, SIGTERM, stdin EOF) deletes every workdir and the sessions root;
  if the server dies instead (SIGKILL, a crash), its watchdog does (reaper.py).

Ending a session never raises and never leaves the manager broken, whatever the model left in the
workdir: a workdir that cannot be deleted yet is logged and retried on the next expiry sweep and at
shutdown. Each workdir has its quota (quota.py): a filesystem of its own when the server is root, else a
background count.

Layout and ownership, chosen so one session's command cannot read another's files even without Landlock:
the sessions root is mode 0711 and owned by the server (a command can traverse it to reach its own
workdir but cannot list it); each workdir is mode 0700 and owned by the uid commands run as (chowned
when the server is root and commands run unprivileged).

The server itself reads and lists workdir files (resources, `list_files`), and the model controls that
directory: `open_beneath()` walks a relative path one component at a time from the workdir's descriptor
with `O_NOFOLLOW`, so a symbolic link or `..` can never lead the server out of it.

This module is pure library code: it knows nothing of MCP.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import anyio
import anyio.to_thread

from .clients import LOCAL
from .config import SessionSettings
from .errors import RequestError, SessionLimitReached, SessionNotFound
from .filenames import display_path, quoted, unescape_name
from .linux.paths import reachable_by
from .linux.uids import UidAllocator, UidLease, check_range
from .policy import SandboxPolicy
from .quota import QuotaLimits, QuotaMode, WorkdirFactory, WorkdirQuota
from .reaper import ClaimedRoot, claim_root
from .session_sandbox import SandboxHolder, SandboxMaker, SessionSandbox
from .tmp_budget import TmpBudget, TmpReservation, session_tmpfs_mb
from .treewalk import remove_tree

__all__ = [
    "CREATE_WAIT_S",
    "SESSION_ID_PATTERN",
    "Session",
    "SessionKind",
    "SessionManager",
    "new_session_id",
    "open_beneath",
    "relative_parts",
    "validate_session_id",
]

_log = logging.getLogger("hanzo_sandbox_mcp.sessions")

#: `secrets.token_urlsafe(24)`: exactly 32 characters of the URL-safe base64 alphabet.
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")
_FORGOTTEN_MAX = 4096
_ROOT_MODE = 0o711
#: How long creating a session waits for room at `max_sessions` before it fails.
CREATE_WAIT_S = 5.0

SessionKind = Literal["explicit", "default", "single_call"]


def new_session_id() -> str:
    """A fresh, unguessable session handle (192 bits of entropy)."""
    return secrets.token_urlsafe(24)


def validate_session_id(value: object) -> str:
    """Return `value` if it has the exact shape of a handle this server issues; else SessionNotFound."""
    if not isinstance(value, str) or SESSION_ID_PATTERN.fullmatch(value) is None:
        raise SessionNotFound(
            "session_id is not a session handle this server issued (32 characters of A-Z, a-z, 0-9, '-', "
            "'_'); pass the session_id from an earlier result exactly, omit it, or call create_session"
        )
    return value


@dataclass(eq=False)
class Session:
    """One session: its handle, its workdir and its bookkeeping. Created only by SessionManager."""

    id: str
    workdir: Path
    kind: SessionKind
    created: float
    last_used: float
    """Monotonic time of the last call's end (or of creation)."""
    limiter: anyio.CapacityLimiter
    """Bounds the calls running at once in this session."""
    quota: WorkdirQuota
    """The workdir's quota: how it is enforced, and how the workdir is removed."""
    sandbox: SandboxHolder | None = None
    """The session's sandbox, every call's home (None only for a manager made without a `SandboxMaker`)."""
    home: Home | None = None
    """What the session holds besides its workdir (its uid lease, its tmpfs reservation)."""
    owner: str = LOCAL.key
    """The key of the client that made it (`clients.ClientId.key`)."""
    reused: bool = False
    """Looked up by its handle after creation: a single-call session that is then never reclaimed."""
    active: int = 0
    closed: bool = False
    _calls: int = 0
    _scopes: set[anyio.CancelScope] = field(default_factory=set)
    _idle: anyio.Event | None = None

    def next_call_number(self) -> int:
        """A per-session counter (names the files run_python writes)."""
        self._calls += 1
        return self._calls

    @property
    def busy(self) -> bool:
        return self.active > 0

    @property
    def reclaimable(self) -> bool:
        """May be ended to make room: an idle single-call session nobody used again."""
        return self.kind == "single_call" and not self.reused and not self.busy


@dataclass(eq=False)
class Home:
    """A made workdir with everything a session or a pre-warmed sandbox holds: released in this order."""

    quota: WorkdirQuota
    sandbox: SessionSandbox | None = None
    lease: UidLease | None = None
    """The session's own uid (a root server); released only once nothing runs as it and its files are gone."""
    tmpfs: TmpReservation | None = None
    """Its share of the server's budget for tmpfs /tmp and /dev/shm (when they are not on the workdir's
    filesystem)."""


class SessionManager:
    """Creates, finds, expires and deletes sessions and their workdirs.

    Single event loop, no locks: every state change happens between awaits. `clock` is injectable so
    expiry can be tested without waiting.
    """

    def __init__(
        self,
        settings: SessionSettings,
        *,
        max_calls_per_session: int,
        owner: tuple[int, int],
        clock: Callable[[], float] = time.monotonic,
        workdir_quota_mb: int = SandboxPolicy().workdir_quota_mb,
        create_wait_s: float = CREATE_WAIT_S,
        maker: SandboxMaker | None = None,
        tmp_size_mb: int = SandboxPolicy().tmp_size_mb,
    ) -> None:
        self.settings = settings
        self.maker = maker
        """Makes each session's sandbox; None: sessions hold workdirs only (each call is then a one-call
        session, as in tests of this class alone)."""
        self._pool: list[Home] = []
        """Sandboxes made ahead, each with its fresh workdir, ready for the next new sessions."""
        self._pool_wanted = anyio.Event()
        self.limits = QuotaLimits.of(workdir_quota_mb, settings.workdir_inodes)
        self._max_calls = max_calls_per_session
        self._owner = owner
        self._clock = clock
        self._create_wait_s = create_wait_s
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        """Least recently used first."""
        self._forgotten: OrderedDict[str, str] = OrderedDict()
        """Recently ended handles -> why (for a precise error message); bounded."""
        self._defaults: dict[str, str] = {}
        """Client key -> handle of its default session."""
        self._room: anyio.Event | None = None
        """Set (and dropped) when a session ends or goes idle: creators waiting for room look again."""
        self._root: Path | None = None
        self._workdirs: WorkdirFactory | None = None
        self._leftovers: list[Home] = []
        """Workdirs of ended sessions whose removal failed: retried by the sweep and at shutdown."""
        self._claim: ClaimedRoot | None = None
        self._uids: UidAllocator | None = None
        """Per-session uids (a root server with `uid_range_size`); None: every session runs as `owner`."""
        self._tmpfs = TmpBudget(settings.tmp_budget_mb)
        self._tmpfs_mb = session_tmpfs_mb(tmp_size_mb)

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The directory holding this server's workdirs (created by `open()`)."""
        if self._root is None:
            raise RuntimeError("SessionManager.open() has not been called")
        return self._root

    @property
    def owner(self) -> tuple[int, int]:
        """(uid, gid) commands run as, which owns each workdir."""
        return self._owner

    def open(self) -> Path:
        """Create this server's private sessions root (mode 0711) and return it."""
        if self._root is not None:
            return self._root
        parent = self.settings.root
        if parent is not None:
            parent.mkdir(mode=_ROOT_MODE, parents=True, exist_ok=True)
        else:
            parent = _default_parent()
        # A fresh directory per server process, so two servers sharing a configured root never touch
        # each other's workdirs, and shutdown can remove the whole tree. It is locked for as long as this
        # server lives, and its watchdog removes it if the server dies without cleaning up (reaper.py).
        self._claim = claim_root(str(parent))
        root = self._root = Path(self._claim.path)
        self._workdirs = WorkdirFactory(
            root,
            self._owner,
            self.limits,
            force_polled=self.settings.quota_mode == "polled",
            disk_reserve_bytes=self.settings.disk_reserve_mb * 1024 * 1024,
        )
        settings = self.settings
        if os.geteuid() == 0 and settings.uid_range_size and self.maker is not None:
            # Checked once, at start: a range that an account uses would let commands act as that account.
            check_range(settings.uid_range_start, settings.uid_range_size)
            self._uids = UidAllocator(settings.uid_range_start, settings.uid_range_size, settings.uid_lock_dir)
        uid, gid = self._owner
        if uid != os.geteuid() and not reachable_by(root, uid, gid):
            _log.warning(
                "uid %d, which commands run as, cannot reach the sessions root %s: every command will fail; "
                "set sessions.root to a directory that uid can traverse",
                uid,
                root,
            )
        return root

    async def aclose(self) -> None:
        """End every session (cancelling running calls) and remove the sessions root. Idempotent."""
        with anyio.CancelScope(shield=True):
            for session in list(self._sessions.values()):
                await self._end(session, "the server shut down")
            pool, self._pool = self._pool, []
            for home in pool:
                await self._release(home)
            if self.maker is not None:
                await self.maker.aclose()
            await self.retry_removals()
            if self._root is not None:
                root, self._root = self._root, None
                # Never crosses into a filesystem still mounted there: a stuck workdir stays, logged.
                if not await anyio.to_thread.run_sync(remove_tree, root):
                    _log.warning("the sessions root %s could not be removed completely", root)
            if self._claim is not None:
                # The watchdog sees the end of its pipe: it exits, or removes what could not be removed.
                claim, self._claim = self._claim, None
                await anyio.to_thread.run_sync(claim.release)

    # -- lookup and creation ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    async def create(self, kind: SessionKind = "explicit", *, owner: str = LOCAL.key) -> Session:
        """Open a fresh session for client `owner`, making room first (see the module docstring);
        SessionLimitReached when there is none."""
        await self._make_room(owner)
        session_id = new_session_id()
        home = await self._fresh_home()
        quota = home.quota
        now = self._clock()
        session = Session(
            id=session_id,
            workdir=quota.path,
            kind=kind,
            created=now,
            last_used=now,
            limiter=anyio.CapacityLimiter(self._max_calls),
            quota=quota,
            sandbox=self.maker.holder(quota, home.sandbox) if self.maker is not None else None,
            home=home,
            owner=owner,
        )
        self._sessions[session_id] = session
        _log.info("session %s created (%s)", _short(session_id), kind)
        return session

    async def _fresh_home(self) -> Home:
        """A new session's workdir and its ready sandbox: from the pool when it has one (which is then
        refilled in the background), else made now."""
        while self._pool:
            home = self._pool.pop(0)
            self._pool_wanted.set()
            if home.sandbox is None or home.sandbox.alive:
                return home
            await self._release(home)
        return await self._make_home("w-")

    async def _make_home(self, prefix: str) -> Home:
        """A workdir owned by its own uid (a root server) or `owner`, with its sandbox when there is a
        maker; whatever was taken is given back when a later step fails."""
        lease = self._uids.acquire() if self._uids is not None else None
        try:
            owner = (lease.uid, lease.gid) if lease is not None else None
            home = Home(await self._factory().create(prefix, owner=owner), lease=lease)
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        try:
            if self.maker is not None:
                if home.quota.tmp_dir is None:
                    home.tmpfs = self._tmpfs.reserve(self._tmpfs_mb)
                home.sandbox = await self.maker.make(home.quota)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._release(home)
            raise
        return home

    async def _release(self, home: Home) -> None:
        """Processes first, then files, then the uid and the memory they used. Never raises. A workdir
        that cannot be removed yet keeps its uid (no other session may own its files) and is retried."""
        if home.sandbox is not None:
            await home.sandbox.aclose()
            home.sandbox = None
        try:
            removed = await self._factory().release(home.quota)
        except Exception as exc:
            _log.warning("removing the workdir %s failed: %s", home.quota.path, exc)
            removed = False
        if not removed:
            _log.warning("the workdir %s is not removed yet; it will be retried", home.quota.path)
            self._leftovers.append(home)
            return
        if home.lease is not None:
            home.lease.release()
        if home.tmpfs is not None:
            home.tmpfs.release()
            home.tmpfs = None

    async def keep_pool(self) -> None:
        """Keep `pool_size` sandboxes made ahead (a background task of the service's); never raises."""
        size = self.settings.pool_size
        if self.maker is None or size == 0:
            return
        failures = 0
        while True:
            if len(self._pool) >= size:
                self._pool_wanted = anyio.Event()
                await self._pool_wanted.wait()
                continue
            try:
                home = await self._make_home("p-")
            except Exception as exc:  # a full disk, no free uid, a sandbox that cannot be made
                failures += 1
                _log.warning("a pre-warmed sandbox could not be made (%s); retrying in a while", exc)
                await anyio.sleep(min(60.0, 2.0**failures))
                continue
            failures = 0
            self._pool.append(home)

    @property
    def uid_range(self) -> tuple[int, int] | None:
        """[first, last] of the per-session uids (a root server), or None: one uid serves every session."""
        if self._uids is None:
            return None
        start = self.settings.uid_range_start
        return start, start + self.settings.uid_range_size - 1

    @property
    def pooled(self) -> int:
        """Sandboxes made ahead and waiting for a session."""
        return len(self._pool)

    @asynccontextmanager
    async def single_call(self, owner: str = LOCAL.key) -> AsyncIterator[Session]:
        """A new single-call session with one call running in it (see `call()`)."""
        session = await self.create("single_call", owner=owner)
        # No await between creation and the call's start: nobody can reclaim the new, idle session.
        async with self.call(session):
            yield session

    async def _make_room(self, owner: str) -> None:
        limit = self.settings.max_sessions
        with anyio.move_on_after(self._create_wait_s):
            while True:
                await self.expire_idle()
                if len(self._sessions) < limit:
                    return
                victim, reason = self._victim(owner)
                if victim is not None:
                    await self._end(victim, f"{reason}, and the server keeps {limit} sessions at most")
                    continue
                if self._room is None:
                    self._room = anyio.Event()
                await self._room.wait()
        raise SessionLimitReached(
            f"all {limit} sessions are in use (other clients' sessions, your default session, or sessions with a "
            f"call running), and none could be freed within {self._create_wait_s:g} s; close a session you no "
            "longer need with close_session, pass the session_id of one you have, or retry later"
        )

    def _victim(self, owner: str) -> tuple[Session | None, str]:
        """The session to end for `owner`'s new one: someone's throwaway, else `owner`'s own (LRU first)."""
        throwaway = [s for s in self._sessions.values() if s.reclaimable]
        if throwaway:
            return min(throwaway, key=lambda s: s.created), "reclaimed: a single-call session nobody reused"
        own = (s for s in self._sessions.values() if s.owner == owner and s.kind != "default" and not s.busy)
        return next(own, None), "evicted: its own client needed room for a new session"

    def _room_changed(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    async def get(self, session_id: object) -> Session:
        """The live session for a handle; SessionNotFound (saying why) for a bad, ended or expired one."""
        sid = validate_session_id(session_id)
        await self.expire_idle()
        session = self._sessions.get(sid)
        if session is None:
            reason = self._forgotten.get(sid)
            if reason is not None:
                raise SessionNotFound(
                    f"session {sid} has ended ({reason}) and its files are gone; omit session_id or call "
                    "create_session to start a new one"
                )
            raise SessionNotFound(
                f"unknown session {sid}: it was never issued by this server (or the server restarted); "
                "omit session_id or call create_session to start a new one"
            )
        self._sessions.move_to_end(sid)
        session.reused = True
        return session

    async def default(self, client: str = LOCAL.key) -> Session:
        """`client`'s default session (stdio: the one client), created on first use or after it ended."""
        session = await self._live_default(client)
        if session is not None:
            return session
        session = await self.create("default", owner=client)
        earlier_id = self._defaults.get(client)  # read without an await since creation: no race
        earlier = self._sessions.get(earlier_id) if earlier_id is not None else None
        if earlier is not None:
            # Another call of this client made its default session while this one waited for room.
            await self._end(session, "a duplicate default session")
            return earlier
        self._defaults[client] = session.id
        return session

    async def _live_default(self, client: str) -> Session | None:
        session_id = self._defaults.get(client)
        if session_id is None:
            return None
        await self.expire_idle()
        session = self._sessions.get(session_id)
        if session is not None:
            self._sessions.move_to_end(session_id)
        return session

    async def end_default(self, client: str, reason: str) -> None:
        """End `client`'s default session, if it has one (its protocol session ended)."""
        session_id = self._defaults.get(client)
        session = self._sessions.get(session_id) if session_id is not None else None
        if session is not None:
            await self._end(session, reason)

    # -- ending sessions -------------------------------------------------------------------------------

    async def close(self, session_id: object) -> Session:
        """End a session now: cancel its running calls, then delete its workdir."""
        session = await self.get(session_id)
        await self._end(session, "closed by close_session")
        return session

    async def expire_idle(self) -> list[str]:
        """End every session idle for longer than `idle_ttl_s`; return their handles."""
        now = self._clock()
        ttl = self.settings.idle_ttl_s
        expired = [s for s in self._sessions.values() if not s.busy and now - s.last_used > ttl]
        for session in expired:
            await self._end(session, f"expired after {ttl:g} s without a call")
        await self.retry_removals()
        return [s.id for s in expired]

    async def retry_removals(self) -> None:
        """Try again to delete the workdirs whose removal failed before."""
        pending, self._leftovers = self._leftovers, []
        for home in pending:
            await self._release(home)

    def seconds_until_next_expiry(self) -> float | None:
        """How long until the earliest idle session expires (None when none is idle)."""
        idle = [s.last_used for s in self._sessions.values() if not s.busy]
        if not idle:
            return None
        return max(0.0, min(idle) + self.settings.idle_ttl_s - self._clock())

    async def _end(self, session: Session, reason: str) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        session.closed = True
        self._remember(session.id, reason)
        if session.kind == "default" and self._defaults.get(session.owner) == session.id:
            del self._defaults[session.owner]
        self._room_changed()
        with anyio.CancelScope(shield=True):
            if session.busy:
                # Cancelling a call makes the runner kill its whole process tree before returning, so
                # nothing is still writing when the workdir is removed.
                session._idle = anyio.Event()
                for scope in list(session._scopes):
                    scope.cancel()
                await session._idle.wait()
            if session.sandbox is not None:
                # Every process of the session dies before its workdir (and the filesystem under it) goes.
                await session.sandbox.aclose()
            await self._release(session.home or Home(session.quota))
        _log.info("session %s ended: %s", _short(session.id), reason)

    def _remember(self, session_id: str, reason: str) -> None:
        self._forgotten[session_id] = reason
        while len(self._forgotten) > _FORGOTTEN_MAX:
            self._forgotten.popitem(last=False)

    # -- calls -----------------------------------------------------------------------------------------

    @asynccontextmanager
    async def call(self, session: Session) -> AsyncIterator[anyio.CancelScope]:
        """Run one call in `session`: waits for a per-session slot, keeps the session from expiring while
        the call runs, and gives a scope that `close()` cancels. Raises SessionNotFound if the session
        ended meanwhile."""
        async with self._activity(session, session.limiter) as scope:
            yield scope

    @asynccontextmanager
    async def hold(self, session: Session) -> AsyncIterator[anyio.CancelScope]:
        """Keep `session` in use while a background process runs in it (processes.py), without taking one
        of its call slots: it neither expires nor is evicted meanwhile, and `close()` cancels the scope."""
        async with self._activity(session, None) as scope:
            yield scope

    def touch(self, session: Session) -> None:
        """A tool call named the session (through a process id): that is use, as a call's end is."""
        if not session.closed:
            session.last_used = self._clock()
            self._sessions.move_to_end(session.id)

    @asynccontextmanager
    async def _activity(
        self, session: Session, limiter: anyio.CapacityLimiter | None
    ) -> AsyncIterator[anyio.CancelScope]:
        if session.closed:
            raise SessionNotFound(f"session {session.id} has ended; omit session_id or call create_session")
        session.active += 1
        admitted = False
        try:
            with anyio.CancelScope() as scope:
                session._scopes.add(scope)
                try:
                    async with limiter if limiter is not None else nullcontext():
                        if session.closed:
                            raise _closed_during(session, admitted=False)
                        admitted = True
                        yield scope
                finally:
                    session._scopes.discard(scope)
            if scope.cancelled_caught:
                raise _closed_during(session, admitted=admitted)
        finally:
            session.active -= 1
            session.last_used = self._clock()
            if session.active == 0 and session._idle is not None:
                session._idle.set()
            if not session.busy:
                self._room_changed()

    # -- workdirs --------------------------------------------------------------------------------------

    def _factory(self) -> WorkdirFactory:
        if self._workdirs is None:
            raise RuntimeError("SessionManager.open() has not been called")
        return self._workdirs

    async def quota_mode(self) -> tuple[QuotaMode, str]:
        """How workdir quotas are enforced here ('filesystem' or 'polled') and why."""
        return await self._factory().mode()


def _closed_during(session: Session, *, admitted: bool) -> SessionNotFound:
    """The truth about a call whose session was closed under it: it never ran, or what it started died."""
    what = (
        "while this call ran or waited for a server slot; whatever it had started was killed"
        if admitted
        else "while this call waited for a slot in it; the call never ran"
    )
    return SessionNotFound(f"session {session.id} was closed {what}. Omit session_id or call create_session")


def _default_parent() -> Path:
    """/var/tmp rather than /tmp: the sandbox mounts a private tmpfs over /tmp, which would hide a
    workdir there from the command, and workdirs (up to the disk quota each) belong on disk, not in RAM."""
    for candidate in ("/var/tmp",):
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return Path(candidate)
    return Path(tempfile.gettempdir())


def _short(session_id: str) -> str:
    # Logs name a session by a prefix: the whole handle is a credential on HTTP.
    return session_id[:6] + "…"


# -- safe access to a directory the model controls ---------------------------------------------------


def relative_parts(path: str | None, workdir: Path) -> tuple[str, ...]:
    """Split a user-supplied path into components inside `workdir`; RequestError when it would leave it.

    Accepts a path relative to the workdir or an absolute one under it, each component in the escaped
    form that listings show (see `filenames`): `%FF` names the byte 0xFF. `.` and empty components are
    dropped; `..` is refused outright (never resolved), as is a NUL byte or a '/' inside a component, even
    when written as `%2E%2E`, `%00` or `%2F`. Each component is returned as `os.fsdecode(raw bytes)`.
    """
    if path is None:
        return ()
    if not isinstance(path, str):
        raise RequestError("a path must be a string, relative to the session workdir")
    if "\x00" in path:
        raise RequestError("path contains a NUL byte; pass a plain path relative to the session workdir")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(
            "path is not valid Unicode (it holds a lone surrogate); send UTF-8 text, and write a byte that "
            "is not UTF-8 as %XX, as list_files shows it"
        ) from None
    pure = PurePosixPath(path)
    if pure.is_absolute():
        try:
            pure = pure.relative_to(PurePosixPath(workdir))
        except ValueError:
            raise RequestError(
                f"{quoted(path)} is outside the session workdir {workdir}; pass a path relative to the workdir"
            ) from None
    parts: list[str] = []
    for part in pure.parts:
        raw = unescape_name(part)
        if raw in (b"", b"."):
            continue
        if raw == b"..":
            raise RequestError(f"{quoted(path)} contains '..'; pass a path inside the session workdir without '..'")
        if b"/" in raw or b"\x00" in raw:
            raise RequestError(
                f"{quoted(path)} has a component that unescapes to a '/' or NUL byte (%2F, %00), which no file "
                "name holds; pass the name exactly as list_files shows it"
            )
        parts.append(os.fsdecode(raw))
    return tuple(parts)


def open_beneath(workdir: Path, parts: tuple[str, ...], flags: int = os.O_RDONLY) -> int:
    """Open `workdir/parts...` without following any symbolic link, returning a file descriptor.

    Every component, the workdir included, is opened with O_NOFOLLOW relative to its parent's
    descriptor, so a link planted anywhere along the path fails the open (ELOOP/ENOTDIR) instead of
    being followed out of the workdir. The final open adds O_NONBLOCK so a FIFO cannot hang the server.
    Raises RequestError with a message for the model.
    """
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(workdir, dir_flags)
    except OSError as exc:
        raise RequestError(f"the session workdir cannot be opened ({exc.strerror})") from None
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            part_flags = (flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK) if last else dir_flags
            next_fd = os.open(part, part_flags, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except OSError as exc:
        os.close(fd)
        raise _path_error(display_path(parts) or ".", exc) from None
    return fd


def _path_error(path: str, exc: OSError) -> RequestError:
    """Why `path` (escaped, as listings show it) cannot be opened, for the model."""
    shown = quoted(path)
    if exc.errno == errno.ENOENT:
        return RequestError(f"{shown} does not exist in the session workdir; list it with list_files")
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return RequestError(
            f"{shown} goes through a symbolic link; the server never follows links in the workdir: "
            "pass the link's target path inside the workdir instead"
        )
    if exc.errno == errno.ENOTDIR:
        return RequestError(f"a component of {shown} is not a directory (or is a symbolic link)")
    if exc.errno == errno.EISDIR:
        return RequestError(f"{shown} is a directory; list it with list_files")
    if exc.errno == errno.ENAMETOOLONG:
        return RequestError(f"{shown} has a component longer than the 255-byte limit of a file name")
    return RequestError(f"{shown} cannot be opened: {exc.strerror}")
