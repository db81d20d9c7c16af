"""Events (CloudEvents 1.0) and their record encoding: pure-Python
reference for src_ext/event.pyx.

The engine stores and sends an event as one *record*: a 16-byte header,
the required attributes, the lineage, the other attributes (a msgpack
map), then the data.  All integers little-endian.

  0  u8   version (EV_VERSION)
  1  u8   flags: EVF_GENID (the id is 16 raw bytes: a per-process random
          64-bit prefix and a 64-bit counter, shown as 32 hex digits),
          EVF_TYPE_SUBJECT (type = the routing subject, not stored),
          EVF_MQTT (published through the MQTT door: MQTT subscribers
          get it as MQTT sent it; kept by the Event, ``from_mqtt``)
  2  u16  hops (the ffhops extension)
  4  u16  id bytes (0 with EVF_GENID)
  6  u16  source bytes
  8  u16  type bytes (0 with EVF_TYPE_SUBJECT)
  10 u16  trace bytes (the fftrace extension as received)
  12 u32  rest bytes (msgpack map of the other attributes, 0 = none)
  16      id | source | type | trace | rest | data

A record written by either core decodes in the other.  Each core has its
own id prefix and counter: a generated id of the other core's prefix
decodes to its 32 hex digits (and is re-encoded as that string).
"""

import itertools
import operator
import os
import struct

from fastflow import _attrs
from fastflow._ref.log import Batch
from fastflow._ref.subjects import validate_subject
from fastflow.errors import EventError, FastflowError

__all__ = ("Event", "events_from_batch")

EV_VERSION = 1
EV_HEADER = 16
EV_GENID = 16                   # bytes of a generated id
EVF_GENID = 1
EVF_TYPE_SUBJECT = 2
EVF_MQTT = 4
EV_MAX_STRING = 65535

_HEADER = struct.Struct("<BBHHHHHI")
_GENID = struct.Struct("<QQ")

_id_prefix = int.from_bytes(os.urandom(8), "little")
_gid_counter = itertools.count(1)


def _next_gid():
    """The next generated-id counter (engine use)."""
    return next(_gid_counter)


def _new_id_prefix():
    """A forked child gets a prefix of its own: ids stay unique per source."""
    global _id_prefix, _gid_counter
    _id_prefix = int.from_bytes(os.urandom(8), "little")
    _gid_counter = itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_id_prefix)

_SPECVERSION = _attrs.SPECVERSION
_DEFAULT_SOURCE = _attrs.DEFAULT_SOURCE
_HOPS = _attrs.HOPS
_TRACE = _attrs.TRACE
_OPTIONAL = ("time", "subject", "datacontenttype", "dataschema")

# the last decoded source, so that replaying a stream of one producer makes
# one str for all its events
_src_cache_b = b""
_src_cache_s = ""


# -- the native core's argument conversions ------------------------------------------
# (Cython converts typed arguments before the body runs; these raise what it raises)

_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


def _c_int_value(v):
    """``v`` as Cython converts a C integer argument: an int, or an object
    with ``__int__``."""
    if type(v) is int:
        return v
    if isinstance(v, int):
        return int(v)
    conv = getattr(type(v), "__int__", None)
    if conv is None:
        raise TypeError("an integer is required")
    return conv(v)


def _c_integer(v, lo, hi, overflow):
    """``v`` as a C long/int argument: ints, or objects with ``__int__``."""
    v = _c_int_value(v)
    if not lo <= v <= hi:
        raise OverflowError(overflow)
    return v


def _c_int64(v):
    return _c_integer(v, _I64_MIN, _I64_MAX, "Python int too large to convert to C long")


def _c_int(v):
    return _c_integer(v, _INT_MIN, _INT_MAX, "value too large to convert to int")


def _c_ssize(v):
    v = operator.index(v)
    if not _I64_MIN <= v <= _I64_MAX:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return v


def _arg_type(name, v, cls, what):
    """A typed argument of the native core (None allowed)."""
    if v is not None and not (type(v) is cls if cls is str else isinstance(v, cls)):
        raise TypeError("Argument '{}' has incorrect type (expected {}, got {})".format(
            name, what, type(v).__name__))
    return v


def _arg_str(name, v):
    return _arg_type(name, v, str, "str")


def _check_subject_type(subject):
    """The native core takes a subject as str or bytes only."""
    if not isinstance(subject, (str, bytes)):
        raise TypeError("subject must be str or bytes, not {}".format(type(subject).__name__))


def _as_str_field(v):
    """Assignment to a ``str`` field of the native Event (exact str or None)."""
    if v is not None and type(v) is not str:
        raise TypeError("Expected str, got {}".format(type(v).__name__))
    return v


def _final(cls):
    def __init_subclass__(sub, **kw):
        raise TypeError("type '{}.{}' is not an acceptable base type".format(
            cls.__module__, cls.__qualname__))
    cls.__init_subclass__ = classmethod(__init_subclass__)
    return cls


class _ssize(property):
    """A ``public Py_ssize_t`` attribute stored in ``slot`` (a value past
    the C type raises what the native core raises)."""

    def __init__(self, slot, doc=None):
        def put(obj, v):
            setattr(obj, slot, _c_ssize(v))
        super().__init__(operator.attrgetter(slot), put, None, doc)


class _ro(property):
    """A read-only attribute stored in ``slot`` (writing it raises what the
    native core raises for a ``readonly`` attribute)."""

    def __init__(self, slot, doc=None):
        super().__init__(operator.attrgetter(slot), self._readonly, self._readonly, doc)
        self._msg = "attribute {!r} is not writable".format(slot)

    def __set_name__(self, owner, name):
        self._msg = "attribute '{}' of '{}.{}' objects is not writable".format(
            name, owner.__module__, owner.__qualname__)

    def _readonly(self, obj, value=None):
        raise AttributeError(self._msg)


def _hex_id(hi, lo):
    return "{:016x}{:016x}".format(hi, lo)


@_final
class Event:
    """A CloudEvents 1.0 event as the engine routes it.

    ``Event(routing_subject=None, data=b"", **attributes)``: ``id`` defaults
    to 32 hex digits (a random per-process prefix and a counter), ``source``
    to ``"/fastflow"`` (a Flow's ``source`` when it publishes), ``type`` to
    the routing subject.  Attributes: ``id``, ``source``, ``type``,
    ``specversion``, ``subject``, ``time``, ``datacontenttype``,
    ``dataschema``, ``extensions``; ``data`` is bytes.  Engine fields:
    ``routing_subject``, ``seq`` and ``stream`` (0 / None until stored),
    ``ts`` (append time, ns), ``hops`` and ``deliveries`` (consumer
    deliveries).
    """

    __slots__ = (
        "_rs",          # routing subject (str or None)
        "_data",        # bytes
        "_id",          # the id as text (cached for generated ids)
        "_gpre",        # a generated id: prefix and counter
        "_gid",         # (0: the id is _id, given by a producer)
        "_source",
        "_type",        # None: the routing subject
        "_hops",
        "_trace",       # lineage before this flow, or None
        "_origin",      # the flow that delivered it, or None
        "_rest",        # dict, or None
        "_rest_raw",    # msgpack bytes decoded on first use
        "_seq",
        "_stream",
        "_ts",
        "_deliveries",
        "_acker",       # the consumer of a consumer delivery
        "_rflags",      # the record flags it keeps (EVF_MQTT)
    )

    def __new__(cls, /, *args, **kwargs):
        # the blank state of a native Event before __init__
        e = object.__new__(cls)
        e._rs = None
        e._data = None
        e._id = None
        e._gpre = 0
        e._gid = 0
        e._source = None
        e._type = None
        e._hops = 0
        e._trace = None
        e._origin = None
        e._rest = None
        e._rest_raw = None
        e._seq = 0
        e._stream = None
        e._ts = 0
        e._deliveries = 0
        e._acker = None
        e._rflags = 0
        return e

    def __init__(self, /, routing_subject=None, data=b"", **attributes):
        if routing_subject is not None:
            _check_subject_type(routing_subject)
            validate_subject(routing_subject)
            if type(routing_subject) is bytes:
                routing_subject = routing_subject.decode("utf-8")
        self._rs = _as_str_field(routing_subject)
        self._data = _as_data(data)
        _ev_init_attrs(self, attributes, _DEFAULT_SOURCE)
        if self._type is None and routing_subject is None:
            raise EventError("invalid event attribute 'type': required when there is "
                             "no routing subject to default it to")

    routing_subject = _ro("_rs")
    source = _ro("_source")
    hops = _ro("_hops")
    seq = _ro("_seq")
    stream = _ro("_stream")
    ts = _ro("_ts")
    deliveries = _ro("_deliveries")

    # -- CloudEvents attributes ---------------------------------------------

    @property
    def id(self):
        if self._id is None:
            self._id = _hex_id(self._gpre, self._gid)
        return self._id

    @property
    def type(self):
        return self._rs if self._type is None else self._type

    @property
    def specversion(self):
        return _SPECVERSION

    @property
    def from_mqtt(self):
        """True if it was published through the MQTT door (its MQTT
        subscribers get it as MQTT sent it, not in a CloudEvents mode)."""
        return bool(self._rflags & EVF_MQTT)

    @property
    def data(self):
        return self._data

    def _restd(self):
        if self._rest is None and self._rest_raw is not None:
            self._rest = _attrs.decode_rest(self._rest_raw)
            self._rest_raw = None
        return self._rest

    @property
    def time(self):
        r = self._restd()
        return None if r is None else r.get("time")

    @property
    def subject(self):
        r = self._restd()
        return None if r is None else r.get("subject")

    @property
    def datacontenttype(self):
        r = self._restd()
        return None if r is None else r.get("datacontenttype")

    @property
    def dataschema(self):
        r = self._restd()
        return None if r is None else r.get("dataschema")

    @property
    def trace(self):
        """The lineage (``fftrace``): hashes of the flows and subjects the
        event passed, this one included once delivered."""
        if self._origin is None or self._rs is None:
            return self._trace or ""
        own = _attrs.trace_entry(self._origin, self._rs)
        return own if not self._trace else self._trace + "," + own

    @property
    def extensions(self):
        """Extension attributes (a new dict), ``ffhops``/``fftrace`` included
        once the engine has routed the event."""
        out = {}
        r = self._restd()
        if r is not None:
            for k, v in r.items():
                if k not in _OPTIONAL:
                    out[k] = v
        if self._hops or self._origin is not None:
            out[_HOPS] = self._hops
        t = self.trace
        if t:
            out[_TRACE] = t
        return out

    def attributes(self):
        """Every attribute (a new dict, without ``data``)."""
        out = {"specversion": _SPECVERSION, "id": self.id,
               "source": self._source, "type": self.type}
        r = self._restd()
        if r is not None:
            out.update(r)
        if self._hops or self._origin is not None:
            out[_HOPS] = self._hops
        t = self.trace
        if t:
            out[_TRACE] = t
        return out

    def get(self, name, default=None):
        """One attribute by its CloudEvents name, or ``default``."""
        return self.attributes().get(name, default)

    def __getitem__(self, name):
        try:
            return self.attributes()[name]
        except KeyError:
            raise KeyError("event has no attribute {!r}".format(name)) from None

    def derive(self, /, routing_subject=None, data=None, **attributes):
        """A new event caused by this one, for a processor to publish: one
        hop more, this event's lineage, a new id; ``source``, ``type`` and
        the other attributes are kept unless given."""
        attrs = self.attributes()
        attrs.pop("id")
        if self._type is None and "type" not in attributes:
            attrs.pop("type")             # keep "type = routing subject"
        attrs[_HOPS] = self._hops + 1
        attrs.update(attributes)
        return Event(self._rs if routing_subject is None else routing_subject,
                     self._data if data is None else data, **attrs)

    # -- consumer deliveries ----------------------------------------------------

    def ack(self):
        """Acknowledge a consumer delivery."""
        self._acker_or_raise()._ack(self)

    def nak(self, delay=0.0):
        """Ask for redelivery after ``delay`` seconds."""
        self._acker_or_raise()._nak(self, delay)

    def term(self):
        """Never deliver this event to the consumer again."""
        self._acker_or_raise()._term(self)

    def in_progress(self):
        """Reset the ack timer of a consumer delivery."""
        self._acker_or_raise()._in_progress(self)

    def _acker_or_raise(self):
        if self._acker is None:
            raise FastflowError("event {} is not a consumer delivery: ack/nak/term apply to "
                                "events fetched from a stream consumer".format(self.id))
        return self._acker

    # -- plumbing ------------------------------------------------------------------

    def _delivery(self, seq, stream, ts, deliveries, acker):
        """A copy for one consumer delivery (engine use)."""
        seq = _c_int64(seq)
        stream = _arg_str("stream", stream)
        ts = _c_int64(ts)
        deliveries = _c_int(deliveries)
        e = Event.__new__(Event)
        _ev_copy(e, self)
        e._seq = seq
        e._stream = stream
        e._ts = ts
        e._deliveries = deliveries
        e._acker = acker
        return e

    def encode(self):
        """The event's record (the log's and the wire's binary form)."""
        return _ev_encode(self)

    @staticmethod
    def decode(routing_subject, record, seq=0, stream=None, ts=0):
        """An event from its record (``encode()``'s output)."""
        seq = _c_int64(seq)
        stream = _arg_str("stream", stream)
        ts = _c_int64(ts)
        buf = _record_bytes(record)
        return _ev_decode(routing_subject, buf, 0, len(buf), seq, stream, ts, None)

    def __eq__(self, other):
        if not isinstance(other, Event):
            return NotImplemented
        return (self._rs == other._rs and self._data == other._data
                and self.attributes() == other.attributes())

    def __hash__(self):
        return hash((self._source, self.id))

    def __repr__(self):
        return "Event({!r}, id={!r}, source={!r}, type={!r}, data={!r}{})".format(
            self._rs, self.id, self._source, self.type,
            self._data if len(self._data) <= 32 else self._data[:32] + b"...",
            ", seq={}".format(self._seq) if self._seq else "")

    def __reduce__(self):
        return (_event_from_record, (self._rs, self.encode(), self._seq,
                                     self._stream, self._ts, self._origin, self._deliveries))


def _event_from_record(routing_subject, record, seq, stream, ts, origin=None, deliveries=0):
    e = Event.decode(routing_subject, record, seq, stream, ts)
    e._origin = origin
    e._deliveries = deliveries
    return e


def _as_data(data):
    if type(data) is bytes:
        return data
    if data is None:
        return b""
    if isinstance(data, str):
        raise EventError("invalid event data: expected bytes, got str (encode it first)")
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise EventError("invalid event data: expected a bytes-like object, got {}".format(
            type(data).__name__)) from None


def _ev_init_attrs(e, attributes, default_source):
    """Fill the attributes of a new event from publish/constructor keywords."""
    if attributes:
        id_, source, type_, hops, trace, rest = _attrs.normalize(attributes)
    else:
        id_ = source = type_ = trace = rest = None
        hops = 0
    e._id = id_
    if id_ is None:
        e._gpre = _id_prefix
        e._gid = _next_gid()
    e._source = default_source if source is None else source
    e._type = type_
    e._hops = hops
    e._trace = trace
    e._rest = rest


def _ev_copy(e, src):
    e._rs = src._rs
    e._data = src._data
    e._id = src._id
    e._gpre = src._gpre
    e._gid = src._gid
    e._source = src._source
    e._type = src._type
    e._hops = src._hops
    e._trace = src._trace
    e._origin = src._origin
    e._rest = src._rest
    e._rest_raw = src._rest_raw
    e._rflags = src._rflags


# -- encoding ----------------------------------------------------------------------


def _str_len(s):
    """UTF-8 length of an attribute string (0 for None)."""
    if s is None:
        return 0
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def _utf8(s):
    return s.encode("utf-8", "surrogatepass")


def _ev_rest_raw(e):
    if e._rest_raw is None and e._rest is not None:
        e._rest_raw = _attrs.encode_rest(e._rest)
    return e._rest_raw


def _ev_encode(e):
    """The record of ``e`` (bytes)."""
    data = e._data
    # sizing first (_ev_size): its errors come before the writer's
    len(data)
    if not e._gid:
        _str_len(e._id)
    _str_len(e._source)
    if e._type is not None:
        _str_len(e._type)
    _str_len(e._trace)
    rest = None
    if e._rest is not None or e._rest_raw is not None:
        rest = _ev_rest_raw(e)
    # writing (_ev_write)
    if e._hops > 65535:
        raise EventError("invalid event attribute 'ffhops': over 65535")
    parts = [b""]
    flags = e._rflags
    if e._gid:
        flags |= EVF_GENID
        parts.append(_GENID.pack(e._gpre, e._gid))
        idn = 0
    else:
        idn = _str_len(e._id)
        parts.append(_utf8(e._id))
    srcn = _str_len(e._source)
    if e._source is not None:
        parts.append(_utf8(e._source))
    if e._type is None:
        flags |= EVF_TYPE_SUBJECT
        typn = 0
    else:
        typn = _str_len(e._type)
        parts.append(_utf8(e._type))
    trn = _str_len(e._trace)
    if e._trace is not None:
        parts.append(_utf8(e._trace))
    restn = 0
    if rest is not None:
        restn = len(rest)
        parts.append(rest)
    if idn > EV_MAX_STRING or srcn > EV_MAX_STRING or typn > EV_MAX_STRING \
            or trn > EV_MAX_STRING:
        raise EventError("invalid event: id, source, type and fftrace are limited to {} "
                         "bytes each".format(EV_MAX_STRING))
    parts[0] = _HEADER.pack(EV_VERSION, flags, e._hops, idn, srcn, typn, trn, restn)
    parts.append(data)
    return b"".join(parts)


# -- decoding ----------------------------------------------------------------------


def _record_bytes(record):
    """The bytes of a buffer, as the native core's PyBUF_SIMPLE request."""
    if type(record) is bytes:
        return record
    try:
        mv = memoryview(record)
    except TypeError:
        raise TypeError("a bytes-like object is required, not '{}'".format(
            type(record).__name__)) from None
    with mv:
        if not mv.c_contiguous:
            raise BufferError("memoryview: underlying buffer is not C-contiguous")
        return mv.tobytes()


def _decode_str(buf, a, b):
    return buf[a:b].decode("utf-8", "surrogatepass")


def _ev_check(subject, buf, start, end):
    """Raise EventError unless ``buf[start:end]`` is a well-formed event record."""
    n = end - start
    if n < EV_HEADER:
        raise EventError("invalid event record for {!r}: {} bytes, the header alone is {}".format(
            subject, n, EV_HEADER))
    if buf[start] != EV_VERSION:
        raise EventError("invalid event record for {!r}: version {} (expected {})".format(
            subject, buf[start], EV_VERSION))
    _, flags, _, idn, srcn, typn, trn, restn = _HEADER.unpack_from(buf, start)
    off = EV_HEADER + (EV_GENID if flags & EVF_GENID else idn) + srcn + typn + trn + restn
    if off > n:
        raise EventError("invalid event record for {!r}: its header needs {} bytes, it has {}"
                         .format(subject, off, n))
    if srcn == 0:
        raise EventError("invalid event record for {!r}: empty 'source'".format(subject))
    # the strings (id, source, type, trace) must each be UTF-8: checked here,
    # once, so that every later decode of the stored record succeeds
    p = start + EV_HEADER
    if flags & EVF_GENID:
        p += EV_GENID
    else:
        _check_utf8(subject, buf, p, p + idn)
        p += idn
    for length in (srcn, typn, trn):
        _check_utf8(subject, buf, p, p + length)
        p += length
    if restn:
        # (only events with optional attributes or extensions: a msgpack map
        # that every later decode, store and door must be able to read)
        _attrs.check_rest(subject, bytes(buf[p:p + restn]))


def _check_utf8(subject, buf, a, b):
    """Raise EventError unless ``buf[a:b]`` (one attribute string) decodes
    as UTF-8 (surrogates passed)."""
    s = buf[a:b]
    if not s.isascii():
        try:
            s.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise EventError("invalid event record for {!r}: its attributes are not UTF-8"
                             .format(subject)) from None


def _ev_data_offset(buf, start, end):
    """Where the data of record ``buf[start:end]`` starts (relative to ``start``)."""
    n = end - start
    if n < EV_HEADER or buf[start] != EV_VERSION:
        raise FastflowError("record of {} bytes is not an event record".format(n))
    _, flags, _, idn, srcn, typn, trn, restn = _HEADER.unpack_from(buf, start)
    off = EV_HEADER + (EV_GENID if flags & EVF_GENID else idn) + srcn + typn + trn + restn
    if off > n:
        raise FastflowError("event record of {} bytes is truncated: its header needs {}".format(
            n, off))
    return off


def _ev_header(subject, buf, start, end):
    """``(flags, hops, idn, srcn, typn, trn, restn)`` of the checked header
    of record ``buf[start:end]`` stored under ``subject`` (``idn``: the
    id's bytes, a generated one's included)."""
    n = end - start
    if n < EV_HEADER or buf[start] != EV_VERSION:
        raise FastflowError("record of {} bytes under {!r} is not an event record "
                            "(version byte {})".format(n, subject, buf[start] if n else -1))
    _, flags, hops, idn, srcn, typn, trn, restn = _HEADER.unpack_from(buf, start)
    if flags & EVF_GENID:
        idn = EV_GENID
    off = EV_HEADER + idn + srcn + typn + trn + restn
    if off > n:
        raise FastflowError("event record of {} bytes under {!r} is truncated: its header "
                            "needs {}".format(n, subject, off))
    return flags, hops, idn, srcn, typn, trn, restn


def _ev_decode(subject, buf, start, end, seq, stream, ts, origin):
    """The event of record ``buf[start:end]`` stored under ``subject``."""
    global _src_cache_b, _src_cache_s
    flags, hops, idn, srcn, typn, trn, restn = _ev_header(subject, buf, start, end)
    e = Event.__new__(Event)
    if type(subject) is bytes:
        subject = subject.decode("utf-8")
    e._rs = _as_str_field(subject)
    p = start + EV_HEADER
    if flags & EVF_GENID:
        hi, lo = _GENID.unpack_from(buf, p)
        e._gpre = hi
        e._gid = lo
        if lo == 0:                     # not made by fastflow: keep it as text
            e._id = _hex_id(hi, 0)
    else:
        e._id = _decode_str(buf, p, p + idn)
    p += idn
    src = buf[p:p + srcn]
    if src == _src_cache_b:
        e._source = _src_cache_s
    else:
        e._source = src.decode("utf-8", "surrogatepass")
        _src_cache_b = src
        _src_cache_s = e._source
    p += srcn
    if not flags & EVF_TYPE_SUBJECT:
        e._type = _decode_str(buf, p, p + typn)
    p += typn
    e._hops = hops
    if trn:
        e._trace = _decode_str(buf, p, p + trn)
    p += trn
    if restn:
        e._rest_raw = buf[p:p + restn]
    p += restn
    e._data = buf[p:end]
    e._seq = seq
    e._stream = stream
    e._ts = ts
    e._origin = origin
    e._rflags = flags & EVF_MQTT
    return e


def batch_payload_bytes(b, n=-1):
    """The data bytes of the first ``n`` records of a log ``Batch`` (all:
    -1), for metering what a replay sent."""
    if not isinstance(b, Batch):
        raise TypeError("Argument 'b' has incorrect type (expected {}.{}, got {})".format(
            Batch.__module__, Batch.__qualname__, type(b).__name__))
    offs = b.offsets
    have = len(offs) - 1
    n = have if n < 0 or n > have else n
    buf = _record_bytes(b.buffer)
    total = 0
    for i in range(n):
        try:
            total += offs[i + 1] - offs[i] - _ev_data_offset(buf, offs[i], offs[i + 1])
        except FastflowError:
            pass
    return total


def events_from_batch(b, stream=None, origin=None, rows=None):
    """The events of a log ``Batch`` read from a stream (a list).
    ``rows``: the indexes of the events to make (repeats allowed); the
    list then holds None for the others."""
    if not isinstance(b, Batch):
        # (the native core takes None here, and crashes)
        raise TypeError("Argument 'b' has incorrect type (expected {}.{}, got {})".format(
            Batch.__module__, Batch.__qualname__, type(b).__name__))
    stream = _arg_str("stream", stream)
    origin = _arg_str("origin", origin)
    offs = b.offsets
    subjects = b.subjects
    seqs = b.seqs
    tss = b.ts
    buf = _record_bytes(b.buffer)
    n = len(offs) - 1
    if rows is None:
        return [_ev_decode(subjects[i], buf, offs[i], offs[i + 1], seqs[i], stream, tss[i],
                           origin) for i in range(n)]
    out = [None] * n
    for i in rows:
        if not 0 <= i < n:
            raise IndexError("batch index {} out of range for length {}".format(i, n))
        if out[i] is None:
            out[i] = _ev_decode(subjects[i], buf, offs[i], offs[i + 1], seqs[i], stream,
                                tss[i], origin)
    return out
