"""The bounds that keep one session's proxy from becoming the server's bottleneck or its memory sink."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ProxyLimits"]


class ProxyLimits(BaseModel):
    """Per-session proxy limits; every wait has a deadline and every buffer a fixed size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_connections: int = Field(64, ge=1, le=65536, description="Connections open at once, per session.")
    handshake_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="Deadline from accept to a complete request head (HTTP) or request (SOCKS)."
    )
    max_header_bytes: int = Field(32 * 1024, ge=1024, le=1 << 20, description="Largest request or response head.")
    resolve_timeout_s: float = Field(5.0, gt=0, le=600, description="Deadline of one DNS lookup.")
    connect_timeout_s: float = Field(10.0, gt=0, le=600, description="Deadline of one TCP connect.")
    idle_timeout_s: float = Field(300.0, gt=0, le=86400, description="A connection with no byte either way ends.")
    buffer_bytes: int = Field(256 * 1024, ge=4096, le=1 << 24, description="Relay buffer, per direction.")
