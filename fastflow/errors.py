"""fastflow's exceptions: one root, input errors are also ``ValueError``."""

__all__ = ("FastflowError", "SubjectError")


class FastflowError(Exception):
    """The root of every error fastflow raises on purpose."""


class SubjectError(FastflowError, ValueError):
    """An invalid subject, pattern or MQTT topic/filter.

    The message names the subject and the offending token, for example
    ``invalid subject 'orders..eu': empty token at position 2``.
    """
