"""The native wire protocol's names (docs/protocol.md), in one place.

The numbers are the ones the core writes and parses in C
(``src_ext/wire/proto.pxi``; the pure-Python twin reads them from here);
a test checks that both agree.  The server, the client and the CLI take
ops, flags, acknowledgement kinds, connection states and error codes from
here, and turn an error code into an exception (and back) with one table.
"""

import enum
from typing import NamedTuple

from fastflow.errors import (
    AuthenticationError,
    ConflictError,
    EventError,
    EventTooLarge,
    LogFullError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    SignatureError,
    SubjectError,
)

__all__ = (
    "FRAME_HEADER",
    "FRAME_VERSION",
    "AckKind",
    "ClientState",
    "ConnState",
    "ErrorCode",
    "Flag",
    "Frame",
    "Op",
    "error_code",
    "server_error",
)

FRAME_HEADER = 16           # bytes before a frame's subject (docs/protocol.md, "Frames")
FRAME_VERSION = 1


class Op(enum.IntEnum):
    """A frame's op code."""

    INFO = 1
    CONNECT = 2
    PUB = 3
    PUBACK = 4
    PUB_BATCH = 5
    SUB = 6
    UNSUB = 7
    MSG = 8
    PING = 9
    PONG = 10
    OK = 11
    ERR = 12
    STREAM = 13
    REPLAY = 14
    CONSUMER = 15
    ACK = 16


class Flag(enum.IntFlag):
    """A frame's flag bits; their meaning depends on the op, so two names
    may share a bit (``ACK`` on PUB, ``CLOSE`` on ERR)."""

    ACK = 1                 # PUB, PUB_BATCH: answer with PUBACK
    CLOSE = 1               # ERR: the connection closes after it
    CONFLATE = 1            # SUB: the latest message per subject while the connection is behind
    NO_RESPONDERS = 2       # MSG: no subscriber for the request
    DUPLICATE = 2           # PUBACK: the stream had the event already


class AckKind(enum.IntEnum):
    """The first byte of an ACK frame's body."""

    ACK = 1
    NAK = 2
    TERM = 3
    PROGRESS = 4


class ConnState(enum.IntEnum):
    """A server connection's state, in order (compare with ``<``/``>=``)."""

    NEW = 0                 # greeting sent, waiting for CONNECT
    AUTHING = 1             # CONNECT being checked (scrypt in a thread)
    READY = 2
    CLOSING = 3
    CLOSED = 4

    @property
    def label(self):
        return _CONN_LABELS[self]


_CONN_LABELS = {ConnState.NEW: "new", ConnState.AUTHING: "authenticating",
                ConnState.READY: "ready", ConnState.CLOSING: "closing",
                ConnState.CLOSED: "closed"}


class ClientState(enum.IntEnum):
    """A client's state."""

    CONNECTING = 1          # the first connection's handshake
    CONNECTED = 2
    RECONNECTING = 3        # lost; retrying (a handshake may be in progress)
    CLOSED = 4

    @property
    def label(self):
        return self.name.lower()


class ErrorCode(enum.IntEnum):
    """ERR codes (docs/protocol.md, "Errors")."""

    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    TIMEOUT = 408
    CONFLICT = 409
    TOO_LARGE = 413
    INVALID = 422
    TOO_MANY = 429
    CONTROL_TOO_LARGE = 431
    INTERNAL = 500
    SLOW_CONSUMER = 503
    VERSION = 505
    FULL = 507


class Frame(NamedTuple):
    """A frame the parser hands to Python: ``(op, flags, id, subject,
    reply, body)``.  Parsers emit plain tuples in this order (built in C);
    handlers unpack them by these names."""

    op: int
    flags: int
    id: int
    subject: str
    reply: str
    body: bytes


# -- error codes <-> exceptions ----------------------------------------------------------

# engine exceptions -> the code a door answers with (most specific first)
_CODE_OF = ((SignatureError, ErrorCode.FORBIDDEN), (LogFullError, ErrorCode.FULL),
            (EventTooLarge, ErrorCode.TOO_LARGE),
            (SubjectError, ErrorCode.INVALID), (EventError, ErrorCode.INVALID))

# ERR codes -> the exception the client raises
_ERROR_OF = {ErrorCode.UNAUTHORIZED: AuthenticationError, ErrorCode.TIMEOUT: AuthenticationError,
             ErrorCode.FORBIDDEN: PermissionDeniedError, ErrorCode.NOT_FOUND: NotFoundError,
             ErrorCode.CONFLICT: ConflictError}


def error_code(exc):
    """The ERR code that answers an engine exception (400 if none fits)."""
    for cls, code in _CODE_OF:
        if isinstance(exc, cls):
            return int(code)
    return int(ErrorCode.BAD_REQUEST)


def server_error(code, message):
    """The client's exception for an ERR frame: a ``ServerError`` of the
    code's kind."""
    return _ERROR_OF.get(code, ServerError)(code, message)
