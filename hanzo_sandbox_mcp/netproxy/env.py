"""The environment that points a command's tools at the session's proxy.

curl and libcurl (git's HTTP transport) read `http_proxy` only in lower case (httpoxy), most other tools
either case, so both are set. `ALL_PROXY` is an `http://` URL too: tools that would take `socks5h://` also
take HTTP, while some (httpx without socksio) refuse to start on a SOCKS URL. `NO_PROXY` keeps the
session's own loopback services direct. npm reads its own `npm_config_*` keys first, and Node's built-in
`fetch` follows the variables only with `NODE_USE_ENV_PROXY=1` (Node 22.21+, 24+; ignored before).
"""

from __future__ import annotations

__all__ = ["DEFAULT_PROXY_PORT", "proxy_env"]

DEFAULT_PROXY_PORT = 3128
_DIRECT = "localhost,127.0.0.1,::1"


def proxy_env(port: int = DEFAULT_PROXY_PORT) -> dict[str, str]:
    """Variables for a command whose proxy listens on its own 127.0.0.1:`port`."""
    url = f"http://127.0.0.1:{port}"
    env: dict[str, str] = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = url
    env["NO_PROXY"] = env["no_proxy"] = _DIRECT
    env["npm_config_proxy"] = env["npm_config_https_proxy"] = url
    env["npm_config_noproxy"] = _DIRECT
    env["NODE_USE_ENV_PROXY"] = "1"
    return env
