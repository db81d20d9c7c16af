"""The NATS protocol's output side, pure-Python twin of
src_ext/wire/nats_out.pyx: MSG / HMSG lines written into an OutBuf (their
layout here only), and the wire target of a NATS subscription
(``NatsTarget``: its header block made once per message for every
subscriber that shares the hook).
"""

from fastflow._ref.event import (
    _HEADER,
    EVF_GENID,
    EVF_TYPE_SUBJECT,
    Event,
    _ev_copy,
    _ev_data_offset,
    _ev_decode,
    _final,
    _ro,
)
from fastflow._ref.wire.outbuf import WireTarget

__all__ = ("ClusterTarget", "NatsTarget")


def _nats_msg(ob, sid, s, r, h, d):
    """Append ``MSG <s> <sid> [<r>] <len(d)>`` + ``d`` (``h`` None) or
    ``HMSG <s> <sid> [<r>] <len(h)> <len(h)+len(d)>`` + ``h`` + ``d``
    (all bytes) to the OutBuf ``ob``; 0 if it was dropped."""
    hn = len(h) if h is not None else 0
    dn = len(d)
    # (the limit is checked against the native core's bound of the size)
    bound = 5 + len(s) + 1 + len(sid) + 1 + len(r) + 1 + 40 + 2 + hn + dn + 2
    was_empty = not ob._buf
    if not ob._reserve(bound):
        return 0
    parts = [b"HMSG " if h is not None else b"MSG ", s, b" ", sid, b" "]
    if r:
        parts.append(r)
        parts.append(b" ")
    if h is not None:
        parts.append(b"%d %d\r\n" % (hn, hn + dn))
        parts.append(h)
    else:
        parts.append(b"%d\r\n" % dn)
    parts.append(d)
    parts.append(b"\r\n")
    ob._buf += b"".join(parts)
    ob._wrote(was_empty, True)
    return 1


def _nats_plain(rec, ddata):
    """``(plain, data)`` of a record for NATS subscribers: ``plain`` 1 if
    the event carries nothing but the defaults a NATS subscriber would not
    see (a generated id, type = the subject, no lineage, no optional
    attribute or extension): it goes as a plain MSG; ``ddata`` is the data
    when ``rec`` is the router's record of an event with every default
    (without its data)."""
    if ddata is not None:
        return 1, ddata
    n = len(rec)
    data = rec[_ev_data_offset(rec, 0, n):]
    _, flags, _, _, _, _, trn, restn = _HEADER.unpack_from(rec, 0)
    plain = (flags & (EVF_GENID | EVF_TYPE_SUBJECT)) == (EVF_GENID | EVF_TYPE_SUBJECT) \
        and trn == 0 and restn == 0
    return (1 if plain else 0), data


def _nats_block(msg, hook):
    """``(header block or None, data)`` of a WireMsg for the NATS
    subscribers whose header hook is ``hook``."""
    plain, data = _nats_plain(msg.rec, msg.data)
    if plain or hook is None:
        return None, data
    ev = msg.event
    if ev is not None:
        # the event as published: without this flow's lineage entry (only
        # the in-process deliveries carry it)
        hev = Event.__new__(Event)
        _ev_copy(hev, ev)
        hev._origin = None
    else:
        rec = msg.rec
        hev = _ev_decode(msg.subject, rec, 0, len(rec), msg.seq, msg.stream, msg.ts, None)
    h = hook(hev, msg.generated_id)
    if type(h) is not bytes:
        raise TypeError("NatsTarget.headers must return bytes")
    return h, data


@_final
class NatsTarget(WireTarget):
    """A NATS subscription: each message goes to its connection's output as
    a ``MSG`` line with its ``sid``, or, when the event carries more than
    a NATS subscriber sees and ``headers`` is set, as an ``HMSG`` line with
    the header block ``headers(event, generated_id)`` returns (engine use;
    see fastflow.server)."""

    __slots__ = ("_sid", "headers")

    def __init__(self, outbuf, sid, echo=True, headers=None):
        WireTarget.__init__(self, outbuf, echo)
        if isinstance(sid, str):
            sid = sid.encode("utf-8")
        if type(sid) is not bytes or not sid:
            raise TypeError("sid must be a non-empty str or bytes (a NATS sid)")
        self._sid = sid
        # (event, generated_id) -> the header block (bytes) of an event with
        # attributes (None: sent without them)
        self.headers = headers

    sid = _ro("_sid", "the NATS sid (bytes)")

    def write(self, msg):
        hook = self.headers
        c = msg.cache.get(hook)
        if c is None:
            c = msg.cache[hook] = _nats_block(msg, hook)
        return _nats_msg(self._outbuf, self._sid, msg.subject_b, msg.reply or b"", c[0],
                         c[1]) == 1


def _check_prefix(b):
    if isinstance(b, str):
        b = b.encode("utf-8")
    if type(b) is not bytes:
        raise TypeError("prefix and reply_prefix must be str or bytes")
    if b and (any(c in b for c in (b" ", b"\t", b"\r", b"\n", b"\0")) or not b.endswith(b".")):
        raise ValueError('a subject prefix ends with "." and has no space, tab, CR, LF or NUL: '
                         '{!r}'.format(b))
    return b


class ClusterTarget(WireTarget):
    """A cluster link's forwarder (docs/cluster.md): the events of this
    node that another node wants, written to the backbone's output as
    ``PUB <prefix><subject> [<reply_prefix><reply>] <size>`` with the event's
    record as the payload (byte for byte).  One target serves every
    pattern of one kind: registered under each, it writes an event once
    however many of them matched.  ``remote``: a queue group prefers its
    local members to it.  Its ``echo`` is False: what came from the
    backbone (the link's OutBuf the origin) never goes back."""

    __slots__ = ("_prefix", "_reply_prefix", "_fwd_msgs", "_fwd_bytes", "max_payload",
                 "max_line", "_too_large")

    def __init__(self, outbuf, prefix=b"", reply_prefix=b""):
        WireTarget.__init__(self, outbuf, False)
        self._prefix = _check_prefix(prefix)
        self._reply_prefix = _check_prefix(reply_prefix)
        self._remote = True
        self._fwd_msgs = 0
        self._fwd_bytes = 0
        self.max_payload = 0            # the backbone's (its INFO): larger records are not
                                        # forwarded (0: no limit)
        self.max_line = 4096            # nor a PUB line past this (its max_control_line)
        self._too_large = 0             # events not forwarded for those limits

    prefix = _ro("_prefix", "before the subject on the backbone")
    reply_prefix = _ro("_reply_prefix", "before a reply subject")
    fwd_msgs = _ro("_fwd_msgs", "PUBs written")
    fwd_bytes = _ro("_fwd_bytes", "their record bytes")
    too_large = _ro("_too_large", "events not forwarded for the backbone's limits")

    def write(self, msg):
        if self in msg.cache:
            return True                 # (another of its patterns matched this event)
        msg.cache[self] = True
        rec = msg.rec if msg.data is None else msg.rec + msg.data
        rpn = len(self._reply_prefix) if msg.reply else 0
        if (self.max_payload and len(rec) > self.max_payload) or \
                (self.max_line and 4 + len(self._prefix) + len(msg.subject_b) + 1 + rpn
                 + len(msg.reply or b"") + 1 + 20 > self.max_line):
            self._too_large += 1    # (the backbone would close the link for it)
            return True
        ob = self._outbuf
        parts = [b"PUB ", self._prefix, msg.subject_b, b" "]
        if msg.reply:
            parts += [self._reply_prefix, msg.reply, b" "]
        parts.append(b"%d\r\n" % len(rec))
        head = b"".join(parts)
        bound = len(head) + 20 + len(rec) + 2
        was_empty = not ob._buf
        if not ob._reserve(bound):
            return False
        ob._buf += head + rec + b"\r\n"
        ob._wrote(was_empty, True)
        self._fwd_msgs += 1
        self._fwd_bytes += len(rec)
        return True
