"""The core's pieces of the cluster link (docs/cluster.md), on both cores:
the forwarder (ClusterTarget), a server's MSGs routed by the link's
parser (NatsParser(client=True), NatsRoute), queue groups preferring local
members, deliveries restricted to plain targets or one group, and the
router's interest as the link counts it."""

import pytest

from fastflow.errors import NatsError


def _rec(core, data, type_="t"):
    return core.Event(data=data, type=type_).encode()


def _pubs(buf):
    """The PUB lines of a backbone output: [(subject, reply, record)]."""
    out = []
    while buf:
        line, _, rest = buf.partition(b"\r\n")
        parts = line.split(b" ")
        assert parts[0] == b"PUB", line
        n = int(parts[-1])
        out.append((parts[1], parts[2] if len(parts) == 4 else None, rest[:n]))
        assert rest[n:n + 2] == b"\r\n"
        buf = rest[n + 2:]
    return out


def test_forwarder_writes_each_event_once_with_its_record(core):
    r = core.Router()
    ob = core.OutBuf()
    fwd = core.ClusterTarget(ob, b"_FFA.$G.", b"_FFA.$G.")
    assert fwd.remote and not fwd.echo
    r.add("a.>", fwd)
    r.add("a.*", fwd)                   # overlapping: still one PUB per event
    r.add("a.b", fwd)
    rec = _rec(core, b"payload")
    r.publish_record("a.b", rec, reply="_INBOX.x")
    r.publish("a.c", b"plain")
    pubs = _pubs(ob.take())
    assert [(s, rp) for s, rp, _ in pubs] == [(b"_FFA.$G.a.b", b"_FFA.$G._INBOX.x"),
                                             (b"_FFA.$G.a.c", None)]
    assert pubs[0][2] == rec            # the record byte for byte
    ev = core.Event.decode("a.c", pubs[1][2])
    assert ev.data == b"plain"
    assert (fwd.fwd_msgs, fwd.fwd_bytes) == (2, len(pubs[0][2]) + len(pubs[1][2]))


@pytest.mark.parametrize("prefix", [b"no-dot", b"a b.", b"a\r\n.", b"x\0."])
def test_forwarder_prefix_cannot_break_the_line(core, prefix):
    with pytest.raises(ValueError):
        core.ClusterTarget(core.OutBuf(), prefix)


def test_queue_group_prefers_local_members(core):
    r = core.Router()
    ob = core.OutBuf()
    got = []
    local = core.SubTarget(lambda e: got.append(e.data))
    fwd = core.ClusterTarget(ob, b"_FFQ.67.")
    r.prefer_local = True
    r.add("q.*", fwd, queue="g")
    hl = r.add("q.*", local, queue="g")
    for i in range(6):
        r.publish("q.x", b"%d" % i)
    assert got == [b"%d" % i for i in range(6)] and ob.take() == b""
    r.remove(hl)                        # no local member: the group is forwarded
    r.publish("q.x", b"far")
    assert [s for s, _, _ in _pubs(ob.take())] == [b"_FFQ.67.q.x"]


def test_delivery_to_plain_targets_or_one_group_only(core):
    r = core.Router()
    plain, g1, g2 = [], [], []
    r.add("s", core.SubTarget(lambda e: plain.append(e.data)))
    r.add("s", core.SubTarget(lambda e: g1.append(e.data)), queue="g1")
    r.add("s", core.SubTarget(lambda e: g1.append(e.data)), queue="g1")
    r.add("s", core.SubTarget(lambda e: g2.append(e.data)), queue="g2")
    rec = _rec(core, b"e")
    r.publish_record("s", rec, groups=False)
    assert (plain, g1, g2) == ([b"e"], [], [])
    r.publish_record("s", rec, group="g1")
    assert (plain, g1, g2) == ([b"e"], [b"e"], [])
    assert r.publish_record("s", rec, group="nobody") == 0
    r.publish_record("s", rec)          # (the next delivery is not restricted)
    assert (len(plain), len(g1), len(g2)) == (2, 2, 1)


def test_a_group_delivery_never_goes_to_a_forwarder(core):
    r = core.Router()
    ob = core.OutBuf()
    r.prefer_local = True
    r.add("s", core.ClusterTarget(ob, b"_FFQ.67."), queue="g")
    r.publish_record("s", _rec(core, b"e"), group="g")
    assert ob.take() == b""


def test_router_interest_counts_every_target_but_forwarders(core):
    r = core.Router()
    seen = []
    r.on_interest = lambda p, q, d: seen.append((p, q, d))
    h1 = r.add("a.*", core.SubTarget(lambda e: None))
    h2 = r.add(b"b", core.SubTarget(lambda e: None), queue="g")
    r.add("c", core.ClusterTarget(core.OutBuf()))
    assert sorted(r.interest()) == [("a.*", None), ("b", "g")]
    r.remove(h1)
    r.remove_many([h2, h2, 12345])
    assert seen == [("a.*", None, 1), ("b", "g", 1), ("a.*", None, -1), ("b", "g", -1)]
    assert r.interest() == []


def test_interest_ends_with_an_unsub_max(core):
    r = core.Router()
    seen = []
    r.on_interest = lambda p, q, d: seen.append((p, d))
    t = core.NatsTarget(core.OutBuf(), b"1")
    r.add("m", t)
    t.remaining = 1
    r.publish("m", b"x")
    assert seen == [("m", 1), ("m", -1)]


def test_client_parser_routes_msgs_by_sid(core):
    r = core.Router()
    ob = core.OutBuf()
    plain, grp = [], []
    r.add("a.>", core.SubTarget(lambda e: plain.append((e.routing_subject, e.data))))
    r.add("a.>", core.SubTarget(lambda e: grp.append(e.data)), queue="g")
    back = core.ClusterTarget(ob, b"_FFA.$G.", b"_FFA.$G.")
    r.add("a.>", back)                  # (what came from the backbone never goes back)
    routes = {b"1": core.NatsRoute(r, 8, None, b"_FFA.$G."),
              b"2": core.NatsRoute(r, 16, "g", b"_FFA.$G.")}
    p = core.NatsParser(None, ob, client=True, routes=routes)
    rec = _rec(core, b"r1")
    feed = (b"MSG _FFA.$G.a.b 1 %d\r\n" % len(rec) + rec + b"\r\n"
            + b"MSG _FFQ.67._FFA.$G.a.c 2 _FFA.$G.rep %d\r\n" % len(rec) + rec + b"\r\n")
    # in any pieces
    out = []
    for i in range(0, len(feed), 7):
        out += p.feed(feed[i:i + 7])
    assert out == []
    assert plain == [("a.b", b"r1")] and grp == [b"r1"]
    assert ob.take() == b""
    assert (routes[b"1"].msgs, routes[b"2"].msgs) == (1, 1)


def test_client_parser_returns_what_it_does_not_route(core):
    p = core.NatsParser(None, core.OutBuf(), client=True, routes={})
    out = p.feed(b"INFO {}\r\nPING\r\nMSG x 9 r 2\r\nhi\r\nHMSG y 9 12 14\r\nNATS/1.0\r\n\r\nok"
                 b"\r\n+OK\r\n-ERR 'x'\r\n")
    # one entry at a time: the link handles it before the MSGs after it
    assert out == [("info", b"{}")] and p.buffered
    for _ in range(10):
        more = p.feed(b"")
        if not more:
            break
        assert len(more) == 1
        out += more
    assert p.buffered == 0
    assert out == [("info", b"{}"), ("ping",), ("msg", "x", "9", "r", None, b"hi"),
                   ("msg", "y", "9", None, b"NATS/1.0\r\n\r\n", b"ok"), ("+ok",),
                   ("-err", "'x'")]


def test_client_parser_refuses_bad_records_and_goes_on(core):
    r = core.Router()
    got = []
    r.add(">", core.SubTarget(lambda e: got.append(e.data)))
    route = core.NatsRoute(r, 0, None)
    p = core.NatsParser(None, core.OutBuf(), client=True, routes={b"1": route})
    rec = _rec(core, b"good")
    out = p.feed(b"MSG a 1 5\r\nnope!\r\nMSG a 1 %d\r\n" % len(rec) + rec + b"\r\n")
    assert [e[0] for e in out] == ["bad"] and got == [b"good"]
    assert (route.msgs, route.bad) == (2, 1)


@pytest.mark.parametrize("line", [b"MSG a 1\r\n", b"MSG a 1 r s x 2\r\n", b"MSG a 1 -2\r\n",
                                  b"HMSG a 1 5 2\r\n"])
def test_client_parser_malformed_msg_lines(core, line):
    p = core.NatsParser(None, core.OutBuf(), client=True, routes={})
    with pytest.raises(NatsError):
        p.feed(line)


def test_a_door_parser_still_refuses_msg(core):
    with pytest.raises(NatsError, match="sent by servers"):
        core.NatsParser().feed(b"MSG a 1 0\r\n\r\n")
