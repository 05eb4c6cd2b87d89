"""The allowlist proxy against real clients: curl, Python urllib, `pip download` and `git clone`.

Each client runs with only `proxy_env(port)` pointing it at the proxy (curl's `--preproxy` aside), against
local origins reached through `proxy_hosts` names. Every refusal has its control: the same client, the same
origin and the same address succeed through an allowed name, an allowed port, or without the proxy, so the
refusal can only come from the rule under test; and every refusal must show up in `take_denied`.

The in-sandbox half (a direct connection that skips the proxy, a DNS lookup from inside) needs the session
sandbox that hands the proxy its listening socket; those tests live with that integration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

import pytest
from support.origins import RunningProxy, StaticOrigin, make_certificate, running_proxy

from hanzo_sandbox_mcp.netproxy.env import proxy_env
from hanzo_sandbox_mcp.policy import SandboxPolicy

pytestmark = pytest.mark.skipif(
    not shutil.which("curl") or not shutil.which("openssl"), reason="needs curl and openssl"
)

PAGE = "ORIGIN-PAGE-7f3c"
TIMEOUT_S = 60


@dataclass(frozen=True)
class Origins:
    root: Path
    http: StaticOrigin
    tls: StaticOrigin
    other_port: StaticOrigin  # serves the same files on a port the policy does not list
    cert: Path


def _make_wheel(directory: Path) -> None:
    wheel = directory / "demo_pkg-1.0-py3-none-any.whl"
    info = "demo_pkg-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo_pkg/__init__.py", "VALUE = 1\n")
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n")
        archive.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{info}/RECORD", "")


def _make_site(root: Path) -> None:
    (root / "index.html").write_text(PAGE)
    packages = root / "packages"
    packages.mkdir()
    _make_wheel(packages)
    project = root / "simple" / "demo-pkg"
    project.mkdir(parents=True)
    link = '<a href="../../packages/demo_pkg-1.0-py3-none-any.whl">demo_pkg-1.0-py3-none-any.whl</a>'
    (project / "index.html").write_text(f"<!DOCTYPE html><html><body>{link}</body></html>")
    work = root.parent / "git-work"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(work)], check=True, timeout=TIMEOUT_S)
    (work / "README").write_text("cloned through the proxy\n")
    subprocess.run([*git, "-C", str(work), "add", "README"], check=True, timeout=TIMEOUT_S)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "one"], check=True, timeout=TIMEOUT_S)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(root / "repo.git")], check=True, timeout=TIMEOUT_S)
    subprocess.run(["git", "-C", str(root / "repo.git"), "update-server-info"], check=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def origins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origins]:
    base = tmp_path_factory.mktemp("origins")
    root = base / "www"
    root.mkdir()
    _make_site(root)
    cert, key = make_certificate(base, "tls.origin.test")
    with StaticOrigin(root) as http, StaticOrigin(root, (cert, key)) as tls, StaticOrigin(root) as other:
        yield Origins(root, http, tls, other, cert)


def _policy(origins: Origins, **overrides: object) -> SandboxPolicy:
    fields: dict[str, object] = {
        "network": "allowlist",
        "allowed_domains": ["origin.test", "tls.origin.test", "*.example.com", "metadata.test", "mapped.test"],
        "allowed_ports": [origins.http.port, origins.tls.port],
        "allowed_private_cidrs": ["127.0.0.0/8"],
        "proxy_hosts": {
            "origin.test": "127.0.0.1",
            "tls.origin.test": "127.0.0.1",
            "a.example.com": "127.0.0.1",
            "evilexample.com": "127.0.0.1",
            "unlisted.test": "127.0.0.1",
            "metadata.test": "169.254.169.254",
            "mapped.test": "::ffff:169.254.169.254",
        },
    }
    return SandboxPolicy.model_validate({**fields, **overrides})


@pytest.fixture(scope="module")
def proxy(origins: Origins) -> Iterator[RunningProxy]:
    with running_proxy(_policy(origins)) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_denials(proxy: RunningProxy) -> None:
    proxy.take_denied()


def _env(proxy: RunningProxy, home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **proxy_env(proxy.port),
    }


def _curl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def _assert_page(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith(f"{PAGE}\n200"), proc.stdout


def _assert_refused(proc: subprocess.CompletedProcess[str]) -> None:
    """curl got the proxy's 403 and nothing of the page."""
    assert proc.stdout.endswith("403") and PAGE not in proc.stdout, proc.stdout


def _denied(proxy: RunningProxy, host: str, port: int, words: str) -> None:
    denied = proxy.take_denied()
    assert any(h == host and p == port and words in why for h, p, why in denied), denied


# --- allowed names work ------------------------------------------------------------------------------------


def test_curl_fetches_plain_http_through_the_proxy(proxy: RunningProxy, origins: Origins, tmp_path: Path) -> None:
    _assert_page(_curl(_env(proxy, tmp_path), f"http://origin.test:{origins.http.port}/"))


def test_curl_fetches_https_through_a_connect_tunnel(proxy: RunningProxy, origins: Origins, tmp_path: Path) -> None:
    proc = _curl(_env(proxy, tmp_path), "--cacert", str(origins.cert), f"https://tls.origin.test:{origins.tls.port}/")
    _assert_page(proc)


def test_curl_fetches_through_socks5_with_names(proxy: RunningProxy, origins: Origins, tmp_path: Path) -> None:
    env = _env(proxy, tmp_path)
    _assert_page(_curl(env, "-x", f"socks5h://127.0.0.1:{proxy.port}", f"http://a.example.com:{origins.http.port}/"))


def test_python_urllib_fetches_http_and_https(proxy: RunningProxy, origins: Origins, tmp_path: Path) -> None:
    script = (
        "import ssl, sys, urllib.request\n"
        "ctx = ssl.create_default_context(cafile=sys.argv[3])\n"
        "print(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())\n"
        "print(urllib.request.urlopen(sys.argv[2], timeout=20, context=ctx).read().decode())\n"
    )
    urls = [f"https://tls.origin.test:{origins.tls.port}/", str(origins.cert)]
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script, f"http://origin.test:{origins.http.port}/", *urls],
        env=_env(proxy, tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [PAGE, PAGE]


def test_pip_downloads_from_an_index_through_the_proxy(proxy: RunningProxy, origins: Origins, tmp_path: Path) -> None:
    out = tmp_path / "out"
    options = ["--isolated", "--no-deps", "--no-cache-dir", "--disable-pip-version-check", "--retries", "0"]
    index = ["--cert", str(origins.cert), "--index-url", f"https://tls.origin.test:{origins.tls.port}/simple/"]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", *options, *index, "-d", str(out), "demo-pkg"],
        env=_env(proxy, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [path.name for path in out.iterdir()] == ["demo_pkg-1.0-py3-none-any.whl"]


def test_git_clones_over_https_through_the_proxy(proxy: RunningProxy, origins: Origins, tmp_path: Path) -> None:
    env = {**_env(proxy, tmp_path), "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
    env["GIT_SSL_CAINFO"] = str(origins.cert)
    proc = subprocess.run(
        ["git", "clone", "-q", f"https://tls.origin.test:{origins.tls.port}/repo.git", str(tmp_path / "clone")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "clone" / "README").read_text() == "cloned through the proxy\n"


# --- refused, and reported ---------------------------------------------------------------------------------


def test_allowlist_refuses_a_name_not_on_the_list(proxy: RunningProxy, origins: Origins, tmp_path: Path) -> None:
    env = _env(proxy, tmp_path)
    _assert_page(_curl(env, f"http://origin.test:{origins.http.port}/"))  # control: same address, allowed name
    proc = _curl(env, f"http://unlisted.test:{origins.http.port}/")
    _assert_refused(proc)
    _denied(proxy, "unlisted.test", origins.http.port, "not in allowed_domains")


def test_allowlist_refuses_a_look_alike_of_a_wildcard(proxy: RunningProxy, origins: Origins, tmp_path: Path) -> None:
    env = _env(proxy, tmp_path)
    _assert_page(_curl(env, "--cacert", str(origins.cert), f"https://tls.origin.test:{origins.tls.port}/"))
    _assert_page(_curl(env, f"http://a.example.com:{origins.http.port}/"))  # control: a real subdomain
    proc = _curl(env, f"http://evilexample.com:{origins.http.port}/")
    _assert_refused(proc)
    proc = _curl(env, "-k", f"https://evilexample.com:{origins.tls.port}/")
    assert proc.returncode != 0 and "403" in proc.stderr
    _denied(proxy, "evilexample.com", origins.tls.port, "not in allowed_domains")


def test_allowlist_refuses_a_port_not_on_the_list(proxy: RunningProxy, origins: Origins, tmp_path: Path) -> None:
    direct = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    _assert_page(_curl(direct, f"http://127.0.0.1:{origins.other_port.port}/"))  # control: the origin answers
    proc = _curl(_env(proxy, tmp_path), f"http://origin.test:{origins.other_port.port}/")
    _assert_refused(proc)
    _denied(proxy, "origin.test", origins.other_port.port, "not in allowed_ports")


def test_allowlist_refuses_ip_literals(proxy: RunningProxy, origins: Origins, tmp_path: Path) -> None:
    direct = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    _assert_page(_curl(direct, f"http://127.0.0.1:{origins.http.port}/"))  # control: the literal is reachable
    env = _env(proxy, tmp_path)
    for spelling in ("127.0.0.1", "127.1", "2130706433", "[::ffff:127.0.0.1]"):
        proc = _curl(env, "--noproxy", "", f"http://{spelling}:{origins.http.port}/")
        _assert_refused(proc)
    denied = proxy.take_denied()
    refused = {host for host, _, why in denied if "is an IP address" in why}
    assert refused == {"127.0.0.1", str(ip_address("::ffff:127.0.0.1"))}


def test_allowlist_refuses_an_allowed_name_resolving_to_a_metadata_address(
    origins: Origins, proxy: RunningProxy, tmp_path: Path
) -> None:
    for name in ("metadata.test", "mapped.test"):
        proc = _curl(_env(proxy, tmp_path), f"http://{name}:{origins.http.port}/latest/meta-data/")
        assert proc.stdout.endswith("403"), proc.stdout
        _denied(proxy, name, origins.http.port, "link-local")
    # Control: with the range listed, the same name passes the check and the proxy tries to connect (there is
    # no metadata service here, so it fails to connect: 502 or 504, not the policy's 403).
    with running_proxy(_policy(origins, allowed_private_cidrs=["127.0.0.0/8", "169.254.0.0/16"])) as open_proxy:
        proc = _curl(_env(open_proxy, tmp_path), "--max-time", "30", f"http://metadata.test:{origins.http.port}/")
        assert proc.stdout[-3:] in ("502", "504"), proc.stdout
        assert not [d for d in open_proxy.take_denied() if "link-local" in d[2]]


def test_allowlist_refuses_loopback_unless_its_range_is_listed(origins: Origins, tmp_path: Path) -> None:
    with running_proxy(_policy(origins, allowed_private_cidrs=[])) as strict_proxy:
        proc = _curl(_env(strict_proxy, tmp_path), f"http://origin.test:{origins.http.port}/")
        _assert_refused(proc)
        _denied(strict_proxy, "origin.test", origins.http.port, "127.0.0.1 is a loopback address")


def test_allowlist_refuses_a_host_header_that_differs_from_the_target(
    proxy: RunningProxy, origins: Origins, tmp_path: Path
) -> None:
    env = _env(proxy, tmp_path)
    _assert_page(_curl(env, "-H", f"Host: origin.test:{origins.http.port}", f"http://origin.test:{origins.http.port}/"))
    proc = _curl(env, "-H", "Host: unlisted.test", f"http://origin.test:{origins.http.port}/")
    _assert_refused(proc)
    _denied(proxy, "origin.test", origins.http.port, "does not match the target")


def test_allowlist_refuses_socks5_with_an_address_instead_of_a_name(
    proxy: RunningProxy, origins: Origins, tmp_path: Path
) -> None:
    env = _env(proxy, tmp_path)
    _assert_page(_curl(env, "-x", f"socks5h://127.0.0.1:{proxy.port}", f"http://origin.test:{origins.http.port}/"))
    proc = _curl(
        env, "--noproxy", "", "-x", f"socks5://127.0.0.1:{proxy.port}", f"http://127.0.0.1:{origins.http.port}/"
    )
    assert proc.returncode != 0 and PAGE not in proc.stdout
    _denied(proxy, "127.0.0.1", origins.http.port, "is an IP address")


def test_allowlist_refuses_a_chain_through_a_proxy_the_command_reaches(
    proxy: RunningProxy, origins: Origins, tmp_path: Path
) -> None:
    # A second, open proxy on the origin's address: the way out a command would use to reach anything.
    open_policy = _policy(origins, allowed_ports=[origins.http.port, origins.other_port.port])
    with running_proxy(open_policy) as open_proxy:
        target = f"http://origin.test:{origins.other_port.port}/"
        direct = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
        _assert_page(_curl(direct, "-x", open_proxy.url, target))  # control: the open proxy works
        proc = _curl(
            direct,
            "--preproxy",
            f"socks5h://127.0.0.1:{proxy.port}",
            "-x",
            f"http://origin.test:{open_proxy.port}",
            target,
        )
        assert proc.returncode != 0 and PAGE not in proc.stdout
        _denied(proxy, "origin.test", open_proxy.port, "not in allowed_ports")
