# MQTT 3.1, 3.1.1 and 5.0 as a front door, the input side (docs/mqtt.md):
# MqttParser cuts the packets a client sends out of a byte stream fed in any
# pieces, checks them as the specifications say (MQTT 3.1.1 and 5.0, the
# "MUST" rules a single packet can break) and routes a plain QoS 0 PUBLISH
# to the router in C as an event with the defaults (a new id, the flow's
# source, type = the subject its topic translates to).  The rest goes to
# Python as entries (fastflow/server/mqtt.py handles them).

from libc.string cimport memchr

cdef enum MqttPacket:
    MQ_CONNECT = 1
    MQ_CONNACK = 2
    MQ_PUBLISH = 3
    MQ_PUBACK = 4
    MQ_PUBREC = 5
    MQ_PUBREL = 6
    MQ_PUBCOMP = 7
    MQ_SUBSCRIBE = 8
    MQ_SUBACK = 9
    MQ_UNSUBSCRIBE = 10
    MQ_UNSUBACK = 11
    MQ_PINGREQ = 12
    MQ_PINGRESP = 13
    MQ_DISCONNECT = 14
    MQ_AUTH = 15

cdef enum MqttReason:               # the reason codes of the errors (MQTT 5.0 section 2.4)
    MQR_MALFORMED = 0x81
    MQR_PROTOCOL = 0x82
    MQR_UNSUPPORTED_VERSION = 0x84
    MQR_TOPIC_NAME_INVALID = 0x90
    MQR_TOPIC_ALIAS_INVALID = 0x94
    MQR_PACKET_TOO_LARGE = 0x95

cdef enum MqttWhere:                # where a client may send a property (bits)
    MQK_CONNECT = 1
    MQK_WILL = 2
    MQK_PUBLISH = 4
    MQK_PUBACK = 8                  # PUBACK, PUBREC, PUBREL, PUBCOMP
    MQK_SUBSCRIBE = 16
    MQK_UNSUBSCRIBE = 32
    MQK_DISCONNECT = 64
    MQK_AUTH = 128
    MQK_ALL = 255

cdef enum MqttPropType:
    MQT_BYTE = 1
    MQT_INT2 = 2
    MQT_INT4 = 3
    MQT_VBI = 4
    MQT_STR = 5
    MQT_BIN = 6
    MQT_PAIR = 7

cdef enum:
    MQ_PROP_IDS = 0x2B              # identifiers 0 .. 0x2A
    MQ_STR_MAX = 65535              # bytes of an MQTT string

_MQ_PACKET_NAMES = ('reserved', 'CONNECT', 'CONNACK', 'PUBLISH', 'PUBACK', 'PUBREC', 'PUBREL',
                    'PUBCOMP', 'SUBSCRIBE', 'SUBACK', 'UNSUBSCRIBE', 'UNSUBACK', 'PINGREQ',
                    'PINGRESP', 'DISCONNECT', 'AUTH')

# MQTT 5.0 section 2.2.2.2: identifier -> (name, type, where a client may send it);
# the ones only servers send (CONNACK's) are known but allowed nowhere
_MQ_PROPERTIES = {
    0x01: ('payload_format_indicator', MQT_BYTE, MQK_PUBLISH | MQK_WILL),
    0x02: ('message_expiry_interval', MQT_INT4, MQK_PUBLISH | MQK_WILL),
    0x03: ('content_type', MQT_STR, MQK_PUBLISH | MQK_WILL),
    0x08: ('response_topic', MQT_STR, MQK_PUBLISH | MQK_WILL),
    0x09: ('correlation_data', MQT_BIN, MQK_PUBLISH | MQK_WILL),
    0x0B: ('subscription_identifier', MQT_VBI, MQK_PUBLISH | MQK_SUBSCRIBE),
    0x11: ('session_expiry_interval', MQT_INT4, MQK_CONNECT | MQK_DISCONNECT),
    0x12: ('assigned_client_identifier', MQT_STR, 0),
    0x13: ('server_keep_alive', MQT_INT2, 0),
    0x15: ('authentication_method', MQT_STR, MQK_CONNECT | MQK_AUTH),
    0x16: ('authentication_data', MQT_BIN, MQK_CONNECT | MQK_AUTH),
    0x17: ('request_problem_information', MQT_BYTE, MQK_CONNECT),
    0x18: ('will_delay_interval', MQT_INT4, MQK_WILL),
    0x19: ('request_response_information', MQT_BYTE, MQK_CONNECT),
    0x1A: ('response_information', MQT_STR, 0),
    0x1C: ('server_reference', MQT_STR, MQK_DISCONNECT),
    0x1F: ('reason_string', MQT_STR, MQK_PUBACK | MQK_DISCONNECT | MQK_AUTH),
    0x21: ('receive_maximum', MQT_INT2, MQK_CONNECT),
    0x22: ('topic_alias_maximum', MQT_INT2, MQK_CONNECT),
    0x23: ('topic_alias', MQT_INT2, MQK_PUBLISH),
    0x24: ('maximum_qos', MQT_BYTE, 0),
    0x25: ('retain_available', MQT_BYTE, 0),
    0x26: ('user_property', MQT_PAIR, MQK_ALL),
    0x27: ('maximum_packet_size', MQT_INT4, MQK_CONNECT),
    0x28: ('wildcard_subscription_available', MQT_BYTE, 0),
    0x29: ('subscription_identifier_available', MQT_BYTE, 0),
    0x2A: ('shared_subscription_available', MQT_BYTE, 0),
}

# the reason codes a client may put in each packet (MQTT 5.0 sections 3.4-3.7, 3.14, 3.15)
_MQ_PUBACK_REASONS = frozenset((0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99))
_MQ_PUBREL_REASONS = frozenset((0x00, 0x92))
_MQ_DISCONNECT_REASONS = frozenset((0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B,
                                    0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96,
                                    0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F,
                                    0xA0, 0xA1, 0xA2))
_MQ_AUTH_REASONS = frozenset((0x00, 0x18, 0x19))

cdef uint8_t _mq_prop_type[MQ_PROP_IDS]     # 0: unknown identifier
cdef uint8_t _mq_prop_where[MQ_PROP_IDS]
cdef list _mq_prop_names = [None] * MQ_PROP_IDS


cdef _init_mqtt_in():
    cdef int i
    for i in range(MQ_PROP_IDS):
        _mq_prop_type[i] = 0
        _mq_prop_where[i] = 0
    for i, (name, kind, where) in _MQ_PROPERTIES.items():
        _mq_prop_type[i] = kind
        _mq_prop_where[i] = where
        _mq_prop_names[i] = name


_init_mqtt_in()


# the extension block of a QoS 1 PUBLISH routed in C: {"mqttqos": 1}
cdef const char *_MQ_QOS1_EXT = b'\x81\xa7mqttqos\x01'


cdef object _mq_malformed(str text):
    return MqttError(MQR_MALFORMED, 'malformed packet: ' + text)


cdef object _mq_protocol(str text):
    return MqttError(MQR_PROTOCOL, 'protocol error: ' + text)


# -- reading a packet's body ------------------------------------------------------------------

cdef inline const char *_mq_take(MqReader *r, Py_ssize_t k, str what) except NULL:
    cdef const char *s
    if r.end - r.i < k:
        raise _mq_malformed('{} needs {} bytes, {} left'.format(what, k, r.end - r.i))
    s = r.p + r.i
    r.i += k
    return s


cdef inline int _mq_byte(MqReader *r, str what) except -1:
    return <uint8_t>_mq_take(r, 1, what)[0]


cdef inline int _mq_int2(MqReader *r, str what) except -1:
    cdef const char *s = _mq_take(r, 2, what)
    return (<uint8_t>s[0] << 8) | <uint8_t>s[1]


cdef inline int64_t _mq_int4(MqReader *r, str what) except -1:
    cdef const char *s = _mq_take(r, 4, what)
    return ((<int64_t><uint8_t>s[0] << 24) | (<uint8_t>s[1] << 16) | (<uint8_t>s[2] << 8)
            | <uint8_t>s[3])


cdef int64_t _mq_vbi(MqReader *r, str what) except -1:
    cdef int64_t v = 0
    cdef int k, b
    for k in range(4):
        b = _mq_byte(r, what)
        v |= <int64_t>(b & 0x7F) << (7 * k)
        if not b & 0x80:
            return v
    raise _mq_malformed('{} is a variable byte integer of more than 4 bytes'.format(what))


cdef inline Py_ssize_t _mq_len(MqReader *r, str what) except -1:
    """The 2-byte length of a string or of binary data."""
    if r.end - r.i < 2:
        raise _mq_malformed('{} needs {} bytes, {} left'.format(
            'the length of ' + what, 2, r.end - r.i))
    r.i += 2
    return (<uint8_t>r.p[r.i - 2] << 8) | <uint8_t>r.p[r.i - 1]


cdef bytes _mq_bin(MqReader *r, str what):
    cdef Py_ssize_t n = _mq_len(r, what)
    return PyBytes_FromStringAndSize(_mq_take(r, n, what), n)


cdef str _mq_decode(const char *s, Py_ssize_t n, str what):
    """An MQTT UTF-8 string: valid UTF-8 (no surrogates), no U+0000
    (MQTT 5.0 section 1.5.4)."""
    cdef str text
    try:
        text = PyUnicode_DecodeUTF8(s, n, 'strict')
    except UnicodeDecodeError:
        raise _mq_malformed('{} is not valid UTF-8'.format(what)) from None
    if n and memchr(s, 0, n) != NULL:
        raise _mq_malformed('{} contains U+0000'.format(what))
    return text


cdef str _mq_str(MqReader *r, str what):
    cdef Py_ssize_t n = _mq_len(r, what)
    return _mq_decode(_mq_take(r, n, what), n, what)


cdef dict _mq_props(MqReader *r, str where, int bit):
    """The property block of ``where`` (a packet, or the will): a dict."""
    cdef int64_t n = _mq_vbi(r, 'the property length of ' + where)
    cdef int64_t pid, v = 0
    cdef Py_ssize_t outer = r.end
    cdef int kind
    cdef dict props = {}
    cdef str name
    if n > r.end - r.i:
        raise _mq_malformed('the properties of {} need {} bytes, {} left'.format(
            where, n, r.end - r.i))
    r.end = r.i + n
    while r.i < r.end:
        pid = _mq_vbi(r, 'a property identifier of ' + where)
        kind = _mq_prop_type[pid] if pid < MQ_PROP_IDS else 0
        if kind == 0:
            raise _mq_malformed('unknown property identifier 0x{:02X} in {}'.format(pid, where))
        name = _mq_prop_names[pid]
        if not _mq_prop_where[pid] & bit:
            raise _mq_protocol('the property {} is not allowed in {}'.format(name, where))
        if kind == MQT_PAIR:
            value = (_mq_str(r, 'the name of a user property'),
                     _mq_str(r, 'the value of a user property'))
            if name in props:
                (<list>props[name]).append(value)
            else:
                props[name] = [value]
            continue
        if kind == MQT_STR:
            props_value = _mq_str(r, name)
        elif kind == MQT_BIN:
            props_value = _mq_bin(r, name)
        else:
            if kind == MQT_BYTE:
                v = _mq_byte(r, name)
            elif kind == MQT_INT2:
                v = _mq_int2(r, name)
            elif kind == MQT_INT4:
                v = _mq_int4(r, name)
            else:
                v = _mq_vbi(r, name)
            props_value = v
            if pid == 0x0B:
                if v == 0:
                    raise _mq_protocol('subscription_identifier 0 in {}'.format(where))
                if bit == MQK_PUBLISH:          # (as many as there are)
                    if name in props:
                        (<list>props[name]).append(props_value)
                    else:
                        props[name] = [props_value]
                    continue
        if name in props:
            raise _mq_protocol('{} carries the property {} more than once'.format(where, name))
        if kind != MQT_STR and kind != MQT_BIN:
            if v == 0 and (pid == 0x21 or pid == 0x27):
                raise _mq_protocol('{} 0 in {}'.format(name, where))
            if v > 1 and (pid == 0x01 or pid == 0x17 or pid == 0x19):
                raise _mq_protocol('{} {} in {}: 0 or 1 expected'.format(name, v, where))
            if v == 0 and pid == 0x23:
                raise MqttError(MQR_TOPIC_ALIAS_INVALID, 'topic alias 0 in ' + where)
        elif pid == 0x08 and ('+' in props_value or '#' in props_value):
            raise _mq_protocol("response_topic {!r} in {} has wildcards ('+', '#')".format(
                props_value, where))
        props[name] = props_value
    r.end = outer
    return props


cdef int _mq_done(MqReader *r, str where) except -1:
    if r.i != r.end:
        raise _mq_malformed('{} bytes after the end of {}'.format(r.end - r.i, where))
    return 0


cdef int _mq_check_topic_name(const char *s, Py_ssize_t n, str topic, str what) except -1:
    if n and (memchr(s, 43, n) != NULL or memchr(s, 35, n) != NULL):      # '+', '#'
        raise MqttError(MQR_TOPIC_NAME_INVALID, "invalid {} {!r}: a topic name has no "
                        "wildcards ('+', '#')".format(what, topic))
    return 0


# -- topic -> subject (the rules of fastflow/mqtt.py) ------------------------------------------

cdef object _mq_topic_subject(const char *t, Py_ssize_t tn):
    """The subject of the topic t[:tn] (valid UTF-8), None if it has none
    (then mqtt_topic_subject says why)."""
    cdef char buf[MAX_SUBJECT_LEN]
    cdef Py_ssize_t i, o = 0
    cdef int ntok = 1
    cdef uint8_t c
    cdef bint empty = True              # the level so far is empty
    if tn == 0:
        return None
    for i in range(tn):
        c = <uint8_t>t[i]
        if c == 47:                     # '/': a new level (an empty one was the token '/')
            if empty:
                if o >= MAX_SUBJECT_LEN:
                    return None
                buf[o] = 47
                o += 1
            if o >= MAX_SUBJECT_LEN:
                return None
            buf[o] = 46
            o += 1
            ntok += 1
            if ntok > MAX_TOKENS:
                return None
            empty = True
            continue
        empty = False
        # (UTF-8 bytes of other characters than ASCII are all >= 0x80)
        if c <= 32 or c == 127 or c == 42 or c == 62 or c == 43 or c == 35:
            return None                 # space, controls, '*', '>', '+', '#'
        if c == 46:                     # '.' -> '//'
            if o + 2 > MAX_SUBJECT_LEN:
                return None
            buf[o] = 47
            buf[o + 1] = 47
            o += 2
        else:
            if o >= MAX_SUBJECT_LEN:
                return None
            buf[o] = <char>c
            o += 1
    if empty:
        if o >= MAX_SUBJECT_LEN:
            return None
        buf[o] = 47
        o += 1
    return PyUnicode_DecodeUTF8(buf, o, NULL)


cdef object _mq_topic_error(object text, str reason):
    if len(text) > 80:
        text = text[:64] + '...'
    return SubjectError('invalid MQTT topic {!r}: {}'.format(text, reason))


cdef object _mq_topic_subject_error(str topic):
    """The SubjectError of a topic _mq_topic_subject refused (the words
    of fastflow/mqtt.py)."""
    cdef list tokens = []
    cdef int i = 0
    for level in topic.split('/'):
        i += 1
        if '+' in level or '#' in level:
            return _mq_topic_error(topic, 'wildcard {!r} in level {}: a topic name must be '
                                   'literal'.format('+' if '+' in level else '#', i))
        if not level:
            tokens.append('/')
            continue
        for c in level:
            if c == '\x00':
                return _mq_topic_error(topic, 'NUL character in level {}'.format(i))
            if c <= ' ' or c == '\x7f' or c == '*' or c == '>':
                return _mq_topic_error(topic, 'character {!r} in level {} {!r} cannot be '
                                       'carried by a fastflow subject'.format(c, i, level))
        tokens.append(level.replace('.', '//'))
    try:
        validate_subject('.'.join(tokens))
    except SubjectError as exc:
        return _mq_topic_error(topic, 'translates to {}'.format(exc))
    return _mq_topic_error(topic, 'no subject')     # (not reached: the two agree)


def mqtt_topic_subject(topic):
    """The fastflow subject of an MQTT topic name (str or bytes): the rules,
    results and errors (``SubjectError``) of
    ``fastflow.mqtt.mqtt_topic_to_subject``, in C."""
    cdef const char *t
    cdef Py_ssize_t tn
    if isinstance(topic, (bytes, bytearray)):
        try:
            topic = bytes(topic).decode('utf-8')
        except UnicodeDecodeError as exc:
            raise _mq_topic_error(topic.decode('utf-8', 'replace'),
                                  'not valid UTF-8: {}'.format(exc)) from None
    elif not isinstance(topic, str):
        raise TypeError('MQTT topic must be str or bytes, not {}'.format(type(topic).__name__))
    if not topic:
        raise _mq_topic_error(topic, 'empty')
    if not _as_utf8_fast(topic, &t, &tn):
        try:
            t = PyUnicode_AsUTF8AndSize(topic, &tn)
        except UnicodeEncodeError:
            raise _mq_topic_error(topic, 'not encodable as UTF-8') from None
    if tn > MQ_STR_MAX:
        raise _mq_topic_error(topic, '{} bytes, the limit is {}'.format(tn, MQ_STR_MAX))
    subject = _mq_topic_subject(t, tn)
    if subject is None:
        raise _mq_topic_subject_error(topic)
    return subject


# -- the parser ----------------------------------------------------------------------------

@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class MqttParser(DoorParser):
    """Cuts the MQTT packets a client sends (3.1: ``MQIsdp`` level 3,
    3.1.1: level 4, 5.0: level 5) out of a byte stream fed in any pieces
    (a ``DoorParser``).

    ``feed(data)`` returns an entry per packet (a tuple; the first item is
    the packet type as the spec numbers it), except the PUBLISHes it routes
    itself: ``router`` set, ``route_pubs``, no entry before them in this
    feed, QoS 0 without retain, no properties, a topic that translates to a
    subject (``mqtt_topic_subject``) the publish permissions allow; those
    go to ``router`` in C as events with the defaults, the payload as data.
    Entries::

        (1, {proto_name, version, clean, keepalive, client_id, will, username,
             password, props})              CONNECT; will: None or
                                            (topic, payload, qos, retain, props)
        (3, flags, topic, packet_id, props, payload)        PUBLISH
        (4 | 5 | 6 | 7, packet_id, reason, props)           PUBACK .. PUBCOMP
        (8, packet_id, [(filter, options), ...], props)     SUBSCRIBE
        (10, packet_id, [filter, ...], props)               UNSUBSCRIBE
        (12,)                                               PINGREQ
        (14, reason, props)                                 DISCONNECT
        (15, reason, props)                                 AUTH (MQTT 5)

    ``flags``: the fixed header's (dup << 3 | qos << 1 | retain);
    ``packet_id``: None for QoS 0; ``props``: the MQTT 5 properties by
    their names in snake case ({} before MQTT 5), ``user_property`` a list
    of (name, value), ``subscription_identifier`` a list in PUBLISH.
    The first packet must be CONNECT (bounded by ``max_connect`` when it is
    not 0), which sets ``version``; every later one is bounded by
    ``max_packet`` (bytes, the fixed header included: refused from the
    fixed header, before the body is kept) and read by that version's
    rules.  A packet that breaks them raises ``MqttError`` (``reason``: the
    MQTT 5 reason code) whose ``frames`` are the entries before it; the
    parser then refuses more input.
    """

    def __init__(self, Router router=None, OutBuf out=None, Py_ssize_t max_packet=1 << 20,
                 Py_ssize_t max_connect=0):
        self.router = router
        self.out = out
        self.max_packet = max_packet
        self.max_connect = max_connect
        self.rec_flags = EVF_MQTT       # (its subscribers get it as MQTT sent it)

    cdef object _malformed_before(self):
        return MqttError(self.failed.reason, 'the stream was malformed before: {}'.format(
            self.failed))

    cdef object _subject_str(self, const char *s, Py_ssize_t sn):
        # (a PUBLISH's topic on the C path: checked as the entry's would be;
        # None: it has no subject, the PUBLISH goes to Python)
        topic = _mq_decode(s, sn, 'the topic name')
        _mq_check_topic_name(s, sn, topic, 'topic name')
        return _mq_topic_subject(s, sn)

    cdef int _first_byte(self, uint8_t b0) except -1:
        """Refuse a packet by its type and flags, before its length."""
        cdef int kind = b0 >> 4, flags = b0 & 15, want
        name = _MQ_PACKET_NAMES[kind]
        if kind == 0:
            raise _mq_malformed('packet type 0 is reserved')
        if kind == MQ_CONNACK or kind == MQ_SUBACK or kind == MQ_UNSUBACK \
                or kind == MQ_PINGRESP:
            raise _mq_protocol('{} is sent by servers, not clients'.format(name))
        if self.version == 0:
            if kind != MQ_CONNECT:
                raise _mq_protocol('the first packet must be CONNECT, not {}'.format(name))
        elif kind == MQ_CONNECT:
            raise _mq_protocol('a second CONNECT')
        elif kind == MQ_AUTH and self.version < 5:
            raise _mq_malformed('AUTH is a packet of MQTT 5, the client speaks MQTT 3')
        if kind == MQ_PUBLISH:
            if flags & 6 == 6:
                raise _mq_malformed('PUBLISH with QoS 3')
            if flags & 8 and not flags & 6:
                if self.version == 5:
                    raise _mq_protocol('PUBLISH with QoS 0 and the DUP flag set')
                raise _mq_malformed('PUBLISH with QoS 0 and the DUP flag set')
            return 0
        want = 2 if kind == MQ_PUBREL or kind == MQ_SUBSCRIBE or kind == MQ_UNSUBSCRIBE else 0
        if flags != want:
            raise _mq_malformed('the flags of {} are 0x{:X}, 0x{:X} expected'.format(
                name, flags, want))
        return 0

    cdef Py_ssize_t _parse(self, const char *p, Py_ssize_t n, list out) except -1:
        """Handle the complete packets of p[:n]; returns the bytes used."""
        cdef Py_ssize_t off = 0, k, total, limit, body, end
        cdef int64_t rl
        cdef uint8_t b0, b
        cdef MqReader r
        # PUBLISHes are routed here only until an entry goes back to Python:
        # a SUBSCRIBE before a PUBLISH must be handled before that PUBLISH
        cdef bint in_order = True
        while off < n:
            b0 = <uint8_t>p[off]
            self._first_byte(b0)
            # the remaining length: a variable byte integer of 1 to 4 bytes
            rl = 0
            k = 1
            while True:
                if off + k >= n:
                    return off              # the fixed header is not all here yet
                b = <uint8_t>p[off + k]
                rl |= <int64_t>(b & 0x7F) << (7 * (k - 1))
                k += 1
                if not b & 0x80:
                    break
                if k == 5:
                    raise _mq_malformed('the remaining length is a variable byte integer of '
                                        'more than 4 bytes')
            total = k + rl
            if self.version == 0 and self.max_connect:
                limit = self.max_connect
                what = 'max_connect'
            else:
                limit = self.max_packet
                what = 'max_packet'
            if total > limit:
                raise MqttError(MQR_PACKET_TOO_LARGE, 'a packet of {} bytes, {} is {}'.format(
                    total, what, limit))
            if n - off < total:
                self.need = total
                break                       # the body is not all here yet
            self.packets_in += 1
            body = off + k
            end = off + total
            off = end
            if ((b0 == 0x30 or b0 == 0x32 or b0 == 0x3A) and in_order and self.route_pubs
                    and self.router is not None and self._publish_c(b0, p, body, end)):
                continue
            if b0 == 0x40 and self.flight is not None and self._puback_c(p, body, end):
                continue
            in_order = False
            r.p = p
            r.i = body
            r.end = end
            out.append(self._packet(b0 >> 4, b0 & 15, &r))
        return off

    cdef int _publish_c(self, uint8_t b0, const char *p, Py_ssize_t body,
                        Py_ssize_t end) except -1:
        """A QoS 0 or 1 PUBLISH without retain: routed here (1) if it has no
        properties, a subject and the permissions (QoS 1: its PUBACK
        written here too); 0: it goes to Python."""
        cdef Py_ssize_t tn, data
        cdef int pid = 0
        if end - body < 2:
            return 0
        tn = (<uint8_t>p[body] << 8) | <uint8_t>p[body + 1]
        data = body + 2 + tn
        if tn == 0 or data > end:
            return 0
        if b0 & 2:                          # QoS 1: the packet identifier
            if data + 2 > end or self.out is None:
                return 0
            pid = (<uint8_t>p[data] << 8) | <uint8_t>p[data + 1]
            if pid == 0:
                return 0                    # (Python refuses it)
            data += 2
        if self.version == 5:
            if data == end or p[data] != 0:
                return 0                    # properties (or none at all: malformed)
            data += 1
        if self.max_payload and end - data > self.max_payload:
            return 0                        # over max_payload: Python answers it (0x95)
        subject = self._pub_subject(p + body + 2, tn)
        if subject is None:
            return 0
        if (self.pub_allow is not None or self.pub_deny is not None) \
                and not self._allowed(subject):
            return 0
        return self._route(subject, p + data, end - data, pid)

    cdef int _puback_c(self, const char *p, Py_ssize_t body, Py_ssize_t end) except -1:
        """A PUBACK of a packet id of ``flight``, with no reason code or
        with 0x00 and no properties: taken here (1); 0: it goes to Python."""
        cdef int pid
        if end - body != 2 and not (end - body == 3 and self.version == 5 and p[body + 2] == 0):
            return 0
        pid = (<uint8_t>p[body] << 8) | <uint8_t>p[body + 1]
        if not self.flight._ack(pid):
            return 0
        self.acks_in += 1
        return 1

    cdef int _route(self, object subject, const char *d, Py_ssize_t dn, int pid) except -1:
        """A PUBLISH: an event with the defaults (QoS 1, ``pid`` not 0: the
        extension ``mqttqos`` 1, and its PUBACK), routed (1); 0 if the flow
        refuses it (closed: the PUBLISH goes to Python)."""
        cdef OutBuf ob
        cdef bint was_empty
        cdef char *o
        try:
            if pid:
                self._publish_default(subject, NULL, 0, d, dn, _MQ_QOS1_EXT, 10)
            else:
                self._publish_default(subject, NULL, 0, d, dn)
        except (LogFullError, EventTooLarge):
            pass    # a stream refused it, the subscribers got it (QoS 1: acknowledged)
        except (FastflowError, UnicodeDecodeError):
            return 0
        self.pubs_in += 1
        if pid:
            ob = self.out
            was_empty = ob.n == 0
            o = ob._reserve(4)
            if o != NULL:
                o[0] = <char>(MQ_PUBACK << 4)
                o[1] = 2
                o[2] = <char>(pid >> 8)
                o[3] = <char>(pid & 0xff)
                ob._wrote(4, was_empty, False)
        return 1

    cdef object _packet(self, int kind, int flags, MqReader *r):
        """The entry of one complete packet (``r``: its body)."""
        cdef bint v5 = self.version == 5
        cdef int qos, reason, o
        cdef Py_ssize_t tn
        cdef const char *tp
        cdef list filters
        cdef dict props
        name = _MQ_PACKET_NAMES[kind]
        if kind == MQ_CONNECT:
            return self._connect(r)
        if kind == MQ_PUBLISH:
            qos = (flags >> 1) & 3
            tn = _mq_len(r, 'the topic name')
            tp = _mq_take(r, tn, 'the topic name')
            topic = _mq_decode(tp, tn, 'the topic name')
            _mq_check_topic_name(tp, tn, topic, 'topic name')
            packet_id = None
            if qos:
                packet_id = _mq_int2(r, 'the packet identifier of PUBLISH')
                if packet_id == 0:
                    raise _mq_protocol('PUBLISH with QoS {} and packet identifier 0'.format(qos))
            props = _mq_props(r, 'PUBLISH', MQK_PUBLISH) if v5 else {}
            if tn == 0:
                if not v5:
                    raise MqttError(MQR_TOPIC_NAME_INVALID, 'PUBLISH with an empty topic name')
                if 'topic_alias' not in props:
                    raise _mq_protocol('PUBLISH with an empty topic name and no topic alias')
            return (MQ_PUBLISH, flags, topic, packet_id, props,
                    PyBytes_FromStringAndSize(r.p + r.i, r.end - r.i))
        if MQ_PUBACK <= kind <= MQ_PUBCOMP:
            packet_id = _mq_int2(r, 'the packet identifier of ' + name)
            if packet_id == 0:
                raise _mq_protocol('{} with packet identifier 0'.format(name))
            reason = 0
            props = {}
            if v5 and r.i < r.end:
                reason = _mq_byte(r, 'the reason code of ' + name)
                if reason not in (_MQ_PUBREL_REASONS if kind == MQ_PUBREL or kind == MQ_PUBCOMP
                                  else _MQ_PUBACK_REASONS):
                    raise _mq_protocol("reason code 0x{:02X} is not one of {}'s".format(
                        reason, name))
                if r.i < r.end:
                    props = _mq_props(r, name, MQK_PUBACK)
            _mq_done(r, name)
            return (kind, packet_id, reason, props)
        if kind == MQ_SUBSCRIBE or kind == MQ_UNSUBSCRIBE:
            packet_id = _mq_int2(r, 'the packet identifier of ' + name)
            if packet_id == 0:
                raise _mq_protocol('{} with packet identifier 0'.format(name))
            props = {}
            if v5:
                props = _mq_props(r, name, MQK_SUBSCRIBE if kind == MQ_SUBSCRIBE
                                  else MQK_UNSUBSCRIBE)
            filters = []
            while r.i < r.end:
                f = _mq_str(r, 'a topic filter')
                if kind == MQ_UNSUBSCRIBE:
                    filters.append(f)
                    continue
                o = _mq_byte(r, 'the subscription options')
                if o & (0xC0 if v5 else 0xFC):
                    raise _mq_malformed('reserved bits set in the subscription options 0x{:02X} '
                                        'of {!r}'.format(o, f))
                if o & 3 == 3:
                    raise _mq_malformed('QoS 3 in the subscription options of {!r}'.format(f))
                if v5 and (o >> 4) & 3 == 3:
                    raise _mq_protocol('retain handling 3 in the subscription options of '
                                       '{!r}'.format(f))
                if v5 and o & 4 and f.startswith('$share/'):
                    raise _mq_protocol('no local on the shared subscription {!r}'.format(f))
                filters.append((f, o))
            if not filters:
                raise _mq_protocol('{} with no topic filters'.format(name))
            return (kind, packet_id, filters, props)
        if kind == MQ_PINGREQ:
            _mq_done(r, name)
            return (MQ_PINGREQ,)
        # DISCONNECT, AUTH (MQTT 5 only: _first_byte saw to it)
        reason = 0
        props = {}
        if v5 and r.i < r.end:
            reason = _mq_byte(r, 'the reason code of ' + name)
            if reason not in (_MQ_DISCONNECT_REASONS if kind == MQ_DISCONNECT
                              else _MQ_AUTH_REASONS):
                raise _mq_protocol("reason code 0x{:02X} is not one of {}'s".format(
                    reason, name))
            if r.i < r.end:
                props = _mq_props(r, name, MQK_DISCONNECT if kind == MQ_DISCONNECT
                                  else MQK_AUTH)
        _mq_done(r, name)
        return (kind, reason, props)

    cdef object _connect(self, MqReader *r):
        cdef int level, flags, will_qos, keepalive
        cdef bint v5
        cdef Py_ssize_t tn
        cdef const char *tp
        cdef dict props, will_props
        proto_name = _mq_str(r, 'the protocol name')
        level = _mq_byte(r, 'the protocol level')
        if not ((proto_name == 'MQTT' and (level == 4 or level == 5))
                or (proto_name == 'MQIsdp' and level == 3)):
            raise MqttError(MQR_UNSUPPORTED_VERSION, 'unsupported protocol {!r} level {} (MQTT '
                            '4 or 5, MQIsdp 3 expected)'.format(proto_name, level))
        self.version = level
        v5 = level == 5
        flags = _mq_byte(r, 'the connect flags')
        will_qos = (flags >> 3) & 3
        if flags & 1:
            raise _mq_malformed('the reserved connect flag is set')
        if will_qos == 3:
            raise _mq_malformed('will QoS 3')
        if not flags & 4 and flags & 0x38:
            raise _mq_protocol('will QoS or will retain set without a will')
        if not v5 and flags & 0x40 and not flags & 0x80:
            raise _mq_protocol('a password without a user name')
        keepalive = _mq_int2(r, 'the keep alive')
        props = _mq_props(r, 'CONNECT', MQK_CONNECT) if v5 else {}
        if 'authentication_data' in props and 'authentication_method' not in props:
            raise _mq_protocol('authentication_data without authentication_method in CONNECT')
        client_id = _mq_str(r, 'the client identifier')
        will = None
        if flags & 4:
            will_props = _mq_props(r, 'the will properties', MQK_WILL) if v5 else {}
            tn = _mq_len(r, 'the will topic')
            tp = _mq_take(r, tn, 'the will topic')
            will_topic = _mq_decode(tp, tn, 'the will topic')
            _mq_check_topic_name(tp, tn, will_topic, 'will topic')
            if tn == 0:
                raise MqttError(MQR_TOPIC_NAME_INVALID, 'an empty will topic')
            will = (will_topic, _mq_bin(r, 'the will payload'), will_qos, bool(flags & 0x20),
                    will_props)
        # (MQTT 3.1 clients may set the flags without the fields: as mosquitto, they are
        # ignored then)
        username = password = None
        if flags & 0x80 and (level != 3 or r.i < r.end):
            username = _mq_str(r, 'the user name')
        if flags & 0x40 and (level != 3 or r.i < r.end):
            password = _mq_bin(r, 'the password')
        _mq_done(r, 'CONNECT')
        return (MQ_CONNECT, {
            'proto_name': proto_name, 'version': level, 'clean': bool(flags & 2),
            'keepalive': keepalive, 'client_id': client_id, 'will': will,
            'username': username, 'password': password, 'props': props})
