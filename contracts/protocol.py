"""The WebSocket wire protocol between the router and a teacher's browser.

Every frame is a JSON text message with a ``type``. See ``docs/protocol.md``.

Server to client: ``welcome``, ``notification``, ``replay_done``, ``acked``, ``error``.
Client to server: ``auth``, ``resume``, ``ack``.

Positions are opaque strings, ordered per teacher (``"<ms>-<seq>"``); a client
keeps the last one it saw and sends it back to resume after a drop.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION = 1
# ASCII digits only, and nothing after them (`$` would let a final newline
# through, `\d` any script's digits): a position goes into frames as it is.
POSITION_RE = re.compile(r"[0-9]{1,20}-[0-9]{1,20}\Z")


class CloseCode(IntEnum):
    """Close codes the router uses (besides websockets' own 1009 for oversized frames)."""

    GOING_AWAY = 1001  # server shutting down; reconnect with resume
    POLICY_VIOLATION = 1008  # repeated malformed frames or rate-limit abuse
    MESSAGE_TOO_BIG = 1009  # a frame over the size limit
    TRY_AGAIN_LATER = 1013  # send queue overflowed, or the teacher's replay budget is spent
    BAD_REQUEST = 4400  # the first frame was not an auth frame
    UNAUTHORIZED = 4401  # token missing, malformed, expired, wrong audience/issuer
    AUTH_TIMEOUT = 4408  # no auth frame within the auth timeout
    TOO_MANY_CONNECTIONS = 4429  # the teacher has too many open connections


_U64 = 1 << 64


def valid_position(position: str) -> bool:
    """A well-formed position whose two parts fit Redis' 64-bit stream ids."""
    if not POSITION_RE.match(position):
        return False
    ms, _, seq = position.partition("-")
    return int(ms) < _U64 and int(seq) < _U64


def _position(v: str | None) -> str | None:
    if v is not None and not valid_position(v):
        raise ValueError("not a position: two integers below 2^64 joined by '-', as sent")
    return v


def position_key(position: str) -> tuple[int, int]:
    """Sortable form of a position."""
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


def next_position(position: str) -> str | None:
    """The first position after ``position``, None after the largest one.
    (Reading what follows a position as an inclusive range from this one:
    Redis refuses an exclusive range, ``(id``, from the largest id.)"""
    ms, seq = position_key(position)
    if seq < _U64 - 1:
        return f"{ms}-{seq + 1}"
    if ms < _U64 - 1:
        return f"{ms + 1}-0"
    return None


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- client to server ------------------------------------------------------


class AuthFrame(_Frame):
    type: Literal["auth"] = "auth"
    token: str = Field(min_length=1, max_length=8192)
    resume: Annotated[str | None, AfterValidator(_position)] = None


class ResumeFrame(_Frame):
    type: Literal["resume"] = "resume"
    position: Annotated[str | None, AfterValidator(_position)] = None


class AckFrame(_Frame):
    type: Literal["ack"] = "ack"
    id: str = Field(min_length=1, max_length=64)


ClientFrame = Annotated[AuthFrame | ResumeFrame | AckFrame, Field(discriminator="type")]
client_frame_adapter: TypeAdapter[AuthFrame | ResumeFrame | AckFrame] = TypeAdapter(ClientFrame)  # type: ignore[arg-type, unused-ignore]


# -- server to client ------------------------------------------------------


class WelcomeFrame(_Frame):
    type: Literal["welcome"] = "welcome"
    protocol: int = PROTOCOL_VERSION
    connection_id: str
    teacher_id: str
    server_time: datetime


class NotificationFrame(_Frame):
    type: Literal["notification"] = "notification"
    id: str  # event id
    position: str
    created_at: str | None = None
    # True when sent from the teacher's pending (action-required) set on connect.
    pending: bool = False
    replayed: bool = False
    notification: dict[str, Any]


class ReplayDoneFrame(_Frame):
    type: Literal["replay_done"] = "replay_done"
    # False when the resume position is older than the history kept.
    recovered: bool
    replayed: int
    pending: int
    position: str | None


class AckedFrame(_Frame):
    type: Literal["acked"] = "acked"
    id: str


class ErrorFrame(_Frame):
    type: Literal["error"] = "error"
    code: str
    message: str
    # The ``ack`` this error answers, when it answers one (absent otherwise).
    id: str | None = None


ServerFrame = Annotated[
    WelcomeFrame | NotificationFrame | ReplayDoneFrame | AckedFrame | ErrorFrame,
    Field(discriminator="type"),
]
server_frame_adapter: TypeAdapter[
    WelcomeFrame | NotificationFrame | ReplayDoneFrame | AckedFrame | ErrorFrame
] = TypeAdapter(ServerFrame)  # type: ignore[arg-type, unused-ignore]
