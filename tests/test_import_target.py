"""ImportTarget, the cross-account bridge of the router (src_ext/router.pyx
and its twin fastflow/_ref/router.py): registered in the exporting
account's router on the exported pattern, it republishes each message
matched into the importing account's router, its subject rewritten
(``prefix + subject[strip:]`` or ``subject_map``), its reply dropped unless
``reply_map`` carries it, its record as received.

Every test runs once per core on real routers and real targets: a
NativeTarget on an OutBuf (its MSG frames read back with a FrameParser),
SubTarget callbacks, a StreamTarget on a Log.
"""

import struct

import pytest

from fastflow.errors import EventTooLarge, FastflowError, LogFullError

HEAD = struct.Struct("<IBBHIHH")        # a native frame's header (docs/protocol.md)
OP_PUB = 3


def pub_frame(subject, record, reply=b""):
    """A native PUB frame, built from docs/protocol.md's layout."""
    s, r = subject.encode(), bytes(reply)
    return HEAD.pack(12 + len(s) + len(r) + len(record), 1, OP_PUB, 0, 0, len(s), len(r)) \
        + s + r + record


def msgs(core, ob):
    """The MSG frames an OutBuf holds: [(subject, reply, record)]."""
    p = core.FrameParser(max_payload=1 << 30, max_control=1 << 30)
    p.batch_msgs = True
    got = []
    for it in p.feed(ob.take()):
        assert it[0] == "msgs", it
        mb = it[1]
        for i in range(len(mb)):
            got.append((mb.subjects[i], mb.replies[i], bytes(mb.record(i))))
    return got


def wire(core, router, pattern=">", sid=1):
    """A network subscriber (NativeTarget on its own OutBuf) in ``router``."""
    t = core.NativeTarget(core.OutBuf(0), sid)
    router.add(pattern, t)
    return t


def sub(core, router, pattern=">", callback=None):
    """An in-process subscriber; returns the list of events it got."""
    got = []

    def cb(ev):
        got.append(ev)
        if callback is not None:
            callback(ev)

    router.add(pattern, core.SubTarget(cb))
    return got


def accounts(core, pattern="orders.>", **kw):
    """Two accounts: ``src`` exports ``pattern``, ``dst`` imports it."""
    src = core.Router("acme")
    dst = core.Router("partner")
    t = core.ImportTarget(dst, **kw)
    src.add(pattern, t)
    return src, dst, t


def rec(core, routing="orders.1", data=b"payload", **attrs):
    return core.Event(routing, data, **attrs).encode()


# -- subjects ---------------------------------------------------------------------------


def test_prefix_rewrites_the_subject_everywhere_in_dest(core):
    src, dst, t = accounts(core, prefix=b"partner.acme.")
    w = wire(core, dst)
    events = sub(core, dst)
    log = core.Log()
    dst.add("partner.>", core.StreamTarget("S", log))
    dst.add("orders.>", core.StreamTarget("WRONG", core.Log()))   # the old subject: nothing
    src.publish("orders.1", b"one")
    src.publish_record("orders.2", rec(core, "orders.2", b"two"))
    assert [m[0] for m in msgs(core, w.outbuf)] == ["partner.acme.orders.1",
                                                   "partner.acme.orders.2"]
    assert [e.routing_subject for e in events] == ["partner.acme.orders.1",
                                                   "partner.acme.orders.2"]
    assert [e.data for e in events] == [b"one", b"two"]
    assert [e.stream for e in events] == ["S", "S"]
    assert [log.get(s).subject for s in (1, 2)] == ["partner.acme.orders.1",
                                                    "partner.acme.orders.2"]
    assert dst.n_appended == 2 and len(log) == 2
    assert (t.forwarded, t.refused, t.looped) == (2, 0, 0)


def test_strip_and_prefix(core):
    src, dst, t = accounts(core, strip=len(b"orders."), prefix=b"acme.")
    w = wire(core, dst)
    src.publish("orders.eu.7", b"x")
    src.publish_record("orders.us.8", rec(core, "orders.us.8"))
    assert [m[0] for m in msgs(core, w.outbuf)] == ["acme.eu.7", "acme.us.8"]


def test_strip_without_prefix(core):
    src, dst, t = accounts(core, strip=len(b"orders."))
    events = sub(core, dst)
    src.publish("orders.eu.7", b"x")
    assert [e.routing_subject for e in events] == ["eu.7"]


def test_no_prefix_keeps_the_subject(core):
    src, dst, t = accounts(core)
    w = wire(core, dst)
    events = sub(core, dst)
    src.publish("orders.1", b"a")
    src.publish("orders.1", b"b")               # (the rewrite of the last subject is kept)
    src.publish("orders.2", b"c")
    assert [m[0] for m in msgs(core, w.outbuf)] == ["orders.1", "orders.1", "orders.2"]
    assert [e.data for e in events] == [b"a", b"b", b"c"]


def test_non_ascii_subject_and_prefix(core):
    src, dst, t = accounts(core, pattern="é.>", prefix="ü.".encode())
    events = sub(core, dst)
    src.publish("é.x", b"a")
    assert [e.routing_subject for e in events] == ["ü.é.x"]


def test_a_rewrite_that_is_no_subject_is_refused(core):
    # strip cuts the whole subject, or through a character: nothing is forwarded,
    # the publisher does not hear of it
    src, dst, t = accounts(core, strip=100, prefix=b"acme.")
    events = sub(core, dst)
    src.publish("orders.1", b"a")
    src2, dst2, t2 = accounts(core, pattern="é.>", strip=1)
    events2 = sub(core, dst2)
    src2.publish("é.x", b"a")
    assert events == [] and events2 == []
    assert (t.forwarded, t.refused, t2.forwarded, t2.refused) == (0, 1, 0, 1)


def test_subject_map(core):
    seen = []

    def smap(subject):
        seen.append(subject)
        if subject.endswith(b".secret"):
            return None
        if subject == b"orders.str":
            return "mapped.str"             # a str is taken too
        return b"mapped." + subject

    src, dst, t = accounts(core, prefix=b"ignored.", subject_map=smap)
    w = wire(core, dst)
    events = sub(core, dst)
    src.publish("orders.1", b"a")
    src.publish("orders.secret", b"b")
    src.publish_record("orders.str", rec(core, "orders.str"))
    assert seen == [b"orders.1", b"orders.secret", b"orders.str"]
    assert all(type(s) is bytes for s in seen)
    assert [m[0] for m in msgs(core, w.outbuf)] == ["mapped.orders.1", "mapped.str"]
    assert [e.routing_subject for e in events] == ["mapped.orders.1", "mapped.str"]
    assert (t.forwarded, t.refused, t.looped, t.delivered) == (2, 1, 0, 3)
    assert src.n_dropped_slow == 0


def test_subject_map_errors_propagate(core):
    def bad(subject):
        raise RuntimeError("boom")

    src, dst, t = accounts(core, subject_map=bad)
    with pytest.raises(RuntimeError, match="boom"):
        src.publish("orders.1", b"a")
    src3, dst3, t3 = accounts(core, subject_map=lambda s: 42)
    with pytest.raises(TypeError, match="subject_map"):
        src3.publish("orders.1", b"a")
    # the depth counter came back: a plain import still forwards
    src2, dst2, t2 = accounts(core)
    events = sub(core, dst2)
    src2.publish("orders.1", b"a")
    assert len(events) == 1 and t2.looped == 0


# -- replies ----------------------------------------------------------------------------


def test_reply_is_dropped_by_default(core):
    src, dst, t = accounts(core)
    w = wire(core, dst)
    direct = wire(core, src, sid=2)
    src.publish_record("orders.1", rec(core), reply="_INBOX.abc.1")
    assert [m[1] for m in msgs(core, direct.outbuf)] == ["_INBOX.abc.1"]
    assert [m[1] for m in msgs(core, w.outbuf)] == [None]
    assert t.forwarded == 1


def test_reply_map(core):
    seen = []

    def rmap(reply):
        seen.append(reply)
        if reply == b"_INBOX.none":
            return None
        return b"_ACC.acme." + reply

    src, dst, t = accounts(core, reply_map=rmap)
    w = wire(core, dst)
    r = rec(core)
    src.publish_record("orders.1", r, reply="_INBOX.abc.1")
    src.publish_record("orders.2", r, reply="_INBOX.none")
    src.publish_record("orders.3", r)                       # no reply: rmap not called
    assert seen == [b"_INBOX.abc.1", b"_INBOX.none"]
    assert msgs(core, w.outbuf) == [("orders.1", "_ACC.acme._INBOX.abc.1", r),
                                    ("orders.2", None, r),
                                    ("orders.3", None, r)]
    assert t.forwarded == 3


def test_reply_map_giving_an_invalid_reply_is_refused(core):
    src, dst, t = accounts(core, reply_map=lambda r: b"bad reply")
    w = wire(core, dst)
    src.publish_record("orders.1", rec(core), reply="_INBOX.a")
    assert msgs(core, w.outbuf) == [] and (t.forwarded, t.refused) == (0, 1)


# -- the record -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["record", "frame", "event", "default"])
def test_record_bytes_arrive_unchanged(core, how):
    src, dst, t = accounts(core, prefix=b"p.")
    direct = wire(core, src, "orders.>", sid=9)
    w = wire(core, dst)
    log = core.Log()
    dst.add(">", core.StreamTarget("S", log))
    events = sub(core, dst)
    attrs = dict(type="com.acme.order", subject="order-1", datacontenttype="application/json",
                 region="eu", priority=3, id="id-1", source="/acme/orders")
    data = b'{"qty": 2, "sku": "\xc3\xa9"}'
    if how == "record":
        r = rec(core, "orders.1", data, **attrs)
        src.publish_record("orders.1", r)
    elif how == "frame":
        r = rec(core, "orders.1", data, **attrs)
        p = core.FrameParser(src, core.OutBuf(0))
        p.route_pubs = True                 # the parser routes a PUB itself, in C
        assert p.feed(pub_frame("orders.1", r)) == []
    elif how == "event":
        src.publish("orders.1", data, **attrs)
    else:                                   # every attribute a default: data apart in C
        src.publish("orders.1", data)
    [(_, _, sent)] = msgs(core, direct.outbuf)
    if how in ("record", "frame"):
        assert sent == r
    [(subject, _, got)] = msgs(core, w.outbuf)
    assert subject == "p.orders.1"
    assert got == sent
    assert log.get(1).data == sent
    [e] = events
    assert e.data == data
    if how != "default":
        for k, v in attrs.items():
            assert e[k] == v
    assert (t.forwarded, t.forwarded_bytes) == (1, len(data))     # (payload bytes)


def test_forwarded_counters(core):
    src, dst, t = accounts(core, prefix=b"p.")
    wire(core, dst)
    sizes = []
    for i in range(5):
        r = rec(core, "orders.{}".format(i), b"x" * i)
        sizes.append(i)                 # (payload bytes: metering counts the data)
        src.publish_record("orders.{}".format(i), r)
    src.publish("other.1", b"not exported")
    assert (t.forwarded, t.forwarded_bytes, t.refused, t.looped) == (5, sum(sizes), 0, 0)
    assert t.delivered == 5 and t.dropped == 0
    assert src.n_delivered == 5 and src.n_dropped_slow == 0
    assert dst.n_published == 5 and dst.n_delivered == 5


# -- loops ------------------------------------------------------------------------------


@pytest.mark.parametrize("max_depth", [8, 3, 1])
def test_a_cycle_of_imports_stops_at_max_depth(core, max_depth):
    a = core.Router("a")
    b = core.Router("b")
    ta = core.ImportTarget(b, max_depth=max_depth)      # a's '>' imported into b
    tb = core.ImportTarget(a, max_depth=max_depth)      # and b's into a
    a.add(">", ta)
    b.add(">", tb)
    got_a = sub(core, a)
    got_b = sub(core, b)
    a.publish("x.1", b"loop")
    # depth 0: a -> b, 1: b -> a, ... max_depth - 1 the last forward
    assert ta.forwarded + tb.forwarded == max_depth
    assert ta.forwarded == (max_depth + 1) // 2 and tb.forwarded == max_depth // 2
    assert ta.looped + tb.looped == 1
    assert (ta.looped if max_depth % 2 == 0 else tb.looped) == 1
    assert len(got_a) == 1 + tb.forwarded and len(got_b) == ta.forwarded
    assert all(e.data == b"loop" for e in got_a + got_b)
    # the counter came back to 0: the next publish goes as far
    a.publish("x.2", b"again")
    assert ta.forwarded + tb.forwarded == 2 * max_depth
    assert ta.looped + tb.looped == 2


def test_a_cycle_with_prefixes_grows_the_subject(core):
    a = core.Router("a")
    b = core.Router("b")
    a.add(">", core.ImportTarget(b, prefix=b"a.", max_depth=4))
    b.add(">", core.ImportTarget(a, prefix=b"b.", max_depth=4))
    got_a = sub(core, a)
    got_b = sub(core, b)
    a.publish("x", b"")
    # (depth first: an import registered before the subscriber forwards first)
    assert sorted(e.routing_subject for e in got_b) == ["a.b.a.x", "a.x"]
    assert sorted(e.routing_subject for e in got_a) == ["b.a.b.a.x", "b.a.x", "x"]


def test_a_callback_in_dest_publishing_back_into_source(core):
    # the dest's callback publishes into the source, whose record scratch
    # buffer the forwarded record may live in: every target, in the dest and
    # after the import in the source, still gets the record of its own event
    src = core.Router("src")
    dst = core.Router("dst")
    t = core.ImportTarget(dst, prefix=b"in.")
    src.add("orders.>", t)
    src_tail = wire(core, src, "orders.>", sid=2)   # delivered after the import
    audit = "orders.audit." + "z" * 40

    def republish(ev):
        if ev.routing_subject == "in.orders.1":
            src.publish(audit, b"Z" * 300, type="audit")

    sub(core, dst, ">", republish)
    dst_tail = wire(core, dst, ">", sid=3)          # delivered after the callback
    events = sub(core, dst, ">")
    src.publish("orders.1", b"A" * 200, type="order", id="i1")
    want = rec(core, "orders.1", b"A" * 200, type="order", id="i1", source=src.source)
    got_src = msgs(core, src_tail.outbuf)
    got_dst = msgs(core, dst_tail.outbuf)
    assert [m[0] for m in got_src] == [audit, "orders.1"]          # (depth first)
    assert got_src[1][2] == want
    assert [m[0] for m in got_dst] == ["in." + audit, "in.orders.1"]
    assert got_dst[1][2] == want
    assert got_dst[0][2] == got_src[0][2]
    assert [e.data for e in events] == [b"Z" * 300, b"A" * 200]
    assert [e.type for e in events] == ["audit", "order"]
    assert (t.forwarded, t.refused, t.looped) == (2, 0, 0)


def test_nested_imports_keep_their_records(core):
    # a -> b -> c, and b's callback publishes into a another event, which is
    # forwarded (one level deeper) while b's delivery of the first goes on
    a, b, c = core.Router("a"), core.Router("b"), core.Router("c")
    a.add("x.>", core.ImportTarget(b))
    b.add("x.>", core.ImportTarget(c, prefix=b"c."))

    def cb(ev):
        if ev.data == b"first":
            a.publish("x.2", b"second" * 30, type="t2")

    sub(core, b, "x.>", cb)
    bw = wire(core, b, "x.>")
    cw = wire(core, c, ">")
    a.publish("x.1", b"first", type="t1")
    got_b = msgs(core, bw.outbuf)
    got_c = msgs(core, cw.outbuf)
    assert [(m[0], core.Event.decode(m[0], m[2]).data) for m in got_b] == [
        ("x.2", b"second" * 30), ("x.1", b"first")]
    assert sorted((m[0], core.Event.decode(m[0], m[2]).data) for m in got_c) == [
        ("c.x.1", b"first"), ("c.x.2", b"second" * 30)]


# -- refusals in dest -------------------------------------------------------------------


def test_a_dest_stream_refusing_does_not_reach_the_publisher(core):
    src, dst, t = accounts(core, prefix=b"p.")
    full = core.Log(max_events=1, discard="new")
    dst.add("p.>", core.StreamTarget("FULL", full))
    events = sub(core, dst)
    src.publish("orders.1", b"a")
    src.publish("orders.2", b"b")                       # refused by FULL: no raise
    src.publish_record("orders.3", rec(core, "orders.3"))
    assert len(full) == 1
    assert [e.data for e in events] == [b"a", b"b", b"payload"]  # delivered all the same
    assert (t.forwarded, t.refused) == (1, 2)
    assert dst.n_rejected == 2
    # the dest's own publisher is still told
    with pytest.raises(LogFullError):
        dst.publish("p.x", b"direct")


def test_a_dest_stream_refusing_a_large_event(core):
    src, dst, t = accounts(core)
    dst.add(">", core.StreamTarget("SMALL", core.Log(max_event_size=64)))
    src.publish("orders.1", b"x" * 1000)
    assert (t.forwarded, t.refused) == (0, 1)
    with pytest.raises(EventTooLarge):
        dst.publish("orders.1", b"x" * 1000)


def test_a_source_stream_refusal_still_reaches_its_publisher(core):
    src, dst, t = accounts(core)
    src.add("orders.>", core.StreamTarget("SRC", core.Log(max_events=1, discard="new")))
    src.publish("orders.1", b"a")
    with pytest.raises(LogFullError):
        src.publish("orders.2", b"b")
    assert t.forwarded == 2


def test_a_closed_dest_raises(core):
    src, dst, t = accounts(core)
    dst.closed = True
    with pytest.raises(FastflowError, match="closed"):
        src.publish("orders.1", b"a")


# -- the target -------------------------------------------------------------------------


def test_echo_and_origin(core):
    # the publisher's connection is never "its own": outbuf is None, echo True
    src, dst, t = accounts(core)
    events = sub(core, dst)
    ob = core.OutBuf(0)
    src.publish_record("orders.1", rec(core), origin=ob)
    assert len(events) == 1
    assert t.outbuf is None and t.echo is True
    assert isinstance(t, core.WireTarget)


def test_attributes(core):
    dst = core.Router("d")
    rmap = lambda r: r                                  # noqa: E731
    smap = lambda s: s                                  # noqa: E731
    t = core.ImportTarget(dst, strip=3, prefix=b"x.", reply_map=rmap, subject_map=smap,
                          max_depth=5)
    assert (t.dest, t.strip, t.prefix, t.reply_map, t.subject_map, t.max_depth) == (
        dst, 3, b"x.", rmap, smap, 5)
    d = core.ImportTarget(dst)
    assert (d.strip, d.prefix, d.reply_map, d.subject_map, d.max_depth) == (0, b"", None, None, 8)
    assert (d.forwarded, d.forwarded_bytes, d.refused, d.looped) == (0, 0, 0, 0)
    for name in ("dest", "strip", "prefix", "max_depth", "forwarded", "refused", "looped"):
        with pytest.raises(AttributeError):
            setattr(d, name, getattr(d, name))


@pytest.mark.parametrize("kw, exc", [
    (dict(strip=-1), ValueError),
    (dict(max_depth=0), ValueError),
    (dict(max_depth=65), ValueError),
    (dict(prefix=1), TypeError),
    (dict(reply_map=1), TypeError),
    (dict(subject_map="x"), TypeError),
])
def test_bad_arguments(core, kw, exc):
    with pytest.raises(exc):
        core.ImportTarget(core.Router(), **kw)


def test_dest_must_be_a_router(core):
    with pytest.raises(TypeError):
        core.ImportTarget(None)
    with pytest.raises(TypeError):
        core.ImportTarget(object())
