"""The allowlist's pure rules: name normalisation and matching, the address ranges, the refusal queue, the policy."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import pytest
from pydantic import ValidationError

from hanzo_sandbox_mcp.netproxy.addresses import AddressRules, parse_cidr
from hanzo_sandbox_mcp.netproxy.allowlist import Allowlist, HostError, normalise_name, normalise_pattern, parse_host
from hanzo_sandbox_mcp.netproxy.decisions import Decision, DecisionLog
from hanzo_sandbox_mcp.netproxy.env import proxy_env
from hanzo_sandbox_mcp.policy import NetworkMode, SandboxPolicy

# --- names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PyPI.Org", "pypi.org"),
        ("pypi.org.", "pypi.org"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("_acme.example.com", "_acme.example.com"),
    ],
)
def test_names_are_normalised_to_one_spelling(raw: str, expected: str) -> None:
    assert normalise_name(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", ".", "a..b", ".a.b", "-a.com", "a-.com", "a b.com", "a%2e.com", "a/b.com", "a@b.com", "a.com\x00", "x" * 64],
)
def test_names_that_cannot_be_normalised_are_refused(raw: str) -> None:
    with pytest.raises(HostError):
        normalise_name(raw)


@pytest.mark.parametrize(
    ("raw", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("169.254.169.254.", "169.254.169.254"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
        ("::1", "::1"),
    ],
)
def test_every_spelling_a_resolver_reads_as_an_address_is_an_ip_literal(raw: str, address: str) -> None:
    assert parse_host(raw) == ip_address(address)


@pytest.mark.parametrize("raw", ["fe80::1%eth0", "1.2.3.999", "foo.123"])
def test_hosts_that_are_neither_names_nor_addresses_are_refused(raw: str) -> None:
    with pytest.raises(HostError):
        parse_host(raw)


def _list(*domains: str, ports: tuple[int, ...] = (80, 443)) -> Allowlist:
    return Allowlist.of(domains, ports)


def test_exact_names_match_after_normalisation() -> None:
    rules = _list("PyPI.org.")
    assert rules.refusal(parse_host("pypi.ORG."), 443) is None
    assert rules.refusal(parse_host("files.pypi.org"), 443) is not None


def test_wildcards_match_subdomains_at_a_label_boundary_only() -> None:
    rules = _list("*.example.com")
    assert rules.refusal(parse_host("a.example.com"), 443) is None
    assert rules.refusal(parse_host("a.b.EXAMPLE.com."), 443) is None
    assert "not in allowed_domains" in (rules.refusal(parse_host("evilexample.com"), 443) or "")
    assert rules.refusal(parse_host("example.com"), 443) is not None
    assert rules.refusal(parse_host("example.com.evil.net"), 443) is not None


def test_internationalised_entries_match_their_punycode() -> None:
    rules = _list("*.bücher.example")
    assert rules.refusal(parse_host("shop.xn--bcher-kva.example"), 443) is None


def test_ports_outside_the_list_are_refused() -> None:
    rules = _list("pypi.org", ports=(443,))
    assert "port 80 is not in allowed_ports" in (rules.refusal(parse_host("pypi.org"), 80) or "")


def test_ip_literals_are_refused_unless_that_literal_is_listed() -> None:
    assert "IP address" in (_list("pypi.org").refusal(parse_host("151.101.0.223"), 443) or "")
    rules = _list("151.101.0.223", "[2a04:4e42::223]")
    assert rules.refusal(parse_host("151.101.0.223"), 443) is None
    assert rules.refusal(parse_host("2a04:4e42:0::223"), 443) is None
    assert rules.refusal(parse_host("151.101.0.224"), 443) is not None


@pytest.mark.parametrize("raw", ["*", "*.com", "foo*.com", "*.*.com", "a.*.com"])
def test_wildcards_that_are_too_broad_or_malformed_are_refused(raw: str) -> None:
    with pytest.raises(HostError):
        normalise_pattern(raw)


# --- addresses ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("198.18.0.1", "benchmarking"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("64:ff9b::10.0.0.1", "private"),
        ("64:ff9b:1::1", "NAT64"),
        ("2002:7f00:1::1", "6to4"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("fd00::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%2", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
    ],
)
def test_non_public_addresses_are_refused(address: str, words: str) -> None:
    assert words in (AddressRules().refusal(ip_address(address)) or "")


@pytest.mark.parametrize("address", ["151.101.0.223", "2a04:4e42::223", "::ffff:151.101.0.223", "64:ff9b::8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert AddressRules().refusal(ip_address(address)) is None


def test_allowed_private_cidrs_open_exactly_their_range() -> None:
    rules = AddressRules(["127.0.0.0/8", "fd00:1::/64"])
    assert rules.refusal(ip_address("127.0.0.2")) is None
    assert rules.refusal(ip_address("::ffff:127.0.0.2")) is None  # the kernel connects to 127.0.0.2
    assert rules.refusal(ip_address("fd00:1::5")) is None
    assert rules.refusal(ip_address("fd00:2::5")) is not None
    assert rules.refusal(ip_address("10.0.0.1")) is not None


def test_one_refused_answer_refuses_the_name() -> None:
    answers = [ip_address("151.101.0.223"), ip_address("169.254.169.254")]
    assert "169.254.169.254" in (AddressRules().first_refusal(answers) or "")
    assert AddressRules().first_refusal(answers[:1]) is None


def test_cidrs_with_host_bits_get_a_hint() -> None:
    with pytest.raises(ValueError, match=r"did you mean '10\.0\.0\.0/8'"):
        parse_cidr("10.0.0.1/8")


# --- decisions ---------------------------------------------------------------------------------------------


def _refusal(session: str, host: str, port: int = 443, reason: str = "not listed") -> Decision:
    return Decision(session_tag=session, allowed=False, protocol="connect", host=host, port=port, reason=reason)


def test_refusals_are_taken_once_per_session_and_go_to_the_audit_sink() -> None:
    records: list[dict[str, Any]] = []
    log = DecisionLog(audit=lambda record: records.append(dict(record)))
    log.record(_refusal("a", "evil.com"))
    log.record(_refusal("a", "evil.com"))
    log.record(_refusal("b", "other.com"))
    log.record(Decision(session_tag="a", allowed=True, protocol="http", host="pypi.org", port=80, reason="allowed"))
    denied = log.take_denied("a")
    assert [(d.host, d.port, d.count) for d in denied] == [("evil.com", 443, 2)]
    assert log.take_denied("a") == []
    assert [d.host for d in log.take_denied("b")] == ["other.com"]
    assert [(r["event"], r["session_tag"], r["allowed"], r["host"]) for r in records] == [
        ("network", "a", False, "evil.com"),
        ("network", "a", False, "evil.com"),
        ("network", "b", False, "other.com"),
        ("network", "a", True, "pypi.org"),
    ]


def test_the_refusal_queue_is_bounded_and_says_how_many_it_dropped() -> None:
    log = DecisionLog(max_denials_per_session=3)
    for n in range(10):
        log.record(_refusal("a", f"host{n}.com"))
    denied = log.take_denied("a")
    assert [d.host for d in denied] == ["host7.com", "host8.com", "host9.com", "*"]
    assert denied[-1].count == 7 and "7 older refusals were dropped" in denied[-1].reason


# --- environment -------------------------------------------------------------------------------------------


def test_proxy_env_points_every_tool_at_the_session_proxy_in_both_cases() -> None:
    env = proxy_env(3128)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "npm_config_proxy", "npm_config_https_proxy"):
        assert env[name] == "http://127.0.0.1:3128"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        assert env[name.lower()] == env[name]
    assert env["NO_PROXY"].split(",") == ["localhost", "127.0.0.1", "::1"]
    assert proxy_env(8080)["https_proxy"] == "http://127.0.0.1:8080"


# --- policy ------------------------------------------------------------------------------------------------


def test_policy_normalises_the_allowlist_keys() -> None:
    policy = SandboxPolicy.model_validate(
        {
            "network": "allowlist",
            "allowed_domains": ["PyPI.org.", "*.GitHub.com", "[::1]"],
            "allowed_ports": [443],
            "allowed_private_cidrs": ["10.20.0.0/16"],
            "proxy_hosts": {"Mirror.Internal.": "10.20.0.5"},
        }
    )
    assert policy.network is NetworkMode.ALLOWLIST
    assert policy.allowed_domains == ("pypi.org", "*.github.com", "::1")
    assert policy.proxy_hosts == (("mirror.internal", "10.20.0.5"),)
    assert policy.model_dump()["proxy_hosts"] == {"mirror.internal": "10.20.0.5"}
    assert SandboxPolicy.model_validate(policy.model_dump()) == policy
    assert SandboxPolicy().allowed_ports == (80, 443)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"allowed_domains": ["*.com"]}, "top-level domain"),
        ({"allowed_domains": ["exa mple.com"]}, "not a host name"),
        ({"allowed_ports": [0]}, "greater than or equal to 1"),
        ({"allowed_ports": []}, "at least 1"),
        ({"allowed_private_cidrs": ["10.0.0.1/8"]}, "did you mean"),
        ({"allowed_private_cidrs": ["nonsense"]}, "not an IP network"),
        ({"proxy_hosts": {"mirror": "mirror.example.com"}}, "must be an IP address"),
        ({"proxy_hosts": {"Mirror.": "10.0.0.1", "mirror": "10.0.0.2"}}, "twice"),
        ({"proxy_hosts": {"1.2.3.4": "10.0.0.1"}}, "last label is a number"),
    ],
)
def test_policy_rejects_bad_allowlist_keys_with_a_clear_message(update: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SandboxPolicy.model_validate(update)
