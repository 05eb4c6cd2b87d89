"""Bearer tokens: which configured token, if any, a request's `Authorization` header carries.

One `TokenBook` serves both places that ask: the connection guard (a valid token earns a reserved
connection) and the request guard (401 without one; the client's name into the ASGI scope).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from ..config import HttpSettings

__all__ = ["TokenBook", "TokenMatch"]


@dataclass(frozen=True)
class TokenMatch:
    """A request carried a configured token; `name` is its client's name (None for the unnamed `token`)."""

    name: str | None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class TokenBook:
    """The configured tokens, kept only as SHA-256 digests and compared in constant time."""

    def __init__(self, http: HttpSettings) -> None:
        entries: list[tuple[bytes, str | None]] = [(_digest(named.token), named.name) for named in http.tokens]
        if http.token is not None:
            entries.append((_digest(http.token), None))
        self._entries = tuple(entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def match(self, authorization: str | None) -> TokenMatch | None:
        """The token this `Authorization: Bearer <token>` header carries, or None.

        Equal-length digests and a comparison with every entry (no early exit) keep the time spent
        independent of which token, if any, is close to the one sent.
        """
        if not authorization:
            return None
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        sent = _digest(credentials.strip())
        found: TokenMatch | None = None
        for digest, name in self._entries:
            if hmac.compare_digest(sent, digest):
                found = TokenMatch(name)
        return found
