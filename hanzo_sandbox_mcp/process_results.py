"""What the background-process tools return (processes.py): pydantic models, no logic."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .protection import EffectiveProtection

__all__ = [
    "ProcessInfo",
    "ProcessList",
    "ProcessOutput",
    "ProcessStarted",
    "ProcessState",
    "ProcessWrite",
    "StreamRead",
]

ProcessState = Literal["running", "exited"]


class ProcessInfo(BaseModel):
    """One background process of a session."""

    model_config = ConfigDict(frozen=True)

    process_id: str = Field(description="Pass it to read_process, write_process and stop_process.")
    session_id: str = Field(description="The session it runs in (same workdir, /tmp and loopback).")
    pid: int | None = Field(
        description="Its pid inside the session's sandbox: a later call of the same session may `kill` it."
    )
    command: str = Field(description="The command it runs (cut after 200 characters).")
    state: ProcessState
    exit_code: int | None = Field(None, description="Exit status once it exited (None while running, or killed).")
    signal: int | None = Field(None, description="The signal that killed it, if one did.")
    age_s: float = Field(description="Seconds since it started.")
    stopped_by: str | None = Field(
        None, description="Why the server stopped it (stop_process, its lifetime, the quota, its session's end)."
    )
    error: str | None = Field(None, description="Why it could not run as asked, if so.")


class ProcessStarted(BaseModel):
    """The outcome of start_process: the process runs (or already exited) in its session."""

    model_config = ConfigDict(frozen=True)

    process: ProcessInfo
    protection: EffectiveProtection = Field(description="The protections in force for the process.")


class StreamRead(BaseModel):
    """Output of one stream written since the last read."""

    model_config = ConfigDict(frozen=True)

    text: str = Field(description="UTF-8, invalid bytes replaced.")
    offset: int = Field(description="Byte offset in the stream where `text` starts.")
    dropped_bytes: int = Field(
        description="Bytes lost just before `text` (the process wrote faster than its buffer holds)."
    )
    more: bool = Field(description="More output is waiting: read again.")


class ProcessOutput(BaseModel):
    """The result of read_process and stop_process: the state and the output not read before."""

    model_config = ConfigDict(frozen=True)

    process: ProcessInfo
    stdout: StreamRead
    stderr: StreamRead


class ProcessWrite(BaseModel):
    """The result of write_process."""

    model_config = ConfigDict(frozen=True)

    process: ProcessInfo
    written_bytes: int = Field(description="Bytes written to its standard input.")
    stdin_closed: bool = Field(description="True once its standard input is closed (it reads end of file).")


class ProcessList(BaseModel):
    """The background processes of one session."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    processes: tuple[ProcessInfo, ...]
