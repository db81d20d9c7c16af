"""A base for small settings objects (Retention, ConsumerConfig): fields in
``__slots__``, a dict form for flow.json, equality and a repr."""

__all__ = ("Settings",)


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
