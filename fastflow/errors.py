"""fastflow's exceptions: one root, input errors are also ``ValueError``."""

__all__ = (
    "CorruptLogError",
    "EventError",
    "EventTooLarge",
    "FastflowError",
    "GapError",
    "LogFullError",
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


class EventError(FastflowError, ValueError):
    """An invalid CloudEvents event or attribute; the message names the
    attribute, what was expected and what came, for example
    ``invalid event attribute 'Foo': extension names are lowercase a-z and
    0-9``."""


class SlowConsumerError(FastflowError):
    """Raised by a subscription's iterator after the engine cut it off
    because its pending limit was reached (``on_full="cut"``)."""
