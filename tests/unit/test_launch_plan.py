"""LaunchPlan, LandlockSpec and RootSpec: keyword records, immutable, and a lossless marshal wire format."""

from __future__ import annotations

import marshal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hanzo_sandbox_mcp.launch_plan import NAMESPACE_NAMES, LandlockSpec, LaunchPlan, RootSpec


def _full_plan() -> LaunchPlan:
    """A plan with every field set to a non-default value."""
    return LaunchPlan(
        argv=("/bin/sh", "-c", "echo hi"),
        env={"PATH": "/usr/bin:/bin", "HOME": "/w"},
        cwd="/w/sub",
        namespaces=NAMESPACE_NAMES,
        uid=65534,
        gid=65533,
        loopback=True,
        tmp_size_mb=64,
        rlimits={"as": 1 << 30, "core": 0},
        no_new_privs=True,
        parent_pid=4242,
        landlock=LandlockSpec(read_exec=("/usr", "/bin"), read_write=("/w",), deny_tcp=True, scope=False),
        root=RootSpec(read_only=("/usr", "/etc"), read_write=("/w", "/dev/null")),
        seccomp_bpf=b"\x06\x00\x00\x00\x00\x00\xff\x7f",
        status_token="0123456789abcdef" * 2,
        strict=True,
        wrapper=("/usr/bin/sandbox-exec", "-p", "(version 1)", "--"),
    )


# --- construction --------------------------------------------------------------------------------------


def test_defaults_request_no_layer() -> None:
    plan = LaunchPlan(argv=("true",), env={}, cwd="/")
    assert plan.as_dict() == {
        "argv": ("true",),
        "cwd": "/",
        "env": {},
        "gid": None,
        "landlock": None,
        "loopback": False,
        "namespaces": (),
        "no_new_privs": False,
        "parent_pid": None,
        "proxy_port": None,
        "rlimits": {},
        "root": None,
        "scratch": None,
        "seccomp_bpf": None,
        "status_token": "",
        "strict": False,
        "tmp_size_mb": None,
        "uid": None,
        "wrapper": (),
    }


def test_a_call_carries_only_the_call_fields_and_keeps_the_session_part() -> None:
    session = LaunchPlan(argv=(), env={}, cwd="/", namespaces=("pid",), uid=7, rlimits={"core": 0})
    call = LaunchPlan(argv=("ls", "-l"), env={"A": "1"}, cwd="/w", namespaces=("net",), rlimits={"nofile": 9})
    merged = session.with_call(call.call_wire())
    assert (merged.argv, merged.env, merged.cwd, merged.rlimits) == (("ls", "-l"), {"A": "1"}, "/w", {"nofile": 9})
    assert (merged.namespaces, merged.uid) == (("pid",), 7)  # a call never changes what its session was made of
    assert merged.session_part() == session.session_part()


@pytest.mark.parametrize("raw", [marshal.dumps([1]), marshal.dumps({"argv": ()}), marshal.dumps({"uid": 0})])
def test_a_call_with_other_fields_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="exactly the call fields"):
        LaunchPlan(argv=(), env={}, cwd="/").with_call(raw)


def test_sequences_become_tuples_and_mappings_are_copied() -> None:
    env = {"A": "1"}
    limits = {"core": 0}
    plan = LaunchPlan(
        argv=["a", "b"],  # type: ignore[arg-type]
        env=env,
        cwd="/",
        namespaces=["pid"],  # type: ignore[arg-type]
        rlimits=limits,
        wrapper=["w"],  # type: ignore[arg-type]
    )
    assert plan.argv == ("a", "b")
    assert plan.namespaces == ("pid",)
    assert plan.wrapper == ("w",)
    env["B"] = "2"
    limits["nofile"] = 1
    assert plan.env == {"A": "1"}
    assert plan.rlimits == {"core": 0}


def test_landlock_spec_defaults_and_tuples() -> None:
    spec = LandlockSpec(read_exec=["/usr"], read_write=["/w"])  # type: ignore[arg-type]
    assert spec.as_dict() == {"deny_tcp": False, "read_exec": ("/usr",), "read_write": ("/w",), "scope": True}


def test_root_spec_defaults_and_tuples() -> None:
    spec = RootSpec(read_only=["/usr"], read_write=["/w"])  # type: ignore[arg-type]
    assert spec.as_dict() == {"read_only": ("/usr",), "read_write": ("/w",)}
    assert RootSpec().as_dict() == {"read_only": (), "read_write": ()}


def test_root_and_landlock_are_switched_off_independently() -> None:
    """A test of one layer drops the other; the one it keeps is untouched."""
    plan = _full_plan()
    assert plan.replace(landlock=None).root == plan.root
    assert plan.replace(root=None).landlock == plan.landlock


def test_argv_cwd_and_env_are_required() -> None:
    with pytest.raises(TypeError):
        LaunchPlan(argv=("true",), env={})  # type: ignore[call-arg]


# --- immutability, equality, replace -------------------------------------------------------------------


def test_fields_cannot_be_assigned() -> None:
    plan = _full_plan()
    with pytest.raises(AttributeError, match="immutable; use replace"):
        plan.uid = 0  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        plan.landlock.read_write = ("/",)  # type: ignore[misc, union-attr]
    assert plan.uid == 65534


def test_replace_changes_only_the_named_fields() -> None:
    plan = _full_plan()
    moved = plan.replace(cwd="/elsewhere", strict=False)
    assert moved.cwd == "/elsewhere"
    assert moved.strict is False
    assert plan.cwd == "/w/sub"
    assert plan.strict is True
    assert moved.replace(cwd="/w/sub", strict=True) == plan


def test_replace_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError):
        _full_plan().replace(no_such_field=1)


def test_equality_is_by_type_and_value() -> None:
    assert _full_plan() == _full_plan()
    assert hash(_full_plan()) == hash(_full_plan())
    assert _full_plan() != _full_plan().replace(uid=1000)
    assert _full_plan() != _full_plan().as_dict()
    assert LandlockSpec() != LaunchPlan(argv=(), env={}, cwd="/")


def test_equal_plans_hash_equal_whatever_the_env_order() -> None:
    first = LaunchPlan(argv=("true",), env={"A": "1", "B": "2"}, cwd="/")
    second = LaunchPlan(argv=("true",), env={"B": "2", "A": "1"}, cwd="/")
    assert first == second
    assert hash(first) == hash(second)


def test_repr_names_every_field() -> None:
    text = repr(_full_plan())
    assert text.startswith("LaunchPlan(")
    for name in LaunchPlan.__slots__:
        assert f"{name}=" in text
    assert "LandlockSpec(deny_tcp=True" in text


# --- wire format ---------------------------------------------------------------------------------------


def test_wire_round_trip_keeps_every_field() -> None:
    plan = _full_plan()
    back = LaunchPlan.from_wire(plan.to_wire())
    assert back == plan
    assert isinstance(back.landlock, LandlockSpec)
    assert isinstance(back.root, RootSpec)
    assert back.seccomp_bpf == plan.seccomp_bpf


def test_wire_round_trip_without_landlock_or_root() -> None:
    plan = _full_plan().replace(landlock=None, root=None, seccomp_bpf=None, uid=None, gid=None)
    assert LaunchPlan.from_wire(plan.to_wire()) == plan


def test_wire_format_is_a_plain_marshal_mapping() -> None:
    """Only builtins cross the pipe: the launcher decodes it without importing this package's classes."""
    data = marshal.loads(_full_plan().to_wire())
    assert isinstance(data, dict)
    assert set(data) == set(LaunchPlan.__slots__)
    assert data["landlock"] == {"deny_tcp": True, "read_exec": ("/usr", "/bin"), "read_write": ("/w",), "scope": False}
    assert data["root"] == {"read_only": ("/usr", "/etc"), "read_write": ("/w", "/dev/null")}


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", EOFError),
        (b"\xff\x00garbage", ValueError),
        (marshal.dumps(["not", "a", "mapping"]), ValueError),
        (marshal.dumps({"argv": ("true",), "env": {}}), TypeError),  # cwd missing
        (marshal.dumps({"argv": ("true",), "env": {}, "cwd": "/", "evil": 1}), TypeError),
        (marshal.dumps({"argv": ("true",), "env": {}, "cwd": "/", "landlock": {"bogus": 1}}), TypeError),
        (marshal.dumps({"argv": ("true",), "env": {}, "cwd": "/", "root": {"bogus": 1}}), TypeError),
    ],
    ids=["empty", "garbage", "list", "missing-field", "unknown-field", "bad-landlock", "bad-root"],
)
def test_from_wire_rejects_what_is_not_a_plan(raw: bytes, error: type[Exception]) -> None:
    """The launcher turns exactly these exception types into an `abort` event (exit 125)."""
    with pytest.raises(error):
        LaunchPlan.from_wire(raw)


_paths = st.lists(st.text(min_size=1, max_size=12), max_size=4).map(tuple)


@settings(database=None)  # no example database: the checkout may be read-only
@given(
    argv=st.lists(st.text(max_size=20), min_size=1, max_size=5).map(tuple),
    env=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=20), max_size=5),
    cwd=st.text(min_size=1, max_size=30),
    uid=st.none() | st.integers(min_value=1, max_value=2**32 - 2),
    tmp=st.none() | st.integers(min_value=1, max_value=1 << 20),
    bpf=st.none() | st.binary(max_size=64),
    read_exec=_paths,
    read_write=_paths,
    strict=st.booleans(),
)
def test_wire_round_trip_property(
    argv: tuple[str, ...],
    env: dict[str, str],
    cwd: str,
    uid: int | None,
    tmp: int | None,
    bpf: bytes | None,
    read_exec: tuple[str, ...],
    read_write: tuple[str, ...],
    strict: bool,
) -> None:
    plan = LaunchPlan(
        argv=argv,
        env=env,
        cwd=cwd,
        uid=uid,
        gid=uid,
        tmp_size_mb=tmp,
        seccomp_bpf=bpf,
        landlock=LandlockSpec(read_exec=read_exec, read_write=read_write),
        root=RootSpec(read_only=read_exec, read_write=read_write),
        strict=strict,
    )
    assert LaunchPlan.from_wire(plan.to_wire()) == plan
