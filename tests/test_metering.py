"""The core's metering counters (docs/accounts.md "Metering"): a router
counts the events and payload bytes published into it, delivered and
stored; each subscription and stream its own; an OutBuf the payload bytes
of its connection's publishes; an ImportTarget what crossed.  Bytes are the
events' data, as nats-server counts an account's bytes.  Both cores."""

from test_import_target import accounts, pub_frame, rec, sub, wire


def test_a_router_counts_events_and_payload_bytes(core):
    r = core.Router("acct")
    w1 = wire(core, r, "a.>", 1)
    w2 = wire(core, r, "a.b", 2)
    got = sub(core, r, "a.*")
    log = core.Log()
    st = core.StreamTarget("S", log)
    r.add("a.>", st)
    r.publish("a.b", b"12345")                        # data alone (the defaults)
    r.publish("a.b", b"1234567", type="t", id="x")    # an event with attributes
    r.publish_record("a.c", rec(core, "a.c", b"123"))  # a record from the network
    r.publish("z.z", b"1234567890")                   # no interest: counted in, not out
    assert (r.n_published, r.bytes_published) == (4, 5 + 7 + 3 + 10)
    assert (w1.delivered, w1.delivered_bytes) == (3, 15)
    assert (w2.delivered, w2.delivered_bytes) == (2, 12)
    assert len(got) == 3
    assert (r.n_delivered, r.bytes_delivered) == (3 + 2 + 3, 15 + 12 + 15)
    assert (st.appended, st.appended_bytes) == (3, 15)
    assert (r.n_appended, r.bytes_appended) == (3, 15)


def test_a_queued_subscription_counts_what_it_queued(core):
    r = core.Router("acct")
    t = core.SubTarget(None, max_pending=2)
    r.add(">", t)
    for i in range(3):
        r.publish("a", b"x" * (i + 1))
    assert t.delivered == 3 and t.delivered_bytes == 6      # (the oldest dropped at 2)


def test_the_publishing_connection_counts_its_payload_bytes(core):
    r = core.Router("acct")
    origin = core.OutBuf(0)
    wire(core, r, ">")
    r.publish_record("a", rec(core, "a", b"abcd"), origin=origin)
    r.publish_record("nobody.listens", rec(core, "x", b"ab"), origin=origin)
    p = core.FrameParser(r, origin, 1 << 20, 1 << 20)
    p.route_pubs = True
    p.feed(pub_frame("b", rec(core, "b", b"abcdef")))
    assert origin.pub_bytes == 4 + 2 + 6
    assert r.bytes_published == 12
    origin.pub_bytes = 0
    assert origin.pub_bytes == 0


def test_an_import_counts_the_payload_bytes_that_crossed(core):
    src, dst, t = accounts(core, prefix=b"p.")
    w = wire(core, dst, "p.>")
    src.publish("orders.1", b"12345")
    src.publish("orders.2", b"123", type="t")
    src.publish_record("orders.3", rec(core, "orders.3", b"1"))
    src.publish("other", b"xxxxxxxx")
    assert (t.forwarded, t.forwarded_bytes) == (3, 9)
    assert (dst.n_published, dst.bytes_published) == (3, 9)
    assert (w.delivered, w.delivered_bytes) == (3, 9)
    assert src.bytes_published == 17
