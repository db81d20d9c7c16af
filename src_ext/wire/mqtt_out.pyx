# The MQTT protocol's output side (3.1.1 and 5.0): a routed record written
# as one QoS 0 PUBLISH packet into a connection's OutBuf, its topic the
# routing subject translated back to MQTT (fastflow.mqtt's rules, in C).
#
# What the payload and (MQTT 5) the properties carry is the subscription's
# mode:
#   raw         the event's data only (what a plain MQTT client expects);
#   binary      MQTT 5 only, the CloudEvents MQTT binding's binary mode: the
#               data as payload, datacontenttype as the Content Type
#               property, every other attribute a User Property by its own
#               name (specversion, id, source, type, then the optional
#               attributes and extensions in the record's order);
#   structured  the CloudEvents JSON of the event (web_out.pyx's writer) as
#               payload, Content Type application/cloudevents+json on MQTT 5.
# The modes are for the events of the other doors: a message published
# through the MQTT door (its record flag EVF_MQTT) goes in every mode as MQTT
# sent it, as a broker delivers it: its payload and (MQTT 5) the properties
# its publisher gave (the extension ``mqttprops``), nothing added.
# ``_mqtt_parts`` decides both, for MqttTarget (QoS 0, in C) and, through
# ``mqtt_parts``, for the door's QoS 1 and 2 deliveries (in Python).
#
# MQTT strings may not hold U+0000 nor the code points of surrogates (MQTT 5
# section 1.5.4): a record's string may (a NUL inside an id, a lone surrogate
# passed through), so each of them is written as U+FFFD.  A property whose
# name or value would pass 65535 bytes is left out.  The binary mode's
# properties are made once per message (WireMsg.gen) for every target of
# that lineage flag; an attribute block C does not vouch for (a duplicate
# name, a reserved one, a value other than str / int / bool / bin, more
# than WEB_REST_KEYS attributes) goes to ``_binary_props`` below, in Python.

cdef enum:
    MQTT_PUBLISH = 0x30             # type 3, QoS 0, DUP 0, RETAIN 0
    MQTT_PROP_CONTENT_TYPE = 0x03
    MQTT_PROP_SUBSCRIPTION_ID = 0x0B
    MQTT_PROP_USER = 0x26
    MQTT_VBI_MAX = 268435455        # the largest Variable Byte Integer (4 bytes)
    MQTT_STR_MAX = 65535            # bytes of a UTF-8 string or a topic

cdef enum:
    MQTT_PUBLISH_QOS1 = 0x32        # type 3, QoS 1
    MQTT_FLIGHT_IDS = 32767         # an MqttFlight's packet ids: 1 .. this (the door's
                                    # Python side takes the ones above)
    MQTT_FLIGHT_RING = 1024         # at most this many in flight (a power of 2)
    FWD_RETAIN = 1                  # _mqtt_fwd_flags: the message was published retained
    FWD_EXPIRY = 2                  # ... it has a Message Expiry Interval

cdef enum MqttMode:
    MQTT_MODE_RAW = 0
    MQTT_MODE_BINARY = 1
    MQTT_MODE_STRUCTURED = 2

# the structured mode's Content Type property
cdef bytes _CT_STRUCTURED = b'\x03\x00\x1capplication/cloudevents+json'


from libc.math cimport ceil
from libc.string cimport memmove
from libc.stdlib cimport calloc
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME

import base64


cdef inline void _wr32be(char *p, int64_t v) noexcept:
    p[0] = <char>((v >> 24) & 0xff)
    p[1] = <char>((v >> 16) & 0xff)
    p[2] = <char>((v >> 8) & 0xff)
    p[3] = <char>(v & 0xff)


# -- pieces of a packet ---------------------------------------------------------------


cdef inline Py_ssize_t _vbi_size(Py_ssize_t v) noexcept:
    return 1 if v < 128 else (2 if v < 16384 else (3 if v < 2097152 else 4))


cdef inline char *_put_vbi(char *o, Py_ssize_t v) noexcept:
    """``v`` (<= MQTT_VBI_MAX) as a Variable Byte Integer: 7 bits a byte,
    least significant first, the top bit set on all but the last."""
    while v >= 128:
        o[0] = <char>((v & 127) | 128)
        v >>= 7
        o += 1
    o[0] = <char>v
    return o + 1


cdef inline char *_put_u16(char *o, Py_ssize_t v) noexcept:
    o[0] = <char>(v >> 8)
    o[1] = <char>(v & 0xff)
    return o + 2


cdef inline Py_ssize_t _mstr_len(const char *s, Py_ssize_t n) noexcept:
    """The bytes of ``s[:n]`` as an MQTT string (each NUL becomes U+FFFD:
    3 bytes; a surrogate's 3 bytes stay 3)."""
    cdef Py_ssize_t i, out = n
    for i in range(n):
        if s[i] == 0:
            out += 2
    return out


cdef char *_put_mstr(char *o, const char *s, Py_ssize_t n) noexcept:
    """``s[:n]`` (UTF-8, surrogates passed) without its length, each NUL and
    each surrogate (ED A0..BF xx) written as U+FFFD (EF BF BD)."""
    cdef const uint8_t *b = <const uint8_t *>s
    cdef Py_ssize_t i = 0, a = 0
    while i < n:
        if b[i] == 0:
            o = _put_lit(o, s + a, i - a)
            o = _put_lit(o, b'\xef\xbf\xbd', 3)
            i += 1
            a = i
        elif b[i] == 0xed and i + 2 < n and b[i + 1] >= 0xa0:
            o = _put_lit(o, s + a, i - a)
            o = _put_lit(o, b'\xef\xbf\xbd', 3)
            i += 3
            a = i
        else:
            i += 1
    return _put_lit(o, s + a, n - a)


cdef inline char *_put_user(char *o, const char *k, Py_ssize_t kn, const char *v,
                            Py_ssize_t vn) noexcept:
    """A User Property ``k`` = ``v`` (both cleaned as MQTT strings); left out
    when either passes MQTT_STR_MAX bytes."""
    cdef Py_ssize_t ckn = _mstr_len(k, kn), cvn = _mstr_len(v, vn)
    if ckn > MQTT_STR_MAX or cvn > MQTT_STR_MAX:
        return o
    o[0] = <char>MQTT_PROP_USER
    o = _put_mstr(_put_u16(o + 1, ckn), k, kn)
    return _put_mstr(_put_u16(o, cvn), v, vn)


# -- the topic of a subject -----------------------------------------------------------


cdef Py_ssize_t _topic_of(const char *s, Py_ssize_t n, char *out) noexcept:
    """The MQTT topic of the valid subject ``s[:n]`` into ``out`` (n bytes
    at most): '.' -> '/', a token '/' -> an empty level, '//' inside a
    token -> '.'.  Returns its length, or -1 if a token holds '+' or '#'."""
    cdef Py_ssize_t i = 0, start, o = 0
    while True:
        start = i
        while i < n and s[i] != 46:
            if s[i] == 43 or s[i] == 35:
                return -1
            i += 1
        if not (i - start == 1 and s[start] == 47):
            while start < i:
                if s[start] == 47 and start + 1 < i and s[start + 1] == 47:
                    out[o] = 46
                    start += 2
                else:
                    out[o] = s[start]
                    start += 1
                o += 1
        if i >= n:
            return o
        out[o] = 47
        o += 1
        i += 1


def mqtt_subject_topic(subject):
    """The MQTT topic name of a fastflow subject (str or bytes): the results
    and errors of ``fastflow.mqtt.subject_to_mqtt_topic``, in C."""
    cdef bytes ub
    cdef bytes out
    cdef Py_ssize_t n, tn
    validate_subject(subject)
    if isinstance(subject, (bytes, bytearray)):
        subject = bytes(subject).decode('utf-8')
    ub = (<str>subject).encode('utf-8', 'surrogatepass')
    n = len(ub)
    out = PyBytes_FromStringAndSize(NULL, n)
    tn = _topic_of(PyBytes_AS_STRING(ub), n, PyBytes_AS_STRING(out))
    if tn < 0:
        _untranslatable(subject)
    return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(out), tn, 'surrogatepass')


def _untranslatable(subject):
    """Raise the SubjectError of a subject with '+' or '#' in a token."""
    for i, tok in enumerate(subject.split('.'), 1):
        if '+' in tok or '#' in tok:
            raise SubjectError(
                'subject {!r} cannot be an MQTT topic: {!r} in token {} {!r}'.format(
                    subject, '+' if '+' in tok else '#', i, tok))


# -- the binary mode's properties, once per message -----------------------------------


# [lineage]: the properties (without a subscription identifier) of the last message
cdef WebJson _mqtt_props[2]


cdef int _props_make(WebJson *w, WireMsg *m, bint lineage) except -1:
    """The binary mode's properties of ``m`` written in C into ``w``; 0
    where ``_binary_props`` decides."""
    cdef const char *rec = m.rec
    cdef Py_ssize_t off = _ev_data_offset(m.rec, m.rec_n)
    cdef uint8_t flags = <uint8_t>rec[1]
    cdef Py_ssize_t idn = EV_GENID if flags & EVF_GENID else _rd16(rec + 4)
    cdef Py_ssize_t srcn = _rd16(rec + 6), typn = _rd16(rec + 8), trn = _rd16(rec + 10)
    cdef Py_ssize_t restn = _rd32(rec + 12)
    cdef const char *p = rec + EV_HEADER
    cdef const char *rp
    cdef const uint8_t *b
    cdef const char *ct = NULL
    cdef Py_ssize_t ctn = 0, i, count, j, q, kn, ln, cn
    cdef const char *names[WEB_REST_KEYS]
    cdef Py_ssize_t name_n[WEB_REST_KEYS]
    cdef const char *kp
    cdef char tmp[32]
    cdef char *o
    cdef char *t
    cdef uint8_t c
    cdef uint64_t u
    _wj_room(w, 3 * (off + m.subject_n) + 64 * (WEB_REST_KEYS + 8))
    o = _put_user(w.buf, b'specversion', 11, b'1.0', 3)
    if flags & EVF_GENID:
        t = _put_hex64(_put_hex64(tmp, _rd64(p)), _rd64(p + 8))
        o = _put_user(o, b'id', 2, tmp, t - tmp)
    else:
        o = _put_user(o, b'id', 2, p, idn)
    p += idn
    o = _put_user(o, b'source', 6, p, srcn)
    p += srcn
    if flags & EVF_TYPE_SUBJECT:
        o = _put_user(o, b'type', 4, m.subject, m.subject_n)
    else:
        o = _put_user(o, b'type', 4, p, typn)
    p += typn
    if restn:
        rp = p + trn
        b = <const uint8_t *>rp
        c = b[0]
        i = 1
        if 0x80 <= c <= 0x8f:
            count = c & 0x0f
        elif c == 0xde:
            count = _mp_size(b, &i, restn, 2)
        elif c == 0xdf:
            count = _mp_size(b, &i, restn, 4)
        else:
            return 0
        if count < 0 or count > WEB_REST_KEYS:
            return 0
        for j in range(count):
            kn = _mp_str(b, &i, restn)
            if kn <= 0 or _reserved_name(rp + i, kn):
                return 0
            kp = rp + i
            i += kn
            for q in range(j):
                if name_n[q] == kn and memcmp(names[q], kp, kn) == 0:
                    return 0            # a duplicate: the last value wins in Python
            names[j] = kp
            name_n[j] = kn
            if i >= restn:
                return 0
            c = b[i]
            if 0xa0 <= c <= 0xbf or 0xd9 <= c <= 0xdb:
                ln = _mp_str(b, &i, restn)
                if ln < 0:
                    return 0
                if kn == 15 and memcmp(kp, b'datacontenttype', 15) == 0:
                    ct = rp + i
                    ctn = ln
                else:
                    o = _put_user(o, kp, kn, rp + i, ln)
                i += ln
                continue
            if kn == 15 and memcmp(kp, b'datacontenttype', 15) == 0:
                return 0                # not a string: Python writes it
            i += 1
            if c <= 0x7f:
                t = _put_int(tmp, c)
            elif c >= 0xe0:
                t = _put_int(tmp, <int8_t>c)
            elif c == 0xc2:
                t = _put_lit(tmp, b'false', 5)
            elif c == 0xc3:
                t = _put_lit(tmp, b'true', 4)
            elif 0xcc <= c <= 0xcf:     # uint 8, 16, 32, 64
                ln = 1 << (c - 0xcc)
                if i + ln > restn:
                    return 0
                u = 0
                for q in range(ln):
                    u = (u << 8) | b[i + q]
                if u > <uint64_t>0x7fffffffffffffff:
                    return 0
                t = _put_int(tmp, <int64_t>u)
                i += ln
            elif 0xd0 <= c <= 0xd3:     # int 8, 16, 32, 64
                ln = 1 << (c - 0xd0)
                if i + ln > restn:
                    return 0
                u = 0
                for q in range(ln):
                    u = (u << 8) | b[i + q]
                if ln < 8 and u >> (8 * ln - 1):
                    u |= ~((<uint64_t>1 << (8 * ln)) - 1)     # sign-extend
                t = _put_int(tmp, <int64_t>u)
                i += ln
            elif 0xc4 <= c <= 0xc6:     # bin 8, 16, 32: Base64
                ln = _mp_size(b, &i, restn, 1 << (c - 0xc4))
                if ln < 0 or ln > restn - i:
                    return 0
                cn = 4 * ((ln + 2) // 3)
                if cn <= MQTT_STR_MAX and kn <= MQTT_STR_MAX and _mstr_len(kp, kn) <= MQTT_STR_MAX:
                    q = o - w.buf
                    _wj_room(w, q + 16 + 3 * kn + cn + 64 * (WEB_REST_KEYS + 8)
                             + 3 * (off + m.subject_n))
                    o = w.buf + q
                    o[0] = <char>MQTT_PROP_USER
                    o = _put_mstr(_put_u16(o + 1, _mstr_len(kp, kn)), kp, kn)
                    o = _put_b64(_put_u16(o, cn), rp + i, ln)
                i += ln
                continue
            else:
                return 0
            o = _put_user(o, kp, kn, tmp, t - tmp)
        if i != restn:
            return 0
    if lineage:
        if _rd16(rec + 2):
            t = _put_int(tmp, _rd16(rec + 2))
            o = _put_user(o, b'ffhops', 6, tmp, t - tmp)
        if trn:
            o = _put_user(o, b'fftrace', 7, p, trn)
    if ct != NULL:
        cn = _mstr_len(ct, ctn)
        if cn <= MQTT_STR_MAX:
            o[0] = <char>MQTT_PROP_CONTENT_TYPE
            o = _put_mstr(_put_u16(o + 1, cn), ct, ctn)
    w.n = o - w.buf
    return 1


cdef int _props_get(WireMsg *m, bint lineage, WebJson **out) except -1:
    """The binary mode's properties of ``m`` (made once per message)."""
    cdef WebJson *w = &_mqtt_props[1 if lineage else 0]
    cdef Event ev
    cdef bytes slow
    if w.gen != m.gen or m.gen == 0:
        w.gen = 0                       # (until it is complete)
        if w.cap > WEB_JSON_KEEP and m.rec_n + m.data_n < WEB_JSON_KEEP // 8:
            free(w.buf)                 # do not keep a large event's memory
            w.buf = NULL
            w.cap = 0
        if not _props_make(w, m, lineage):
            if m.event != NULL:
                # the event as published: without this flow's lineage entry
                # (which only the in-process deliveries carry)
                ev = Event.__new__(Event)
                _ev_copy(ev, <Event>m.event)
                ev._origin = None
            else:
                ev = _ev_decode(<object>m.subject_obj, m.rec, m.rec_n, m.seq, <object>m.stream,
                                m.ts, None)
            slow = _binary_props(ev, lineage)
            _wj_room(w, len(slow))
            memcpy(w.buf, PyBytes_AS_STRING(slow), len(slow))
            w.n = len(slow)
        w.gen = m.gen
    out[0] = w
    return 0


# the forwarded properties (extension mqttprops) of the last MQTT message, and
# its payload when that is not its data (a structured CloudEvent; None: the data)
cdef WebJson _mqtt_fwd
cdef object _mqtt_fwd_payload = None
# and the QoS it was published with (its extension mqttqos), FWD_RETAIN, FWD_EXPIRY
cdef int _mqtt_fwd_qos = 0
cdef int _mqtt_fwd_flags = 0


cdef int _fwd_scan(WireMsg *m, WebJson *w) except -1:
    """``_fwd_get`` in C: the extension ``mqttprops`` (bin) copied into
    ``w``, ``mqttqos``, ``mqttretain`` and ``mqttexpiry`` noted; 0 where
    Python decides (a structured CloudEvent, ``mqttce``; a map32, a value
    of another type than the door writes, a malformed block)."""
    global _mqtt_fwd_qos, _mqtt_fwd_flags
    cdef Py_ssize_t restn = _rd32(m.rec + 12)
    cdef Py_ssize_t off = (EV_HEADER + (EV_GENID if <uint8_t>m.rec[1] & EVF_GENID
                                        else _rd16(m.rec + 4))
                           + _rd16(m.rec + 6) + _rd16(m.rec + 8) + _rd16(m.rec + 10))
    cdef const uint8_t *b = <const uint8_t *>m.rec + off
    cdef Py_ssize_t i = 1, count, j, kn, vn, e
    cdef uint8_t c
    if off + restn > m.rec_n:
        return 0
    c = b[0]
    if 0x80 <= c <= 0x8f:
        count = c & 0x0f
    elif c == 0xde:
        count = _mp_size(b, &i, restn, 2)
    else:
        return 0
    for j in range(count):
        kn = _mp_str(b, &i, restn)
        if kn < 0:
            return 0
        if kn == 6 and memcmp(b + i, b'mqttce', 6) == 0:
            return 0
        if kn == 9 and memcmp(b + i, b'mqttprops', 9) == 0:
            i += kn
            if i >= restn or not 0xc4 <= b[i] <= 0xc6:
                return 0
            c = b[i]
            i += 1
            vn = _mp_size(b, &i, restn, 1 << (c - 0xc4))
            if vn < 0 or vn > restn - i or vn > MQTT_VBI_MAX:
                return 0
            _wj_room(w, vn)
            memcpy(w.buf, b + i, vn)
            w.n = vn
            i += vn
            continue
        if kn == 7 and memcmp(b + i, b'mqttqos', 7) == 0:
            i += kn
            if i >= restn or b[i] > 2:
                return 0
            _mqtt_fwd_qos = b[i]
            i += 1
            continue
        if kn == 10 and memcmp(b + i, b'mqttretain', 10) == 0:
            i += kn
            if i >= restn or (b[i] != 0xc3 and b[i] != 0xc2):
                return 0
            if b[i] == 0xc3:
                _mqtt_fwd_flags |= FWD_RETAIN
            i += 1
            continue
        if kn == 10 and memcmp(b + i, b'mqttexpiry', 10) == 0:
            _mqtt_fwd_flags |= FWD_EXPIRY
        i += kn
        e = _mp_skip(b, i, restn, 0)      # (cesql.pyx's)
        if e < 0:
            return 0
        i = e
    return 1 if i == restn else 0


cdef int _fwd_get(WireMsg *m, WebJson **out) except -1:
    """The MQTT 5 properties a message published through the MQTT door
    carries to its subscribers (the bytes of its extension ``mqttprops``;
    none if it has no other attributes), made once per message; and
    ``_mqtt_fwd_payload``."""
    global _mqtt_fwd_payload, _mqtt_fwd_qos, _mqtt_fwd_flags
    cdef WebJson *w = &_mqtt_fwd
    cdef Event ev
    cdef dict rest
    cdef object fwd, q
    if w.gen != m.gen or m.gen == 0:
        w.gen = 0
        w.n = 0
        _mqtt_fwd_payload = None
        _mqtt_fwd_qos = 0
        _mqtt_fwd_flags = 0
        if _rd32(m.rec + 12) and not _fwd_scan(m, w):
            w.n = 0                     # (Python decides: what C copied is dropped)
            _mqtt_fwd_qos = 0
            _mqtt_fwd_flags = 0
            if m.event != NULL:
                ev = <Event>m.event
            else:
                ev = _ev_decode(<object>m.subject_obj, m.rec, m.rec_n, m.seq, <object>m.stream,
                                m.ts, None)
            rest = ev._restd()
            fwd = rest.get('mqttprops') if rest is not None else None
            if type(fwd) is bytes and len(<bytes>fwd) <= MQTT_VBI_MAX:
                _wj_room(w, len(<bytes>fwd))
                memcpy(w.buf, PyBytes_AS_STRING(fwd), len(<bytes>fwd))
                w.n = len(<bytes>fwd)
            if rest is not None and rest.get('mqttce') == 'structured':
                _mqtt_fwd_payload = _structured_payload(ev)
            if rest is not None:
                q = rest.get('mqttqos')
                if type(q) is int and 0 <= q <= 2:
                    _mqtt_fwd_qos = q
                if rest.get('mqttretain') is True:
                    _mqtt_fwd_flags |= FWD_RETAIN
                if 'mqttexpiry' in rest:
                    _mqtt_fwd_flags |= FWD_EXPIRY
        w.gen = m.gen
    out[0] = w
    return 0


def _structured_payload(event):
    """The payload a structured CloudEvent published through the MQTT door
    goes on with to MQTT subscribers: its JSON (without the door's own
    ``mqtt*`` extensions and the lineage)."""
    from fastflow.event import to_json
    attrs = {k: v for k, v in event.attributes().items()
             if not k.startswith('mqtt') and k not in ('specversion', 'ffhops', 'fftrace')}
    return to_json(Event(event.routing_subject, event.data, **attrs), False)


cdef int _mqtt_parts(WireMsg *m, int version, int mode, bint lineage, const char **d,
                     Py_ssize_t *dn, const char **pp, Py_ssize_t *pn) except -1:
    """The payload ``d[:dn]`` and the MQTT 5 properties ``pp[:pn]`` (without
    a subscription identifier; none for 3.1.1) of ``m`` for a subscriber
    of ``version`` in ``mode``: what MQTT sent for a message of the MQTT
    door, the mode's for the others."""
    cdef WebJson *w
    cdef Py_ssize_t off
    pp[0] = NULL
    pn[0] = 0
    if mode == MQTT_MODE_STRUCTURED and not <uint8_t>m.rec[1] & EVF_MQTT:
        _wj_get(m, lineage, &w)
        d[0] = w.buf
        dn[0] = w.n
        if version == 5:
            pp[0] = PyBytes_AS_STRING(_CT_STRUCTURED)
            pn[0] = PyBytes_GET_SIZE(_CT_STRUCTURED)
        return 0
    if m.data != NULL:
        d[0] = m.data
        dn[0] = m.data_n
    else:
        off = _ev_data_offset(m.rec, m.rec_n)
        d[0] = m.rec + off
        dn[0] = m.rec_n - off
    if <uint8_t>m.rec[1] & EVF_MQTT:
        _fwd_get(m, &w)
        if _mqtt_fwd_payload is not None:
            d[0] = PyBytes_AS_STRING(_mqtt_fwd_payload)
            dn[0] = PyBytes_GET_SIZE(_mqtt_fwd_payload)
        if version != 5:
            return 0
    elif mode == MQTT_MODE_BINARY and version == 5:
        _props_get(m, lineage, &w)
    else:
        return 0
    pp[0] = w.buf
    pn[0] = w.n
    return 0


cdef dict _MODES = {'raw': MQTT_MODE_RAW, 'binary': MQTT_MODE_BINARY,
                    'structured': MQTT_MODE_STRUCTURED}


cdef int _mqtt_mode(int version, str mode) except -1:
    """The MqttMode of ``mode`` for a subscriber of MQTT ``version``, or
    ValueError naming what does not go (MqttTarget and mqtt_parts)."""
    if version not in (3, 4, 5):
        raise ValueError('MQTT protocol version must be 3, 4 (3.1.1) or 5, got {}'.format(
            version))
    if mode not in _MODES:
        raise ValueError("MQTT delivery mode must be 'raw', 'binary' or 'structured', "
                         "got {!r}".format(mode))
    if mode == 'binary' and version != 5:
        raise ValueError("the binary mode needs MQTT 5 (properties); version {} has "
                         "'raw' and 'structured'".format(version))
    return _MODES[mode]


def mqtt_parts(Event event not None, int version=5, str mode='binary', bint lineage=False):
    """``(properties, payload)`` (bytes) of a PUBLISH carrying ``event`` to
    a subscriber of MQTT ``version`` (3, 4 or 5) in ``mode`` ("raw",
    "binary" (5 only) or "structured"), as MqttTarget writes it:
    ``properties`` the MQTT 5 property block's content without its length
    and without a subscription identifier (b'' for 3.1.1).  An event
    published through the MQTT door (``from_mqtt``) comes out as MQTT
    sent it, whatever the mode."""
    cdef WireMsg m
    cdef bytes rec, subject_b
    cdef const char *d
    cdef const char *pp
    cdef Py_ssize_t dn, pn
    cdef int md
    md = _mqtt_mode(version, mode)
    if event.routing_subject is None:
        raise ValueError('mqtt_parts: the event has no routing subject')
    rec = event.encode()
    subject = event.routing_subject
    subject_b = (<str>subject).encode('utf-8', 'surrogatepass')
    m.subject = PyBytes_AS_STRING(subject_b)
    m.subject_n = len(subject_b)
    _stored_msg(&m, subject, PyBytes_AS_STRING(rec), len(rec), event.stream, event.seq,
                event.ts)
    m.event = <PyObject *>event
    _mqtt_parts(&m, version, md, lineage, &d, &dn, &pp, &pn)
    return (PyBytes_FromStringAndSize(pp, pn) if pn else b'',
            PyBytes_FromStringAndSize(d, dn) if dn else b'')


# -- the Python writer of the binary mode's properties: what C leaves to it ---------


def _mqtt_str(s):
    """``s`` as the bytes of an MQTT string with its length (NUL and
    surrogates as U+FFFD), or None past MQTT_STR_MAX bytes."""
    b = ''.join(['\ufffd' if c == '\x00' or '\ud800' <= c <= '\udfff' else c
                 for c in s]).encode('utf-8')
    if len(b) > MQTT_STR_MAX:
        return None
    return len(b).to_bytes(2, 'big') + b


def _canonical(v):
    """An attribute's value as its CloudEvents canonical string (None: a
    type CloudEvents has no string for)."""
    if type(v) is str:
        return v
    if v is True:
        return 'true'
    if v is False:
        return 'false'
    if type(v) is int:
        return str(v)
    if type(v) is bytes:
        return base64.b64encode(v).decode('ascii')
    return None


def _binary_props(event, lineage):
    """The binary mode's MQTT 5 properties of ``event`` (without a
    subscription identifier): a User Property per attribute but
    datacontenttype (ffhops and fftrace only with ``lineage``), then
    datacontenttype as the Content Type property."""
    out = []
    ct = None
    for name, value in event.attributes().items():
        if name == 'datacontenttype':
            ct = value
            continue
        if not lineage and name in ('ffhops', 'fftrace'):
            continue
        v = _canonical(value)
        if v is None:
            continue
        k = _mqtt_str(name)
        v = _mqtt_str(v)
        if k is not None and v is not None:
            out.append(b'\x26' + k + v)
    if ct is not None:
        v = _canonical(ct)
        v = _mqtt_str(v) if v is not None else None
        if v is not None:
            out.append(b'\x03' + v)
    return b''.join(out)


# -- QoS 1 in C: a connection's packet ids, window and queue --------------------------


cdef inline double _wall_now() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class MqttFlight:
    """The QoS 1 deliveries of one MQTT connection whose session ends with
    it (clean session, session expiry 0), kept in C: its MqttTargets of
    QoS 1 subscriptions write each PUBLISH here, which gives it a packet
    identifier (1 .. 32767; the door's Python side takes the ones above
    for QoS 2 and what it sends itself) and writes it into ``outbuf`` while
    fewer than ``receive_max`` messages (its own plus ``others``, the ones
    Python has in flight) await their PUBACK, and at most 1,024 of its
    own; the rest waits in its queue, in order, and goes out as PUBACKs
    come (``ack``, which the parser calls in C).

    Limits: at most ``max_queued`` messages and the OutBuf's
    ``max_pending`` bytes wait; a message past either is dropped (counted
    in ``dropped``: the newest go, as mosquitto's max_queued_messages).  A
    message with a Message Expiry Interval (``push``'s ``deadline``) that
    passes while it waits is dropped (``expired``); one sent goes with the
    interval left.  ``wake`` (no arguments) is called when an
    acknowledgement frees room and nothing of its own waits: the door's
    Python side sends what it keeps."""

    def __cinit__(self):
        self.next_id = 1

    def __init__(self, OutBuf outbuf not None, int receive_max=65535,
                 Py_ssize_t max_queued=10000):
        cdef int ring = 16
        if not 1 <= receive_max <= 65535:
            raise ValueError('receive_max must be 1..65535, got {}'.format(receive_max))
        if max_queued < 0:
            raise ValueError('max_queued must be >= 0, got {}'.format(max_queued))
        while ring < receive_max and ring < MQTT_FLIGHT_RING:
            ring <<= 1
        if self.slots == NULL:
            self.slots = <uint16_t *>calloc(ring, sizeof(uint16_t))
            if self.slots == NULL:
                raise MemoryError()
            self.mask = ring - 1
        self.outbuf = outbuf
        self.receive_max = receive_max
        self.max_queued = max_queued

    def __dealloc__(self):
        free(self.slots)
        free(self.q)

    @property
    def window(self):
        """Messages it may have in flight at most (its ring)."""
        return self.mask + 1

    cdef inline bint _room(self) noexcept:
        return (self.inflight + self.others < self.receive_max
                and self.slots[self.next_id & self.mask] == 0)

    cdef char *_begin(self, Py_ssize_t size) except? NULL:
        """Room for a packet of ``size`` bytes: in the OutBuf when it goes
        out at once (``now``), else in the queue; NULL: dropped (the
        queue's limits; the OutBuf's, which counts it)."""
        cdef Py_ssize_t need, bound
        cdef char *p
        if self.queued == 0 and self._room():
            self.now = True
            return self.outbuf._reserve(size)
        self.now = False
        bound = self.outbuf.max_pending
        if self.queued >= self.max_queued or (bound and self.queued_bytes + size > bound):
            self.dropped += 1
            return NULL
        need = sizeof(FlightEntry) + ((size + 7) & ~7)
        if self.qtail + need > self.qcap:
            if self.qhead:
                memmove(self.q, self.q + self.qhead, self.qtail - self.qhead)
                self.qtail -= self.qhead
                self.qhead = 0
            _grow(<void **>&self.q, &self.qcap, self.qtail + need, 1, 4096)
        p = self.q + self.qtail
        return p + sizeof(FlightEntry)

    cdef int _commit(self, char *p, Py_ssize_t size, Py_ssize_t pid_off, Py_ssize_t exp_off,
                     double deadline, bint was_empty) except -1:
        """The packet at ``p`` (from ``_begin``) is complete: sent with the
        next packet id, or queued."""
        cdef FlightEntry *e
        cdef int pid
        if self.now:
            pid = self.next_id
            self.next_id = pid % MQTT_FLIGHT_IDS + 1
            self.slots[pid & self.mask] = <uint16_t>pid
            self.inflight += 1
            self.sent += 1
            p[pid_off] = <char>(pid >> 8)
            p[pid_off + 1] = <char>(pid & 0xff)
            self.outbuf._wrote(size, was_empty, True)
            return 0
        e = <FlightEntry *>(p - sizeof(FlightEntry))
        e.size = <int32_t>size
        e.pid_off = <int32_t>pid_off
        e.exp_off = <int32_t>exp_off
        e.deadline = deadline
        self.qtail += sizeof(FlightEntry) + ((size + 7) & ~7)
        self.queued += 1
        self.queued_bytes += size
        return 0

    cdef int _ack(self, int pid) except -1:
        """PUBACK ``pid``: 1 if it was one of its packet ids (freed: what
        waits goes out), 0 if not."""
        if pid < 1 or pid > MQTT_FLIGHT_IDS or self.slots[pid & self.mask] != pid:
            return 0
        self.slots[pid & self.mask] = 0
        self.inflight -= 1
        self.acked += 1
        if self.queued:
            self._drain()
        if self.queued == 0 and self.wake is not None \
                and self.inflight + self.others < self.receive_max:
            self.wake()
        return 1

    cdef int _drain(self) except -1:
        """Send what waits while there is room, in order."""
        cdef FlightEntry *e
        cdef OutBuf ob = self.outbuf
        cdef char *o
        cdef double now = 0
        cdef int64_t left
        cdef Py_ssize_t size, pid_off
        cdef bint was_empty
        while self.queued and self._room():
            e = <FlightEntry *>(self.q + self.qhead)
            size = e.size
            if e.deadline > 0:
                if now == 0:
                    now = _wall_now()
                if e.deadline <= now:
                    self.expired += 1
                    self._pop(size)
                    continue
                if e.exp_off >= 0:      # the interval left (MQTT 5 section 3.3.2.3.3)
                    left = <int64_t>ceil(e.deadline - now)
                    _wr32be(<char *>e + sizeof(FlightEntry) + e.exp_off, left)
            was_empty = ob.n == 0
            o = ob._reserve(size)
            # (the entry again: a callback of the OutBuf's may have moved the queue)
            e = <FlightEntry *>(self.q + self.qhead)
            pid_off = e.pid_off
            self._pop(size)
            if o == NULL:
                continue                # (the OutBuf counts it; its connection is cut)
            memcpy(o, <char *>e + sizeof(FlightEntry), size)    # (popped, not yet overwritten)
            self.now = True
            self._commit(o, size, pid_off, -1, 0, was_empty)
        return 0

    cdef inline void _pop(self, Py_ssize_t size) noexcept:
        """The entry at the head (``size`` bytes of packet) leaves the queue."""
        self.qhead += sizeof(FlightEntry) + ((size + 7) & ~7)
        self.queued -= 1
        self.queued_bytes -= size
        if self.queued == 0:
            self.qhead = self.qtail = 0

    def push(self, packet, Py_ssize_t pid_offset, deadline=None, Py_ssize_t expiry_offset=-1):
        """Send (or queue) ``packet``, a complete QoS 1 PUBLISH whose packet
        identifier (2 bytes at ``pid_offset``) it fills in; ``deadline``:
        when it expires (epoch seconds), then ``expiry_offset``: where the
        4 bytes of its Message Expiry Interval are (-1: none), rewritten
        with the time left when it goes out of the queue.  Returns False
        if it was dropped (the queue's limits or the OutBuf's)."""
        cdef Py_buffer view
        cdef char *p
        cdef bint was_empty = self.outbuf.n == 0
        cdef double dl = 0 if deadline is None else deadline
        PyObject_GetBuffer(packet, &view, PyBUF_SIMPLE)
        try:
            if not 0 <= pid_offset <= view.len - 2 or expiry_offset > view.len - 4:
                raise ValueError('pid_offset {} or expiry_offset {} outside a packet of {} '
                                 'bytes'.format(pid_offset, expiry_offset, view.len))
            if deadline is not None and dl <= _wall_now():
                self.expired += 1
                return False
            p = self._begin(view.len)
            if p == NULL:
                return False
            memcpy(p, view.buf, view.len)
            self._commit(p, view.len, pid_offset, expiry_offset, dl, was_empty)
            return True
        finally:
            PyBuffer_Release(&view)

    def ack(self, int pid):
        """A PUBACK of ``pid`` (one that did not come through the parser's
        C path): True if it was one of its packet ids."""
        return self._ack(pid) == 1

    def owns(self, int pid):
        """Whether ``pid`` is one of its packet identifiers in flight."""
        return 1 <= pid <= MQTT_FLIGHT_IDS and self.slots[pid & self.mask] == pid

    def drain(self):
        """Send what waits while there is room (after ``others`` fell)."""
        self._drain()


# -- the target ---------------------------------------------------------------------


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class MqttTarget(WireTarget):
    """An MQTT subscription delivered at QoS 0: each message one PUBLISH
    packet (RETAIN 0), its topic the routing subject translated back
    (``mqtt_subject_topic``).  ``version``: 3 (3.1), 4 (3.1.1) or 5;
    ``mode``: "raw" (the data only), "binary" (MQTT 5: CloudEvents
    attributes as properties) or "structured" (the event's CloudEvents
    JSON); ``subscription_identifier`` (MQTT 5, 1..268435455; None: none);
    ``max_packet``: the client's Maximum Packet Size (0: no limit);
    ``lineage``: ffhops and fftrace go too.

    A message whose subject has no topic (a token with '+' or '#', or the
    subject '/', whose topic would be empty) is counted in
    ``untranslatable``, a packet over ``max_packet`` (or the protocol's
    limit) in ``too_large``; neither is written, and the router counts
    both as delivered (MQTT 5 section 3.1.2.25: the server behaves as if
    it had sent them).  A packet the OutBuf drops (its limit) is counted
    there, as for every target.

    ``qos`` 1 (with ``flight``, an MqttFlight on the same OutBuf, and
    ``fallback``): a QoS 1 subscription.  A message published through
    the MQTT door at QoS 1 or 2 goes at QoS 1 through ``flight`` (its
    packet id, window and queue; one the queue's limits drop counts as
    dropped here too); the others at QoS 0, as MQTT has it (the lower of
    the two).  One with a Message Expiry Interval, or published retained
    to a subscription with ``retain_as_published``, goes to
    ``fallback(event)`` (the door's Python side, which sends it through
    ``flight.push``)."""

    def __init__(self, OutBuf outbuf not None, int version=4, str mode='raw',
                 subscription_identifier=None, Py_ssize_t max_packet=0, bint echo=True,
                 bint lineage=False, int qos=0, MqttFlight flight=None,
                 bint retain_as_published=False, fallback=None):
        cdef char tmp[8]
        cdef char *e
        if qos != 0 and qos != 1:
            raise ValueError('qos must be 0 or 1 (QoS 2 is the door\'s), got {}'.format(qos))
        if qos and (flight is None or fallback is None):
            raise ValueError('qos 1 needs a flight and a fallback')
        if flight is not None and flight.outbuf is not outbuf:
            raise ValueError('the flight writes to another OutBuf')
        WireTarget.__init__(self, outbuf, echo)
        if subscription_identifier is not None:
            if version != 5:
                raise ValueError('a subscription identifier needs MQTT 5, version is {}'.format(
                    version))
            if not 1 <= subscription_identifier <= MQTT_VBI_MAX:
                raise ValueError('subscription identifier must be 1..{}, got {}'.format(
                    MQTT_VBI_MAX, subscription_identifier))
            tmp[0] = <char>MQTT_PROP_SUBSCRIPTION_ID
            e = _put_vbi(tmp + 1, subscription_identifier)
            self._sid_prop = PyBytes_FromStringAndSize(tmp, e - tmp)
        else:
            self._sid_prop = b''
        if max_packet < 0:
            raise ValueError('max_packet must be >= 0 (0: no limit), got {}'.format(max_packet))
        self.version = version
        self.mode = mode
        self._mode = _mqtt_mode(version, mode)
        self.subscription_identifier = subscription_identifier
        self.max_packet = max_packet
        self.lineage = lineage
        self.qos = qos
        self.flight = flight
        self.retain_as_published = retain_as_published
        self.fallback = fallback

    cdef int _write(self, WireMsg *m) except -1:
        cdef OutBuf ob = self.outbuf
        cdef bint was_empty = ob.n == 0
        cdef const char *d
        cdef const char *pp
        cdef Py_ssize_t dn, tn, pn, props = 0, rl, size, pid_off = 0
        cdef int q = 0
        cdef char *o
        cdef char *o0
        cdef Event ev
        if self._subject is None or PyBytes_GET_SIZE(self._subject) != m.subject_n \
                or memcmp(PyBytes_AS_STRING(self._subject), m.subject, m.subject_n) != 0:
            self._translate(m)
        if self._topic is None:
            self.untranslatable += 1
            return 1
        tn = PyBytes_GET_SIZE(self._topic)
        _mqtt_parts(m, self.version, self._mode, self.lineage, &d, &dn, &pp, &pn)
        if self.qos and <uint8_t>m.rec[1] & EVF_MQTT and _mqtt_fwd_qos:
            # (_mqtt_parts read the message's extensions)
            if _mqtt_fwd_flags & FWD_EXPIRY or (self.retain_as_published
                                                 and _mqtt_fwd_flags & FWD_RETAIN):
                if m.event != NULL:
                    ev = <Event>m.event
                else:
                    ev = _ev_decode(<object>m.subject_obj, m.rec, m.rec_n, m.seq,
                                    <object>m.stream, m.ts, None)
                self.fallback(ev)
                return 1
            q = 1
        if self.version == 5:
            props = PyBytes_GET_SIZE(self._sid_prop) + pn
            if props > MQTT_VBI_MAX:
                self.too_large += 1
                return 1
            props += _vbi_size(props)
        rl = 2 + tn + props + dn + 2 * q
        if rl > MQTT_VBI_MAX:
            self.too_large += 1
            return 1
        size = 1 + _vbi_size(rl) + rl
        if self.max_packet and size > self.max_packet:
            self.too_large += 1
            return 1
        if q:
            o0 = self.flight._begin(size)
        else:
            o0 = ob._reserve(size)
        if o0 == NULL:
            return 0
        o0[0] = <char>(MQTT_PUBLISH_QOS1 if q else MQTT_PUBLISH)
        o = _put_vbi(o0 + 1, rl)
        o = _put_lit(_put_u16(o, tn), PyBytes_AS_STRING(self._topic), tn)
        if q:
            pid_off = o - o0
            o += 2                      # (the packet id: the flight's)
        if self.version == 5:
            o = _put_vbi(o, PyBytes_GET_SIZE(self._sid_prop) + pn)
            o = _put_lit(o, PyBytes_AS_STRING(self._sid_prop), PyBytes_GET_SIZE(self._sid_prop))
            if pn:
                o = _put_lit(o, pp, pn)
        if dn:
            o = _put_lit(o, d, dn)
        if FASTFLOW_DEBUG and o - o0 != size:
            raise FastflowError('MqttTarget._write: wrote {} bytes, sized {}'.format(
                o - o0, size))
        if q:
            self.flight._commit(o0, size, pid_off, -1, 0, was_empty)
        else:
            ob._wrote(size, was_empty, True)
        return 1

    cdef int _translate(self, WireMsg *m) except -1:
        """The topic of ``m``'s subject (None: it has none), kept for the
        messages of that subject that follow."""
        cdef bytes topic = PyBytes_FromStringAndSize(NULL, m.subject_n)
        cdef Py_ssize_t tn = _topic_of(m.subject, m.subject_n, PyBytes_AS_STRING(topic))
        self._subject = PyBytes_FromStringAndSize(m.subject, m.subject_n)
        if tn <= 0 or tn > MQTT_STR_MAX:
            self._topic = None
        else:
            self._topic = topic[:tn]
        return 0
