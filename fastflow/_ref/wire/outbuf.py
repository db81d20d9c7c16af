"""A connection's output (``OutBuf``) and the wire target base
(``WireTarget``), pure-Python twin of src_ext/wire/outbuf.pyx: the router
hands every network subscription the message it is to get as a
``WireMsg`` and calls its target's ``write``; each protocol writes it in
its own format (native_out.py, nats_out.py).  The router knows no
protocol.

Conflation lives here too, once for every protocol: while a connection is
behind (``OutBuf.behind``), the router hands a conflating target's messages
to ``OutBuf._keep`` instead of ``write``; ``flush_kept`` writes the latest
per (target, subject) through ``write`` when it can write again.
"""

from fastflow._ref.event import (
    _I64_MAX,
    EV_MAX_STRING,
    EVF_GENID,
    _arg_str,
    _c_int,
    _c_int64,
    _c_int_value,
    _c_ssize,
    _ev_check,
    _final,
    _record_bytes,
    _ro,
    _ssize,
)
from fastflow._ref.log import Batch
from fastflow._ref.subjects import subject_error, validate_subject

__all__ = ("OutBuf", "WireMsg", "WireTarget")

KEPT_OVERHEAD = 128         # bytes a message kept by conflation counts beyond its own


# -- the native core's argument conversions ------------------------------------------


def _c_uint32(v):
    """``v`` as a C uint32_t argument."""
    v = _c_int_value(v)
    if v < 0:
        raise OverflowError("can't convert negative value to uint32_t")
    if v > 0xFFFFFFFF:
        raise OverflowError("value too large to convert to uint32_t")
    return v


def _as_utf8(s, pattern):
    """The UTF-8 bytes of a str or bytes argument (the native ``as_utf8``:
    bytes are taken as they are)."""
    if isinstance(s, str):
        try:
            return s.encode("utf-8")
        except UnicodeEncodeError:
            raise subject_error("pattern" if pattern else "subject", s,
                                "not encodable as UTF-8") from None
    if isinstance(s, bytes):
        return bytes(s)
    raise TypeError("{} must be str or bytes, not {}".format(
        "pattern" if pattern else "subject", type(s).__name__))


def _typed(v, cls):
    """Assignment to a typed attribute of a native class (None allowed)."""
    if v is not None and not isinstance(v, cls):
        raise TypeError("Cannot convert {} to {}.{}".format(
            type(v).__name__, cls.__module__, cls.__qualname__))
    return v


def _typed_arg(name, v, cls):
    """A typed argument of a native method (None allowed)."""
    if v is not None and not isinstance(v, cls):
        raise TypeError("Argument '{}' has incorrect type (expected {}.{}, got {})".format(
            name, cls.__module__, cls.__qualname__, type(v).__name__))
    return v


# -- the output buffer ----------------------------------------------------------------


@_final
class OutBuf:
    """A connection's pending output: frames appended by the router, taken
    by the connection once per loop tick (``take()``), written with one
    syscall.

    ``max_pending`` bounds the bytes waiting here (0 = no limit); a frame
    that would pass it is not added and ``overflow`` is set (the
    connection is then cut as a slow consumer).  ``on_data`` is called
    (no arguments) when the buffer goes from empty to non-empty."""

    __slots__ = ("_buf", "_max_pending", "on_data", "_overflow", "_closed", "_frames", "_msgs",
                 "_bytes_out", "_dropped", "flush_at", "on_flush", "_pub_bytes", "_behind",
                 "_kept", "_kept_bytes", "_conflated", "_backbone")

    def __reduce__(self):
        raise TypeError("cannot pickle '{}' object".format(type(self).__qualname__))

    def __new__(cls, /, *args, **kwargs):
        # the blank state of a native OutBuf before __init__
        o = object.__new__(cls)
        o._buf = bytearray()
        o._max_pending = 0
        o.on_data = None
        o.flush_at = 0          # call on_flush once this many bytes wait (0: never)
        o.on_flush = None
        o._overflow = False
        o._closed = False
        o._frames = 0
        o._msgs = 0
        o._bytes_out = 0
        o._dropped = 0
        o._pub_bytes = 0        # payload bytes the router took from this connection's publishes
        o._behind = False       # the connection cannot write: conflating targets keep
        o._kept = {}            # (target, subject) -> [target, subject, record, reply,
                                # stream, seq, ts, size], in the order first kept
        o._kept_bytes = 0       # what they hold (counted against max_pending)
        o._conflated = 0        # kept messages replaced by a newer one
        o._backbone = False     # a cluster link's output: what it publishes came from
                                # another node (not charged to ingress again)
        return o

    def __init__(self, max_pending=64 << 20, on_data=None):
        self._max_pending = _c_ssize(max_pending)
        self.on_data = on_data

    frames = _ro("_frames")
    msgs = _ro("_msgs")
    bytes_out = _ro("_bytes_out")

    @property
    def backbone(self):
        return self._backbone

    @backbone.setter
    def backbone(self, v):
        self._backbone = bool(v)

    @property
    def pub_bytes(self):
        return self._pub_bytes

    @pub_bytes.setter
    def pub_bytes(self, v):
        self._pub_bytes = _c_int64(v)
    dropped = _ro("_dropped")

    max_pending = _ssize("_max_pending")
    kept_bytes = _ro("_kept_bytes")
    conflated = _ro("_conflated")

    @property
    def behind(self):
        return self._behind

    @behind.setter
    def behind(self, v):
        self._behind = bool(v)

    @property
    def overflow(self):
        return self._overflow

    @overflow.setter
    def overflow(self, v):
        self._overflow = bool(v)

    @property
    def closed(self):
        return self._closed

    @closed.setter
    def closed(self, v):
        self._closed = bool(v)

    def __len__(self):
        return len(self._buf)

    def _reserve(self, size):
        """Room for ``size`` more bytes, or False (and ``overflow``) past the limit."""
        if self._closed:
            self._dropped += 1
            return False
        if self._max_pending and len(self._buf) + self._kept_bytes + size > self._max_pending:
            self._dropped += 1
            if not self._overflow:
                self._overflow = True
                # nothing may be pending here (the socket holds the rest):
                # make the connection look now, not at its next tick
                if not self._buf and self.on_data is not None:
                    self.on_data()
            return False
        return True

    def _wrote(self, was_empty, msg):
        """Bytes were appended (after ``_reserve``): count the frame, call
        the hooks."""
        self._frames += 1
        if msg:
            self._msgs += 1
        if was_empty and self.on_data is not None:
            self.on_data()
        if self.flush_at and len(self._buf) >= self.flush_at and self.on_flush is not None:
            self.on_flush()

    def write(self, data):
        """Append raw bytes (a text protocol's control lines).  Returns
        False if they were dropped (over ``max_pending`` or closed)."""
        d = _record_bytes(data)
        was_empty = not self._buf
        if not self._reserve(len(d)):
            return False
        self._buf += d
        self._wrote(was_empty, False)
        return True

    # (the protocols' writers build on this module: they are imported when used)

    def nats_msg(self, subject, sid, reply=None, headers=None, data=b""):
        """Append a NATS ``MSG`` (``headers`` None) or ``HMSG`` line with
        its payload.  Returns False if it was dropped."""
        from fastflow._ref.wire.nats_out import _nats_msg

        s = _as_utf8(subject, False)
        i = _as_utf8(sid, False)
        r = _as_utf8(reply, False) if reply is not None else b""
        h = bytes(headers) if headers is not None else None
        d = _record_bytes(data)
        return _nats_msg(self, i, s, r, h, d) == 1

    def frame(self, op, flags=0, id=0, subject=b"", reply=b"", body=b""):
        """Append one frame (Python use: control frames).  Returns False if
        it was dropped (over ``max_pending`` or closed)."""
        from fastflow._ref.wire.native_out import _native_frame

        op = _c_int(op)
        flags = _c_int(flags)
        id = _c_uint32(id)
        s = _as_utf8(subject, True) if subject else b""
        r = _as_utf8(reply, True) if reply else b""
        if len(s) > 65535 or len(r) > 65535:
            raise ValueError("subject and reply are limited to 65535 bytes")
        return _native_frame(self, op, flags, id, s, r, _record_bytes(body)) == 1

    def publish(self, subject, data, source, reply=None, id=0, flags=0):
        """Append a PUB frame of an event with the defaults (a new id,
        ``source`` (str), type = ``subject``) and payload ``data``: the
        client's fast path.  Returns False if it was dropped."""
        from fastflow._ref.wire.native_out import _native_pub

        id = _c_uint32(id)
        flags = _c_int(flags)
        s = _as_utf8(subject, False)
        r = _as_utf8(reply, False) if reply is not None else b""
        src = _as_utf8(source, False)
        if len(s) > 65535 or len(r) > 65535 or len(src) > EV_MAX_STRING or not src:
            raise ValueError("subject, reply and source are limited to 65535 bytes "
                             "(and source must not be empty)")
        d = data if type(data) is bytes else _record_bytes(data)
        return _native_pub(self, s, r, src, d, id, flags) == 1

    def publish_many(self, subject, datas, source):
        """``publish`` of every payload of ``datas`` (a list or tuple of
        bytes) on one subject; returns how many were appended."""
        from fastflow._ref.wire.native_out import _native_pub

        s = _as_utf8(subject, False)
        src = _as_utf8(source, False)
        if len(s) > 65535 or len(src) > EV_MAX_STRING or not src:
            raise ValueError("subject and source are limited to 65535 bytes "
                             "(and source must not be empty)")
        if type(datas) is not tuple:
            datas = tuple(datas)
        n = len(datas)
        for i in range(n):
            d = datas[i]
            if type(d) is not bytes:
                raise TypeError("datas[{}]: expected bytes, got {}".format(i, type(d).__name__))
            if not _native_pub(self, s, b"", src, d, 0, 0):
                return i
        return n

    def take(self):
        """Everything pending, as one bytes object (the buffer empties)."""
        if not self._buf:
            return b""
        out = bytes(self._buf)
        self._bytes_out += len(out)
        self._buf = bytearray()
        return out

    def clear(self):
        self._buf = bytearray()

    # -- conflation ---------------------------------------------------------------

    def _keep(self, t, m):
        """Keep WireMsg ``m`` for conflating target ``t`` while the
        connection is behind: it replaces the message ``t`` keeps for its
        subject (where that one stands), or is kept after the others.  2
        if it replaced one, 1 if kept, 0 if dropped (closed, or over
        ``max_pending``: ``overflow`` is set, as for a frame)."""
        if self._closed:
            self._dropped += 1
            return 0
        record = bytes(m.rec) + (bytes(m.data) if m.data is not None else b"")
        reply = bytes(m.reply) if m.reply else None
        size = len(record) + (len(reply) if reply else 0) + KEPT_OVERHEAD
        subject = m.subject if type(m.subject) is str else m.subject_b.decode("utf-8")
        key = (t, subject)
        k = self._kept.get(key)
        grow = size - (k[7] if k is not None else 0)
        if self._max_pending and len(self._buf) + self._kept_bytes + grow > self._max_pending:
            self._dropped += 1
            if not self._overflow:
                self._overflow = True
                if not self._buf and self.on_data is not None:
                    self.on_data()
            return 0
        self._kept_bytes += grow
        if k is not None:
            k[2:8] = [record, reply, m.stream, m.seq, m.ts, size]
            self._conflated += 1
            return 2
        self._kept[key] = [t, subject, record, reply, m.stream, m.seq, m.ts, size]
        return 1

    @property
    def kept_messages(self):
        """How many messages conflating targets keep (one per target and subject)."""
        return len(self._kept)

    def flush_kept(self, live=None):
        """Write the messages conflating targets kept while the connection
        was behind, each through its target, in the order they were first
        kept (the connection calls it when it can write again).  A target
        whose handle is not in ``live`` (a Matcher: the subscription ended
        meanwhile) has its messages forgotten.  Returns how many were
        written; one the OutBuf drops (its limit) is counted in its
        target's ``dropped`` and ``overflow`` is set."""
        kept = self._kept
        if not kept:
            return 0
        self._kept = {}
        self._kept_bytes = 0
        written = 0
        for t, subject, record, reply, stream, seq, ts, _size in kept.values():
            if live is not None and t._handle not in live:
                continue
            msg = _stored_msg(subject, subject.encode("utf-8"), record, stream, seq, ts)
            msg.reply = reply
            if t.write(msg) == 1:
                written += 1
            else:
                t._dropped += 1
        return written


# -- what the router hands a wire target ----------------------------------------------


@_final
class WireMsg:
    """One delivery, as the router hands it to every wire target of a
    publish (engine use): ``subject`` (str) and ``subject_b`` (its UTF-8
    bytes), ``reply`` (bytes or None), ``rec`` the event record and
    ``data`` the data that follows it when the router built the record of
    an event with every default without it (None: ``rec`` holds its data),
    ``generated_id``, ``event`` (None: a record from the network), the
    ``seq``, ``ts`` and ``stream`` a stream stored it with, and ``cache``,
    where the protocols keep what they make once per message (the NATS
    header block)."""

    __slots__ = ("subject", "subject_b", "reply", "rec", "data", "generated_id", "event", "seq",
                 "ts", "stream", "cache", "origin")

    def __init__(self, subject, subject_b, reply, rec, data, generated_id, event, seq, ts,
                 stream, origin=None):
        self.origin = origin            # the publishing connection's OutBuf (a cluster
                                        # link's, for the import targets)
        self.subject = subject
        self.subject_b = subject_b
        self.reply = reply
        self.rec = rec
        self.data = data
        self.generated_id = generated_id
        self.event = event
        self.seq = seq
        self.ts = ts
        self.stream = stream
        self.cache = {}


class WireTarget:
    """A network subscription (engine use; see fastflow.server): the router
    hands it each message it matched and ``write`` appends it to its
    connection's output (an OutBuf) in its protocol's format; the
    bookkeeping (echo, counters, ``replies``, ``remaining``) is the
    router's.  The protocols' targets: NativeTarget, NatsTarget."""

    __slots__ = ("_outbuf", "_echo", "_remaining", "owner", "on_end", "_delivered", "_dropped",
                 "_handle", "_replies", "_delivered_bytes", "_conflate", "_conflated",
                 "_remote")

    def __init__(self, outbuf, echo=True):
        if type(self) is WireTarget:
            raise TypeError("WireTarget is the base of the protocols' targets "
                            "(NativeTarget, NatsTarget)")
        if not isinstance(outbuf, OutBuf):
            raise TypeError("Argument 'outbuf' has incorrect type (expected {}.{}, got {})"
                            .format(OutBuf.__module__, OutBuf.__qualname__,
                                    type(outbuf).__name__))
        echo = bool(echo)
        self._outbuf = outbuf
        self._echo = echo               # False: not the connection's own publishes
        self._remaining = 0             # messages left before an automatic UNSUB (0: none)
        self.owner = None
        self.on_end = None              # (target) when an UNSUB max ended it
        self._delivered = 0
        self._delivered_bytes = 0
        self._dropped = 0
        self._handle = 0
        self._replies = None            # the reply subjects (bytes) of the requests it
                                        # delivered, for response permissions (None: not
                                        # kept; at _REPLIES_MAX entries no more are added)
        self._conflate = False          # while its connection is behind, keep only the
                                        # latest message per subject (OutBuf.flush_kept)
        self._conflated = 0             # its messages replaced by a newer one so
        self._remote = False            # it forwards to another node (a cluster link's):
                                        # a queue group prefers its local members

    outbuf = _ro("_outbuf")

    @property
    def remote(self):
        return self._remote

    @remote.setter
    def remote(self, v):
        self._remote = bool(v)
    conflated = _ro("_conflated")

    @property
    def conflate(self):
        return self._conflate

    @conflate.setter
    def conflate(self, v):
        self._conflate = bool(v)
    delivered = _ro("_delivered")
    delivered_bytes = _ro("_delivered_bytes")
    dropped = _ro("_dropped")

    @property
    def echo(self):
        return self._echo

    @echo.setter
    def echo(self, v):
        self._echo = bool(v)

    @property
    def remaining(self):
        return self._remaining

    @remaining.setter
    def remaining(self, v):
        self._remaining = _c_int64(v)

    @property
    def replies(self):
        return self._replies

    @replies.setter
    def replies(self, v):
        if v is not None and type(v) is not list:
            raise TypeError("Expected list, got {}".format(type(v).__name__))
        self._replies = v

    @property
    def handle(self):
        return self._handle

    @handle.setter
    def handle(self, v):
        self._handle = _c_int64(v)

    def write(self, msg):
        """Append ``msg`` (a WireMsg) to ``outbuf`` in this target's
        protocol; False if the OutBuf dropped it (its limit, closed)."""
        raise NotImplementedError("{}.write".format(type(self).__qualname__))

    def write_record(self, subject, record, stream=None, seq=0, ts=0):
        """Append a stored event (a replay's, a stream resume's) as this
        target writes a delivery: ``record`` its bytes, stored under
        ``subject`` in ``stream`` with ``seq`` and ``ts``.  True if written,
        False if the OutBuf dropped it (its limit; ``overflow`` is then
        set).  The router's bookkeeping (``delivered``, ``dropped``,
        ``remaining``) is left to the caller."""
        stream = _arg_str("stream", stream)
        seq = _c_int64(seq)
        ts = _c_int64(ts)
        if type(subject) is bytes:
            subject = subject.decode("utf-8")
        sb = _as_utf8(subject, False)
        validate_subject(subject)
        rec = _record_bytes(record)
        _ev_check(subject, rec, 0, len(rec))
        return self.write(_stored_msg(subject, sb, rec, stream, seq, ts)) == 1

    def write_batch(self, batch, stream=None, last_seq=None):
        """Append the events of a log read (``Log.read``'s Batch, from
        ``stream``) in order, as ``write_record`` does, up to seq
        ``last_seq`` (None: all of them).  Returns how many were written:
        fewer than that when the OutBuf dropped one (it then has
        ``overflow`` set) and stopped there."""
        if not isinstance(batch, Batch):
            raise TypeError("Argument 'batch' has incorrect type (expected {}.{}, got {})".format(
                Batch.__module__, Batch.__qualname__, type(batch).__name__))
        stream = _arg_str("stream", stream)
        stop = _I64_MAX if last_seq is None else _c_int64(last_seq)
        buf = batch.buffer
        offs = batch.offsets
        subjects = batch.subjects
        n = len(batch.seqs)
        for i in range(n):
            seq = batch.seqs[i]
            if seq > stop:
                return i
            subject = subjects[i]
            msg = _stored_msg(subject, _as_utf8(subject, False), buf[offs[i]:offs[i + 1]],
                              stream, seq, batch.ts[i])
            if self.write(msg) != 1:
                return i
        return n


def _stored_msg(subject, subject_b, rec, stream, seq, ts):
    """The WireMsg of a stored record."""
    return WireMsg(subject, subject_b, None, rec, None, (rec[1] & EVF_GENID) != 0, None, seq, ts,
                   stream)
