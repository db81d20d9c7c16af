"""A base for small settings objects (Retention, ConsumerConfig): fields in
``__slots__``, a dict form for flow.json, equality and a repr; and
``env_flag``, the one reading of the ``FASTFLOW_*`` on/off environment
switches (``FASTFLOW_NO_EXTENSIONS``, ``FASTFLOW_DEBUG``, ...).

A leaf module (the standard library only): ``setup.py`` runs it by path,
before the package can be imported."""

import os

__all__ = ("Settings", "env_flag")


def env_flag(name):
    """Whether the environment variable ``name`` is set to 1, true, yes or on
    (any case, spaces around ignored); unset, empty or anything else is off."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class Settings:
    __slots__ = ()

    def to_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_dict(cls, d):
        return cls(**d)

    def __eq__(self, other):
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(tuple(self.to_dict().items()))

    def __repr__(self):
        return "{}({})".format(type(self).__name__, ", ".join(
            "{}={!r}".format(k, v) for k, v in self.to_dict().items()))
