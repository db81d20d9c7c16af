# Events (CloudEvents 1.0) and their record encoding.
#
# The engine stores and sends an event as one *record*: a 16-byte header,
# the required attributes, the lineage, the other attributes (a msgpack
# map), then the data.  All integers little-endian.
#
#   0  u8   version (EV_VERSION)
#   1  u8   flags: EVF_GENID (the id is 16 raw bytes: a per-process random
#           64-bit prefix and a 64-bit counter, shown as 32 hex digits),
#           EVF_TYPE_SUBJECT (type = the routing subject, not stored),
#           EVF_MQTT (published through the MQTT door: MQTT subscribers
#           get it as MQTT sent it; kept by the Event, ``from_mqtt``)
#   2  u16  hops (the ffhops extension)
#   4  u16  id bytes (0 with EVF_GENID)
#   6  u16  source bytes
#   8  u16  type bytes (0 with EVF_TYPE_SUBJECT)
#   10 u16  trace bytes (the fftrace extension as received)
#   12 u32  rest bytes (msgpack map of the other attributes, 0 = none)
#   16      id | source | type | trace | rest | data
#
# The fast path (a subject and a payload) writes the header, 16 id bytes,
# the source and the data; decoding makes no Python object but the source
# (one cached str), the subject and the data.

from cpython.unicode cimport PyUnicode_DATA, PyUnicode_GET_LENGTH
from cpython.list cimport PyList_GET_ITEM

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object o)

from fastflow import _attrs

cdef enum:
    EV_VERSION = 1
    EV_HEADER = 16
    EV_GENID = 16                   # bytes of a generated id
    EVF_GENID = 1
    EVF_TYPE_SUBJECT = 2
    EVF_MQTT = 4
    EV_MAX_STRING = 65535

cdef uint64_t _id_prefix = 0
cdef uint64_t _id_counter = 0
_id_prefix = int.from_bytes(os.urandom(8), 'little')


def _new_id_prefix():
    """A forked child gets a prefix of its own: ids stay unique per source."""
    global _id_prefix, _id_counter
    _id_prefix = int.from_bytes(os.urandom(8), 'little')
    _id_counter = 0


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_new_id_prefix)

cdef str _SPECVERSION = _attrs.SPECVERSION
cdef str _DEFAULT_SOURCE = _attrs.DEFAULT_SOURCE
cdef str _HOPS = _attrs.HOPS
cdef str _TRACE = _attrs.TRACE

# the last decoded source, so that replaying a stream of one producer makes
# one str for all its events
cdef bytes _src_cache_b = b''
cdef str _src_cache_s = ''


cdef inline str _hex_id(uint64_t hi, uint64_t lo):
    return '{:016x}{:016x}'.format(hi, lo)


cdef inline Py_ssize_t _str_len(str s) except -1:
    """UTF-8 length of an attribute string (0 for None)."""
    if s is None:
        return 0
    return PyUnicode_GET_LENGTH(s) if PyUnicode_IS_COMPACT_ASCII(s) else len(s.encode('utf-8', 'surrogatepass'))


@cython.final
@cython.freelist(256)
@cython.no_gc      # holds only str, bytes, a dict of those and its consumer (which
                   # keeps no events): no reference cycle can go through an Event
cdef class Event:
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

    def __init__(self, routing_subject=None, data=b'', **attributes):
        if routing_subject is not None:
            validate_subject(routing_subject)
            if type(routing_subject) is bytes:
                routing_subject = (<bytes>routing_subject).decode('utf-8')
        self.routing_subject = routing_subject
        self._data = _as_data(data)
        _ev_init_attrs(self, attributes, _DEFAULT_SOURCE)
        if self._type is None and routing_subject is None:
            raise EventError("invalid event attribute 'type': required when there is "
                             "no routing subject to default it to")

    # -- CloudEvents attributes ---------------------------------------------

    @property
    def id(self):
        if self._id is None:
            self._id = _hex_id(self._gpre, self._gid)
        return self._id

    @property
    def type(self):
        return self.routing_subject if self._type is None else self._type

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

    cdef dict _restd(self):
        if self._rest is None and self._rest_raw is not None:
            self._rest = _attrs.decode_rest(self._rest_raw)
            self._rest_raw = None
        return self._rest

    @property
    def time(self):
        r = self._restd()
        return None if r is None else r.get('time')

    @property
    def subject(self):
        r = self._restd()
        return None if r is None else r.get('subject')

    @property
    def datacontenttype(self):
        r = self._restd()
        return None if r is None else r.get('datacontenttype')

    @property
    def dataschema(self):
        r = self._restd()
        return None if r is None else r.get('dataschema')

    @property
    def trace(self):
        """The lineage (``fftrace``): hashes of the flows and subjects the
        event passed, this one included once delivered."""
        if self._origin is None or self.routing_subject is None:
            return self._trace or ''
        own = _attrs.trace_entry(self._origin, self.routing_subject)
        return own if not self._trace else self._trace + ',' + own

    @property
    def extensions(self):
        """Extension attributes (a new dict), ``ffhops``/``fftrace`` included
        once the engine has routed the event."""
        cdef dict out = {}
        r = self._restd()
        if r is not None:
            for k, v in r.items():
                if k not in ('time', 'subject', 'datacontenttype', 'dataschema'):
                    out[k] = v
        if self.hops or self._origin is not None:
            out[_HOPS] = self.hops
        t = self.trace
        if t:
            out[_TRACE] = t
        return out

    def attributes(self):
        """Every attribute (a new dict, without ``data``)."""
        cdef dict out = {'specversion': _SPECVERSION, 'id': self.id,
                         'source': self.source, 'type': self.type}
        r = self._restd()
        if r is not None:
            out.update(r)
        if self.hops or self._origin is not None:
            out[_HOPS] = self.hops
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
            raise KeyError('event has no attribute {!r}'.format(name)) from None

    def derive(self, routing_subject=None, data=None, **attributes):
        """A new event caused by this one, for a processor to publish: one
        hop more, this event's lineage, a new id; ``source``, ``type`` and
        the other attributes are kept unless given."""
        attrs = self.attributes()
        attrs.pop('id')
        if self._type is None and 'type' not in attributes:
            attrs.pop('type')             # keep "type = routing subject"
        attrs[_HOPS] = self.hops + 1
        attrs.update(attributes)
        return Event(self.routing_subject if routing_subject is None else routing_subject,
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

    cdef object _acker_or_raise(self):
        if self._acker is None:
            raise FastflowError('event {} is not a consumer delivery: ack/nak/term apply to '
                                'events fetched from a stream consumer'.format(self.id))
        return self._acker

    # -- plumbing ------------------------------------------------------------------

    def _delivery(self, int64_t seq, str stream, int64_t ts, int deliveries, acker):
        """A copy for one consumer delivery (engine use)."""
        cdef Event e = Event.__new__(Event)
        _ev_copy(e, self)
        e.seq = seq
        e.stream = stream
        e.ts = ts
        e.deliveries = deliveries
        e._acker = acker
        return e

    def encode(self):
        """The event's record (the log's and the wire's binary form)."""
        cdef bytes out
        cdef Py_ssize_t n = _ev_size(self, len(self._data))
        out = PyBytes_FromStringAndSize(NULL, n)
        _ev_write(self, PyBytes_AS_STRING(out), self._data, n)
        return out

    @staticmethod
    def decode(routing_subject, record, int64_t seq=0, str stream=None, int64_t ts=0):
        """An event from its record (``encode()``'s output)."""
        cdef Py_buffer view
        PyObject_GetBuffer(record, &view, PyBUF_SIMPLE)
        try:
            return _ev_decode(routing_subject, <const char *>view.buf, view.len,
                              seq, stream, ts, None)
        finally:
            PyBuffer_Release(&view)

    def __eq__(self, other):
        if not isinstance(other, Event):
            return NotImplemented
        o = <Event>other
        return (self.routing_subject == o.routing_subject and self._data == o._data
                and self.attributes() == o.attributes())

    def __hash__(self):
        return hash((self.source, self.id))

    def __repr__(self):
        return 'Event({!r}, id={!r}, source={!r}, type={!r}, data={!r}{})'.format(
            self.routing_subject, self.id, self.source, self.type,
            self._data if len(self._data) <= 32 else self._data[:32] + b'...',
            ', seq={}'.format(self.seq) if self.seq else '')

    def __reduce__(self):
        return (_event_from_record, (self.routing_subject, self.encode(), self.seq,
                                     self.stream, self.ts, self._origin, self.deliveries))


def _event_from_record(routing_subject, record, seq, stream, ts, origin=None, deliveries=0):
    cdef Event e
    cdef Py_buffer view
    PyObject_GetBuffer(record, &view, PyBUF_SIMPLE)
    try:
        e = _ev_decode(routing_subject, <const char *>view.buf, view.len, seq, stream, ts, origin)
    finally:
        PyBuffer_Release(&view)
    e.deliveries = deliveries
    return e


cdef inline object _as_data(object data):
    if type(data) is bytes:
        return data
    if data is None:
        return b''
    if isinstance(data, str):
        raise EventError('invalid event data: expected bytes, got str (encode it first)')
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise EventError('invalid event data: expected a bytes-like object, got {}'.format(
            type(data).__name__)) from None


cdef int _ev_init_attrs(Event e, dict attributes, str default_source) except -1:
    """Fill the attributes of a new event from publish/constructor keywords."""
    global _id_counter
    cdef object id_, source, type_, hops, trace, rest
    if attributes:
        id_, source, type_, hops, trace, rest = _attrs.normalize(attributes)
    else:
        id_ = source = type_ = trace = rest = None
        hops = 0
    e._id = id_
    if id_ is None:
        _id_counter += 1
        e._gpre = _id_prefix
        e._gid = _id_counter
    e.source = default_source if source is None else source
    e._type = type_
    e.hops = hops
    e._trace = trace
    e._rest = rest
    return 0


cdef void _ev_copy(Event e, Event src) noexcept:
    e.routing_subject = src.routing_subject
    e._data = src._data
    e._id = src._id
    e._gpre = src._gpre
    e._gid = src._gid
    e.source = src.source
    e._type = src._type
    e.hops = src.hops
    e._trace = src._trace
    e._origin = src._origin
    e._rest = src._rest
    e._rest_raw = src._rest_raw
    e._rflags = src._rflags


cdef inline bytes _utf8(str s):
    return None if s is None else s.encode('utf-8', 'surrogatepass')


cdef inline Py_ssize_t _ev_default_head(char *p, uint64_t gid, const char *src,
                                        Py_ssize_t srcn, uint16_t hops) noexcept:
    """Write the record head of an event with every default but its data
    (the header, the generated id ``gid``, the source); returns its size.
    The one place the routers and the doors make such a record."""
    cdef uint64_t h0 = (<uint64_t>EV_VERSION | (<uint64_t>(EVF_GENID | EVF_TYPE_SUBJECT) << 8)
                        | (<uint64_t>hops << 16) | (<uint64_t>srcn << 48))
    cdef uint64_t h1 = 0                # type len 0, trace len 0, rest len 0
    memcpy(p, &h0, 8)
    memcpy(p + 8, &h1, 8)
    memcpy(p + EV_HEADER, &_id_prefix, 8)
    memcpy(p + EV_HEADER + 8, &gid, 8)
    memcpy(p + EV_HEADER + EV_GENID, src, srcn)
    return EV_HEADER + EV_GENID + srcn


cdef Py_ssize_t _ev_size(Event e, Py_ssize_t dlen) except -1:
    """Bytes of the record of ``e`` with ``dlen`` bytes of data."""
    cdef Py_ssize_t n = EV_HEADER + dlen
    n += EV_GENID if e._gid else _str_len(e._id)
    n += _str_len(e.source)
    if e._type is not None:
        n += _str_len(e._type)
    n += _str_len(e._trace)
    if e._rest is not None or e._rest_raw is not None:
        n += len(_ev_rest_raw(e))
    return n


cdef bytes _ev_rest_raw(Event e):
    if e._rest_raw is None and e._rest is not None:
        e._rest_raw = _attrs.encode_rest(e._rest)
    return e._rest_raw


cdef inline char *_put_str(char *p, str s, const char *what) except NULL:
    cdef const char *b
    cdef Py_ssize_t n
    if s is None:
        return p
    if PyUnicode_IS_COMPACT_ASCII(s):
        b = <const char *>PyUnicode_DATA(s)
        n = PyUnicode_GET_LENGTH(s)
    else:
        bs = s.encode('utf-8', 'surrogatepass')
        b = PyBytes_AS_STRING(bs)
        n = len(bs)
    memcpy(p, b, n)
    return p + n


cdef Py_ssize_t _ev_write(Event e, char *out, object data, Py_ssize_t total) except -1:
    """Write the record of ``e`` (with payload ``data``, bytes) to ``out``
    (``total`` bytes from _ev_size)."""
    cdef char *p = out + EV_HEADER
    cdef Py_ssize_t idn, srcn, typn, trn, restn = 0
    cdef bytes rest = None
    cdef uint8_t flags = e._rflags
    if e.hops > 65535:
        raise EventError("invalid event attribute 'ffhops': over 65535")
    if e._gid:
        flags |= EVF_GENID
        memcpy(p, &e._gpre, 8)
        memcpy(p + 8, &e._gid, 8)
        p += EV_GENID
        idn = 0
    else:
        idn = _str_len(e._id)
        p = _put_str(p, e._id, 'id')
    srcn = _str_len(e.source)
    p = _put_str(p, e.source, 'source')
    if e._type is None:
        flags |= EVF_TYPE_SUBJECT
        typn = 0
    else:
        typn = _str_len(e._type)
        p = _put_str(p, e._type, 'type')
    trn = _str_len(e._trace)
    p = _put_str(p, e._trace, 'fftrace')
    if e._rest is not None or e._rest_raw is not None:
        rest = _ev_rest_raw(e)
        restn = len(rest)
        memcpy(p, PyBytes_AS_STRING(rest), restn)
        p += restn
    if idn > EV_MAX_STRING or srcn > EV_MAX_STRING or typn > EV_MAX_STRING or trn > EV_MAX_STRING:
        raise EventError('invalid event: id, source, type and fftrace are limited to {} '
                         'bytes each'.format(EV_MAX_STRING))
    out[0] = <char>EV_VERSION
    out[1] = <char>flags
    _wr16(out + 2, <uint16_t>e.hops)
    _wr16(out + 4, <uint16_t>idn)
    _wr16(out + 6, <uint16_t>srcn)
    _wr16(out + 8, <uint16_t>typn)
    _wr16(out + 10, <uint16_t>trn)
    _wr32(out + 12, <uint32_t>restn)
    memcpy(p, PyBytes_AS_STRING(data), len(<bytes>data))
    p += len(<bytes>data)
    if FASTFLOW_DEBUG and p - out != total:
        raise FastflowError('_ev_write: wrote {} bytes, sized {}'.format(p - out, total))
    return p - out


cdef inline str _decode_str(const char *p, Py_ssize_t n):
    return PyUnicode_DecodeUTF8(p, n, 'surrogatepass')


cdef int _ev_check(object subject, const char *p, Py_ssize_t n) except -1:
    """Raise EventError unless p[:n] is a well-formed event record."""
    cdef Py_ssize_t off
    if n < EV_HEADER:
        raise EventError('invalid event record for {!r}: {} bytes, the header alone is {}'.format(
            subject, n, EV_HEADER))
    if <uint8_t>p[0] != EV_VERSION:
        raise EventError('invalid event record for {!r}: version {} (expected {})'.format(
            subject, <uint8_t>p[0], EV_VERSION))
    off = (EV_HEADER + (EV_GENID if <uint8_t>p[1] & EVF_GENID else _rd16(p + 4)) + _rd16(p + 6)
           + _rd16(p + 8) + _rd16(p + 10) + _rd32(p + 12))
    if off > n:
        raise EventError('invalid event record for {!r}: its header needs {} bytes, it has {}'
                         .format(subject, off, n))
    if _rd16(p + 6) == 0:
        raise EventError("invalid event record for {!r}: empty 'source'".format(subject))
    # the strings (id, source, type, trace) must each be UTF-8: checked here,
    # once, so that every later decode of the stored record succeeds
    off = EV_HEADER
    if <uint8_t>p[1] & EVF_GENID:
        off += EV_GENID
    else:
        _check_utf8(subject, p + off, _rd16(p + 4))
        off += _rd16(p + 4)
    _check_utf8(subject, p + off, _rd16(p + 6))
    off += _rd16(p + 6)
    _check_utf8(subject, p + off, _rd16(p + 8))
    off += _rd16(p + 8)
    _check_utf8(subject, p + off, _rd16(p + 10))
    off += _rd16(p + 10)
    if _rd32(p + 12) and not _rest_ok(p + off, _rd32(p + 12)):
        # (events with optional attributes or extensions: a msgpack map that
        # every later decode, store and door must be able to read; what the
        # walk below does not vouch for is decided, or refused with the
        # reason, by the attribute rules)
        _attrs.check_rest(subject, PyBytes_FromStringAndSize(p + off, _rd32(p + 12)))
    return 0


cdef inline uint32_t _be(const uint8_t *p, int n) noexcept:
    cdef uint32_t v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


cdef inline Py_ssize_t _sized(const uint8_t *b, Py_ssize_t *i, Py_ssize_t n,
                              int kind) noexcept:
    """The length of a msgpack str 8/16/32 or bin 8/16/32 (``kind`` 1, 2, 3:
    a 1-, 2- or 4-byte big-endian size at ``b[i[0]]``), ``i[0]`` moved past
    the size; -1 if the block ends first."""
    cdef int width = 4 if kind == 3 else kind
    cdef Py_ssize_t ln
    if i[0] + width > n:
        return -1
    ln = b[i[0]] if width == 1 else _be(b + i[0], width)
    i[0] += width
    return ln


cdef bint _rest_ok(const char *p, Py_ssize_t n) noexcept:
    """True if p[:n] is exactly one msgpack map of ASCII names [a-z0-9]+
    (none of id, source, type, specversion, ffhops, fftrace, data,
    data_base64) to ASCII str, bool, int32 or bin values: the attribute
    blocks the engine writes.  False: not vouched for (the slow path)."""
    cdef const uint8_t *b = <const uint8_t *>p
    cdef Py_ssize_t i = 0, k, ln
    cdef uint32_t count, j
    cdef uint8_t c
    cdef int64_t v
    if n < 1:
        return False
    c = b[0]
    if 0x80 <= c <= 0x8f:
        count = c & 0x0f
        i = 1
    elif c == 0xde and n >= 3:
        count = _be(b + 1, 2)
        i = 3
    elif c == 0xdf and n >= 5:
        count = _be(b + 1, 4)
        i = 5
    else:
        return False
    for j in range(count):
        # the name
        if i >= n:
            return False
        c = b[i]
        if 0xa0 <= c <= 0xbf:
            ln = c & 0x1f
            i += 1
        elif c == 0xd9 and i + 2 <= n:
            ln = b[i + 1]
            i += 2
        else:
            return False
        if ln == 0 or i + ln > n or _reserved_name(p + i, ln):
            return False
        for k in range(i, i + ln):
            if not ((b[k] >= 97 and b[k] <= 122) or (b[k] >= 48 and b[k] <= 57)):
                return False
        i += ln
        # the value
        if i >= n:
            return False
        c = b[i]
        i += 1
        if c <= 0x7f or c >= 0xe0 or c == 0xc2 or c == 0xc3:
            continue                    # fixint, negative fixint, false, true
        if c == 0xcc or c == 0xd0:
            i += 1
        elif c == 0xcd or c == 0xd1:
            i += 2
        elif c == 0xce or c == 0xd2:
            if i + 4 > n:
                return False
            v = _be(b + i, 4)
            if c == 0xce and v > 0x7fffffff:
                return False            # (beyond a CloudEvents Integer)
            i += 4
        elif 0xa0 <= c <= 0xbf or c == 0xd9 or c == 0xda or c == 0xdb:
            ln = (c & 0x1f) if c <= 0xbf else _sized(b, &i, n, c - 0xd8)
            if ln < 0 or i + ln > n:
                return False
            for k in range(i, i + ln):
                if b[k] >= 0x80:
                    return False        # (UTF-8 is checked on the slow path)
            i += ln
        elif c == 0xc4 or c == 0xc5 or c == 0xc6:
            ln = _sized(b, &i, n, c - 0xc3)
            if ln < 0:
                return False
            i += ln
        else:
            return False
        if i > n:
            return False
    return i == n


cdef bint _reserved_name(const char *p, Py_ssize_t n) noexcept:
    """True for the names that are no 'rest' attribute."""
    if n == 2:
        return memcmp(p, b'id', 2) == 0
    if n == 4:
        return memcmp(p, b'type', 4) == 0 or memcmp(p, b'data', 4) == 0
    if n == 6:
        return (memcmp(p, b'source', 6) == 0 or memcmp(p, b'ffhops', 6) == 0)
    if n == 7:
        return memcmp(p, b'fftrace', 7) == 0
    if n == 11:
        return (memcmp(p, b'specversion', 11) == 0 or memcmp(p, b'data_base64', 11) == 0)
    return False


cdef int _check_utf8(object subject, const char *p, Py_ssize_t n) except -1:
    cdef Py_ssize_t i
    for i in range(n):
        if <uint8_t>p[i] >= 0x80:
            try:
                PyUnicode_DecodeUTF8(p, n, 'surrogatepass')
            except UnicodeDecodeError:
                raise EventError('invalid event record for {!r}: its attributes are not UTF-8'
                                 .format(subject)) from None
            return 0
    return 0


cdef Py_ssize_t _ev_data_offset(const char *p, Py_ssize_t n) except -1:
    """Where the data of record p[:n] starts."""
    cdef Py_ssize_t off
    if n < EV_HEADER or <uint8_t>p[0] != EV_VERSION:
        raise FastflowError('record of {} bytes is not an event record'.format(n))
    off = (EV_HEADER + (EV_GENID if <uint8_t>p[1] & EVF_GENID else _rd16(p + 4)) + _rd16(p + 6)
           + _rd16(p + 8) + _rd16(p + 10) + _rd32(p + 12))
    if off > n:
        raise FastflowError('event record of {} bytes is truncated: its header needs {}'.format(
            n, off))
    return off


cdef inline int _ev_head(object subject, const char *p, Py_ssize_t n,
                         EvHead *hd) except -1:
    """The header of record ``p[:n]`` stored under ``subject`` into ``hd``,
    checked: the version, and lengths that fit in ``n``."""
    cdef Py_ssize_t need
    if n < EV_HEADER or <uint8_t>p[0] != EV_VERSION:
        raise FastflowError('record of {} bytes under {!r} is not an event record '
                            '(version byte {})'.format(n, subject, <uint8_t>p[0] if n else -1))
    hd.flags = <uint8_t>p[1]
    hd.hops = _rd16(p + 2)
    hd.idn = EV_GENID if hd.flags & EVF_GENID else _rd16(p + 4)
    hd.srcn = _rd16(p + 6)
    hd.typn = _rd16(p + 8)
    hd.trn = _rd16(p + 10)
    hd.restn = _rd32(p + 12)
    need = EV_HEADER + hd.idn + hd.srcn + hd.typn + hd.trn + hd.restn
    if need > n:
        raise FastflowError('event record of {} bytes under {!r} is truncated: its header '
                            'needs {}'.format(n, subject, need))
    return 0


cdef Event _ev_decode(object subject, const char *p, Py_ssize_t n, int64_t seq, str stream,
                      int64_t ts, str origin):
    """The event of record ``p[:n]`` stored under ``subject`` (a str)."""
    global _src_cache_b, _src_cache_s
    cdef Event e
    cdef Py_ssize_t off
    cdef EvHead hd
    _ev_head(subject, p, n, &hd)
    e = Event.__new__(Event)
    if type(subject) is bytes:
        subject = (<bytes>subject).decode('utf-8')
    e.routing_subject = subject
    off = EV_HEADER
    if hd.flags & EVF_GENID:
        e._gpre = _rd64(p + off)
        e._gid = _rd64(p + off + 8)
        if e._gid == 0:                 # not made by fastflow: keep it as text
            e._id = _hex_id(e._gpre, 0)
    else:
        e._id = _decode_str(p + off, hd.idn)
    off += hd.idn
    if hd.srcn == len(_src_cache_b) and memcmp(PyBytes_AS_STRING(_src_cache_b), p + off,
                                               hd.srcn) == 0:
        e.source = _src_cache_s
    else:
        e.source = _decode_str(p + off, hd.srcn)
        _src_cache_b = PyBytes_FromStringAndSize(p + off, hd.srcn)
        _src_cache_s = e.source
    off += hd.srcn
    if not hd.flags & EVF_TYPE_SUBJECT:
        e._type = _decode_str(p + off, hd.typn)
    off += hd.typn
    e.hops = hd.hops
    if hd.trn:
        e._trace = _decode_str(p + off, hd.trn)
    off += hd.trn
    if hd.restn:
        e._rest_raw = PyBytes_FromStringAndSize(p + off, hd.restn)
    off += hd.restn
    e._data = PyBytes_FromStringAndSize(p + off, n - off)
    e.seq = seq
    e.stream = stream
    e.ts = ts
    e._origin = origin
    e._rflags = hd.flags & EVF_MQTT
    return e


def batch_payload_bytes(Batch b not None, Py_ssize_t n=-1):
    """The data bytes of the first ``n`` records of a log ``Batch`` (all:
    -1), for metering what a replay sent."""
    cdef Py_ssize_t i, off, rn, total = 0, have = b.offsets.n - 1
    cdef Py_buffer view
    cdef const char *p
    if n < 0 or n > have:
        n = have
    PyObject_GetBuffer(b.buffer, &view, PyBUF_SIMPLE)
    try:
        for i in range(n):
            p = <const char *>view.buf + b.offsets.data[i]
            rn = b.offsets.data[i + 1] - b.offsets.data[i]
            if rn < EV_HEADER:
                continue
            off = (EV_HEADER + (EV_GENID if <uint8_t>p[1] & EVF_GENID else _rd16(p + 4))
                   + _rd16(p + 6) + _rd16(p + 8) + _rd16(p + 10) + _rd32(p + 12))
            if off <= rn:
                total += rn - off
    finally:
        PyBuffer_Release(&view)
    return total


def events_from_batch(Batch b not None, str stream=None, str origin=None, rows=None):
    """The events of a log ``Batch`` read from a stream (a list).
    ``rows``: the indexes of the events to make (repeats allowed); the
    list then holds None for the others."""
    cdef Py_ssize_t i, k, n = b.offsets.n - 1
    cdef Py_buffer view
    cdef const char *base
    cdef list out = PyList_New(n)
    cdef list only
    cdef Event e
    if rows is not None:
        only = rows if type(rows) is list else list(rows)
        for i in range(n):
            Py_INCREF(None)
            PyList_SET_ITEM(out, i, None)
    PyObject_GetBuffer(b.buffer, &view, PyBUF_SIMPLE)
    try:
        base = <const char *>view.buf
        if rows is not None:
            for k in range(len(only)):
                i = only[k]
                if not 0 <= i < n:
                    raise IndexError('batch index {} out of range for length {}'.format(i, n))
                if PyList_GET_ITEM(out, i) == <PyObject *>None:
                    out[i] = _ev_decode(<object>PyList_GET_ITEM(b.subjects, i),
                                        base + b.offsets.data[i],
                                        b.offsets.data[i + 1] - b.offsets.data[i],
                                        b.seqs.data[i], stream, b.ts.data[i], origin)
            return out
        for i in range(n):
            e = _ev_decode(<object>PyList_GET_ITEM(b.subjects, i),
                           base + b.offsets.data[i], b.offsets.data[i + 1] - b.offsets.data[i],
                           b.seqs.data[i], stream, b.ts.data[i], origin)
            Py_INCREF(e)
            PyList_SET_ITEM(out, i, e)
    finally:
        PyBuffer_Release(&view)
    return out
