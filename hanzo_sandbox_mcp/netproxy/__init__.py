"""The egress proxy of `network = "allowlist"`: policy matching, the address check, the server, the decisions.

The session sandbox hands the server a listening socket made inside the session's network namespace
(127.0.0.1:3128 there); `proxy.serve` accepts on it, so commands reach the proxy only through their own
loopback, and the proxy, running in the server outside the sandbox, connects on their behalf to what the
policy allows. Submodules are imported on demand: `policy.py` needs only the pure `allowlist` and
`addresses` modules, the launcher none of them.
"""
