"""The input side every front door shares, pure-Python twin of
src_ext/wire/door.pyx: ``DoorParser`` buffers bytes fed in any pieces,
bounds them, checks publish permissions and routes PUBs through the
router's ``publish_wire``; each protocol's parser (native_in.py,
nats_in.py) cuts its own ops.
"""

from fastflow._ref.event import _c_int64, _c_ssize, _record_bytes, _ro, _ssize
from fastflow._ref.matcher import Matcher
from fastflow._ref.wire.outbuf import OutBuf, _typed, _typed_arg

__all__ = ("DoorParser",)


def _router(v, arg):
    """A router argument (``arg``) or attribute (``arg`` None): anything
    with the Router's ``publish_wire`` (the parsers publish through it and
    read its ``n_delivered`` and ``source``; they import no router), or
    None."""
    if v is None or callable(getattr(v, "publish_wire", None)):
        return v
    if arg is not None:
        raise TypeError("Argument '{}' has incorrect type (expected a Router, got {})".format(
            arg, type(v).__name__))
    raise TypeError("Cannot convert {} to a Router".format(type(v).__name__))


class DoorParser:
    """The input side of a front door's parser (FrameParser: the native
    protocol, NatsParser: NATS), pure-Python twin of src_ext/wire/door.pyx:
    the bytes of an incomplete frame / op held between feeds, the front
    door's state (``router``, ``out``, the publish permissions, the limits,
    ``route_pubs``), its counters, the last PUB subject decoded and the
    publish permission check.

    ``feed(data)`` hands what is complete to the subclass's ``_parse(p,
    out)`` (returns the bytes it used) and keeps the rest; when ``_parse``
    set ``_need`` (the bytes the buffered frame / op needs, 0: unknown)
    it is not called again until they are all here.  A protocol error (the
    subclass's ``_error`` type) gets the entries handled before it as
    ``frames`` and stops the parser: more input is refused with the error
    of ``_malformed_before()``.  The other hook: ``_subject_str(s)``, a
    subject's bytes as a str (or the subclass's error).
    """

    __slots__ = ("_buf", "_bytes_in", "_denied", "_failed", "_last_pb", "_last_ps",
                 "_max_connect", "_max_control", "_max_payload", "_need", "_out", "_pub_allow",
                 "_pub_deny", "_pubs_in", "_route_pubs", "_router", "resp_check")

    _error = ()                 # the door's protocol error type (the subclass's)

    def __reduce__(self):
        raise TypeError("cannot pickle '{}' object".format(type(self).__qualname__))

    def __new__(cls, /, *args, **kwargs):
        # the blank state of a native parser before __init__
        o = object.__new__(cls)
        o._buf = bytearray()
        o._need = 0                 # bytes the buffered frame / op needs (0: unknown)
        o._router = None
        o._out = None
        o._pub_allow = None
        o._pub_deny = None
        o.resp_check = None         # (subject) -> bool: a publish the Matchers refuse may
                                    # still go (a response); None: refused
        o._max_payload = 0
        o._max_control = 0
        o._max_connect = 0          # before CONNECT: the largest frame (0: none)
        o._route_pubs = False
        o._last_pb = None           # the last PUB subject (bytes and str):
        o._last_ps = None           # a stream of one subject decodes it once
        o._bytes_in = 0
        o._pubs_in = 0
        o._denied = 0
        o._failed = None            # the protocol error that stopped the parser
        return o

    def __init__(self, router, out, max_payload, max_control):
        # (the subclasses' __init__, with their defaults)
        router = _router(router, "router")
        out = _typed_arg("out", out, OutBuf)
        max_payload = _c_ssize(max_payload)
        max_control = _c_ssize(max_control)
        self._router = router
        self._out = out
        self._max_payload = max_payload
        self._max_control = max_control

    bytes_in = _ro("_bytes_in")
    pubs_in = _ro("_pubs_in")

    @property
    def denied(self):
        """Publishes refused by the permissions (the HTTP door counts its own)."""
        return self._denied

    @denied.setter
    def denied(self, v):
        self._denied = _c_int64(v)

    @property
    def router(self):
        """Where PUBs go (the Router: its ``publish_wire``); None: return
        PUBs too."""
        return self._router

    @router.setter
    def router(self, v):
        self._router = _router(v, None)

    @property
    def out(self):
        """This connection's output (echo, acks)."""
        return self._out

    @out.setter
    def out(self, v):
        self._out = _typed(v, OutBuf)

    @property
    def pub_allow(self):
        """None: everything allowed."""
        return self._pub_allow

    @pub_allow.setter
    def pub_allow(self, v):
        self._pub_allow = _typed(v, Matcher)

    @property
    def pub_deny(self):
        """None: nothing denied."""
        return self._pub_deny

    @pub_deny.setter
    def pub_deny(self, v):
        self._pub_deny = _typed(v, Matcher)

    max_payload = _ssize("_max_payload")
    max_control = _ssize("_max_control")
    max_connect = _ssize("_max_connect")

    @property
    def route_pubs(self):
        """False until CONNECT (auth) is done (NATS: and in verbose mode)."""
        return self._route_pubs

    @route_pubs.setter
    def route_pubs(self, v):
        self._route_pubs = bool(v)

    @property
    def buffered(self):
        """Bytes of an incomplete frame / op held."""
        return len(self._buf)

    def feed(self, data):
        if self._failed is not None:
            raise self._malformed_before()
        data = _record_bytes(data)
        out = []
        self._bytes_in += len(data)
        try:
            if not self._buf:
                self._need = 0
                used = self._parse(data, out)
                if used < len(data):
                    self._keep(data[used:])
            else:
                # (as the native parser: on an error other than a protocol error the
                # held bytes stay as they were, the new ones appended)
                self._keep(data)
                if self._need and len(self._buf) < self._need:
                    return out          # a payload still arriving: nothing to parse yet
                self._need = 0
                used = self._parse(bytes(self._buf), out)
                if used:
                    del self._buf[:used]
        except self._error as exc:
            # the entries before the bad frame / op were handled: hand them over
            # too; the stream cannot be resynchronised, so the parser stops here
            exc.frames = out
            self._failed = exc
            self._buf = bytearray()
            raise
        return out

    def _keep(self, d):
        """Hold ``d`` (bytes) after the bytes held."""
        self._buf += d

    def _parse(self, p, out):
        """Handle the complete frames / ops of ``p`` (bytes), appending
        entries to ``out``; returns the bytes used (the subclass's)."""
        raise NotImplementedError

    def _malformed_before(self):
        """The error refusing input after ``_failed`` (the subclass's)."""
        raise NotImplementedError

    def _subject_str(self, s):
        """A subject (bytes) as a str (the subclass's)."""
        raise NotImplementedError

    def _pub_subject(self, s):
        """The subject of a PUB (``s``: bytes) as a str: a stream of one
        subject decodes it once."""
        if self._last_pb is not None and s == self._last_pb:
            return self._last_ps
        subject = self._subject_str(s)
        self._last_pb = s
        self._last_ps = subject
        return subject

    def _allowed(self, subject):
        """False if ``pub_allow`` / ``pub_deny`` refuse publishing to
        ``subject`` (a SubjectError if it is not valid)."""
        if (self._pub_allow is None or self._pub_allow.match(subject)) \
                and (self._pub_deny is None or not self._pub_deny.match(subject)):
            return True
        return self.resp_check is not None and bool(self.resp_check(subject))
