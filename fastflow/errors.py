"""fastflow's exceptions, every one of them: one root (``FastflowError``),
input errors are also ``ValueError``.  The engine's, the wire protocols'
(``ProtocolError``, ``NatsError``) and the client's (``ServerError`` and its
kinds) live here, so that the core, the server and the client raise and
catch the same classes; ``fastflow.protocol`` maps error codes to them."""

__all__ = (
    "AuthenticationError",
    "CastError",
    "CesqlParseError",
    "ClientBufferFull",
    "ConflictError",
    "ConnectError",
    "ConnectionClosedError",
    "CorruptLogError",
    "EvaluationError",
    "EventError",
    "EventTooLarge",
    "FastflowError",
    "FunctionEvaluationError",
    "GapError",
    "GenericError",
    "HttpError",
    "JetStreamError",
    "LogFullError",
    "MathError",
    "MissingAttributeError",
    "MissingFunctionError",
    "MqttError",
    "NatsError",
    "NoRespondersError",
    "NotFoundError",
    "PayloadTooLarge",
    "PermissionDeniedError",
    "ProtocolError",
    "ServerError",
    "SignatureError",
    "SlowConsumerError",
    "StaleRecordError",
    "StorageFullError",
    "SubjectError",
)


class FastflowError(Exception):
    """The root of every error fastflow raises on purpose."""


class SubjectError(FastflowError, ValueError):
    """An invalid subject, pattern or MQTT topic/filter.

    The message names the subject and the offending token, for example
    ``invalid subject 'orders..eu': empty token at position 2``.
    """


class EventTooLarge(FastflowError, ValueError):
    """A payload larger than the log's ``max_event_size``."""


class LogFullError(FastflowError):
    """An append rejected by a limit under ``discard="new"``; the message
    names the limit."""


class StorageFullError(LogFullError):
    """An append refused because the disk under a file-backed log is full
    (ENOSPC): the message names the file and the bytes wanted (``path``,
    ``wanted``).  Nothing stored before is lost; the log stays readable and
    takes appends again once space is free."""

    def __init__(self, message, path=None, wanted=0):
        LogFullError.__init__(self, message)
        self.path = path
        self.wanted = wanted

    def __reduce__(self):
        return (type(self), (str(self), self.path, self.wanted))


class GapError(FastflowError):
    """A strict read or replay asked for records that were evicted."""


class StaleRecordError(FastflowError):
    """A record view used after its record was evicted or moved."""


class CorruptLogError(FastflowError):
    """A segment file failed its checksum (names the file and offset)."""


class SignatureError(FastflowError, ValueError):
    """An event that fails verification (docs/provenance.md) or a trust
    policy at a door: ``reason`` is one of ``unsigned``, ``malformed``,
    ``unknown payload type``, ``unknown key``, ``bad signature``,
    ``bad signedextattrs``, ``digest mismatch``; the message names it
    and what was wrong."""

    REASONS = ("unsigned", "malformed", "unknown payload type", "unknown key",
               "bad signature", "bad signedextattrs", "digest mismatch")

    def __init__(self, reason, detail=""):
        self.reason = reason
        self.detail = detail
        super().__init__("signature check failed: {}{}".format(
            reason, ": " + detail if detail else ""))


class EventError(FastflowError, ValueError):
    """An invalid CloudEvents event or attribute; the message names the
    attribute, what was expected and what came, for example
    ``invalid event attribute 'Foo': extension names are lowercase a-z and
    0-9``."""


class SlowConsumerError(FastflowError):
    """Raised by a subscription's iterator after the engine cut it off
    because its pending limit was reached (``on_full="cut"``)."""


# -- the wire protocols --------------------------------------------------------------------


class ProtocolError(FastflowError):
    """A malformed native frame; ``code`` is the protocol's error code
    (docs/protocol.md, "Errors"); ``frames`` are the entries the parser
    handled before the bad frame."""

    def __init__(self, code, message):
        FastflowError.__init__(self, message)
        self.code = code
        self.frames = []

    def __reduce__(self):
        return (ProtocolError, (self.code, str(self)))


class NatsError(FastflowError):
    """A NATS protocol error that closes the connection: ``text`` is what
    the client gets as ``-ERR '<text>'`` (nats-server's wording), the
    message adds the detail; ``frames`` are the entries handled before it."""

    def __init__(self, text, detail=None):
        FastflowError.__init__(self, text if not detail else "{}: {}".format(text, detail))
        self.text = text
        self.detail = detail
        self.frames = []

    def __reduce__(self):
        return (NatsError, (self.text, self.detail))


class MqttError(FastflowError):
    """An MQTT packet that closes the connection: ``reason`` is its MQTT 5
    reason code (0x81 malformed packet, 0x82 protocol error, 0x84
    unsupported protocol version, 0x90 topic name invalid, 0x94 topic alias
    invalid, 0x95 packet too large), ``message`` the detail; ``frames`` are
    the entries handled before it."""

    def __init__(self, reason, message):
        FastflowError.__init__(self, message)
        self.reason = reason
        self.message = message
        self.frames = []

    def __reduce__(self):
        return (MqttError, (self.reason, self.message))


class HttpError(FastflowError):
    """A request the HTTP door refuses: ``status`` (an HTTP status code) and
    ``message`` go into the answer with ``headers``; ``close``: the
    connection closes after it (every error of the parser: the stream
    cannot be resynchronised); ``frames`` are the requests complete before
    it (a parser error), else None."""

    def __init__(self, status, message, headers=(), close=False):
        FastflowError.__init__(self, message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)
        self.close = close
        self.frames = None

    def __reduce__(self):
        return (HttpError, (self.status, self.message, self.headers, self.close))


# -- the client ----------------------------------------------------------------------------


class ServerError(FastflowError):
    """An ``ERR`` frame from the server: ``code`` (docs/protocol.md,
    "Errors") and the server's ``message``."""

    def __init__(self, code, message):
        FastflowError.__init__(self, "server error {}: {}".format(code, message))
        self.code = code
        self.message = message

    def __reduce__(self):
        return (type(self), (self.code, self.message))


class AuthenticationError(ServerError):
    """401 (authentication required or failed) or 408 during the handshake
    (authentication timeout); the client does not reconnect after one."""


class PermissionDeniedError(ServerError):
    """403: the account may not publish / subscribe there."""


class NotFoundError(ServerError):
    """404: no such stream or consumer."""


class ConflictError(ServerError):
    """409: the stream exists with another configuration."""


class PayloadTooLarge(FastflowError, ValueError):
    """An event record larger than the server's ``max_payload`` (raised by
    the client before sending; the server would close the connection)."""

    code = 413


class ClientBufferFull(FastflowError):
    """``publish`` while ``pending_limit`` bytes are already buffered
    (disconnected, or the socket is backed up)."""


class ConnectionClosedError(FastflowError, ConnectionError):
    """The connection was lost or the client closed: raised by requests
    that were waiting for an answer, and by calls on a closed client."""


class ConnectError(ConnectionClosedError):
    """The first connection could not be made (names the server and why)."""


class NoRespondersError(FastflowError):
    """``request`` to a subject that no subscriber listens on."""

    code = 503

    def __init__(self, subject):
        FastflowError.__init__(self, "no responders for the request to {!r}".format(subject))
        self.subject = subject

    def __reduce__(self):
        return (NoRespondersError, (self.subject,))


class JetStreamError(FastflowError):
    """JetStream refused a request or a publish of a replicated stream, or
    did not answer in time: ``code`` (JetStream's, HTTP-like: 400, 404,
    503; 408 for no answer), ``err_code`` (JetStream's own error number, 0
    if none) and ``description``."""

    def __init__(self, code, description, err_code=0):
        FastflowError.__init__(self, "JetStream: {} (code {}{})".format(
            description, code, ", err_code {}".format(err_code) if err_code else ""))
        self.code = code
        self.err_code = err_code
        self.description = description

    def __reduce__(self):
        return (JetStreamError, (self.code, self.description, self.err_code))


# -- CESQL (fastflow.cesql) ---------------------------------------------------------------

class CesqlParseError(FastflowError, ValueError):
    """An expression that does not parse (the spec's ParseError).

    ``position`` is the 0-based index in ``expression`` where the problem
    was found; the message says what was expected and what came.
    """

    def __init__(self, message, expression="", position=0):
        FastflowError.__init__(self, message)
        self.expression = expression
        self.position = position

    def __reduce__(self):
        return (type(self), (str(self), self.expression, self.position))


class EvaluationError(FastflowError):
    """An error met while evaluating an expression.  These are collected
    and returned by ``Expression.evaluate``, not raised."""

    kind = "generic"

    def __eq__(self, other):
        return type(self) is type(other) and str(self) == str(other)

    def __hash__(self):
        return hash((type(self), str(self)))


class MathError(EvaluationError):
    """Division or remainder by zero, or an Integer overflow."""

    kind = "math"


class CastError(EvaluationError):
    """A value that cannot be cast to the type an operator or function needs."""

    kind = "cast"


class MissingAttributeError(EvaluationError):
    """An attribute the event does not have."""

    kind = "missingAttribute"


class MissingFunctionError(EvaluationError):
    """A function that does not exist, or not with that many arguments."""

    kind = "missingFunction"


class FunctionEvaluationError(EvaluationError):
    """A function given arguments outside its domain."""

    kind = "functionEvaluation"


class GenericError(EvaluationError):
    """Any other evaluation error."""

    kind = "generic"
