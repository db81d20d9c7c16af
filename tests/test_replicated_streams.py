"""Replicated streams on the engine's side, without NATS (docs/cluster.md):
``StreamTarget.append_at`` on both cores, and a Flow stream with
``replicas > 1`` whose log is fed by a mirror, never by the router.  The
JetStream side is tests/test_cluster_streams.py."""

import json

import pytest

from fastflow import Event, EventError, Flow, Retention

from conftest import REF_CORE


def record(data=b"x", **attrs):
    return Event("orders.eu", data, source="/t", **attrs).encode()


# -- StreamTarget.append_at (both cores) ---------------------------------------------------


def test_stream_target_append_at(core):
    log = core.Log()
    t = core.StreamTarget("S", log)
    heard = []
    t.listeners.append(heard.append)
    assert t.append_at(3, "orders.eu", record(b"abc")) == 3
    assert t.append_at(4, b"orders.us", bytearray(record(b"de"))) == 4
    assert t.append_at(9, "orders.eu", memoryview(record(b""))) == 9
    assert heard == [3, 4, 9]
    assert (t.appended, t.appended_bytes) == (3, 5)
    assert (log.first_seq, log.last_seq, len(log)) == (3, 9, 3)
    ev = Event.decode("orders.eu", log.get(3).data)
    assert (ev.data, ev.source, ev.routing_subject) == (b"abc", "/t", "orders.eu")
    assert log.get(4).subject == "orders.us"


def test_stream_target_append_at_refuses(core):
    log = core.Log()
    t = core.StreamTarget("S", log)
    heard = []
    t.listeners.append(heard.append)
    t.append_at(5, "a", record())
    with pytest.raises(EventError, match="invalid event record for 'a'"):
        t.append_at(6, "a", b"not a record")
    with pytest.raises(ValueError, match="append_at: seq 5 must be after last_seq 5"):
        t.append_at(5, "a", record())
    with pytest.raises(ValueError, match="invalid subject"):
        t.append_at(6, "a..b", record())
    assert (heard, t.appended, log.last_seq) == ([5], 1, 5)
    assert t.append_at(6, "a", record()) == 6


def test_stream_target_append_at_cores_agree():
    from conftest import CORES

    out = []
    for core in CORES.values():
        log = core.Log(max_events=3)
        t = core.StreamTarget("S", log)
        for seq in (2, 3, 7, 8, 20):
            t.append_at(seq, "s.{}".format(seq % 2), record(bytes([seq]), id=str(seq)))
        out.append([(s, subj, bytes(m)) for s, _, subj, m in log.read(0)])
    assert all(o == out[0] for o in out)
    assert [o[0] for o in out[0]] == [7, 8, 20]
    assert REF_CORE is not None


# -- Flow: a stream with replicas -------------------------------------------------------------


def test_replicated_stream_is_not_fed_by_publish():
    f = Flow()
    local = f.add_stream("L", "orders.>")
    rep = f.add_stream("R", ["orders.>", "billing.*"], replicas=3)
    assert rep.replicated and rep.replicas == 3 and not local.replicated
    got = []
    f.subscribe("orders.>", got.append)
    assert f.publish("orders.eu", b"1") == 1    # the local stream's seq
    assert len(got) == 1 and len(local) == 1
    assert len(rep) == 0 and rep.log.last_seq == 0
    assert f.publish("billing.x", b"2") == 0    # no local stream: no seq
    assert f.replicated_stream("orders.eu") is rep
    assert f.replicated_stream("billing.x") is rep
    assert f.replicated_stream("billing.x.y") is None
    assert f.replicated_stream("other") is None
    assert Flow().replicated_stream("orders.eu") is None
    info = rep.info()
    assert info["replicas"] == 3 and "replicas" not in local.info()


def test_replicated_stream_mirror_feeds_consumers_and_replay():
    f = Flow()
    rep = f.add_stream("R", "orders.>", replicas=3)
    pushed = []
    rep.consumer("push", callback=lambda ev: (pushed.append(ev.seq), ev.ack()))
    pull = rep.consumer("pull")
    for seq in (1, 2, 5):
        assert rep.append_at(seq, "orders.eu", record(bytes([seq]))) == seq
    assert pushed == [1, 2, 5]
    evs = pull.fetch(10)
    assert [(e.seq, e.data, e.stream) for e in evs] == [(1, b"\x01", "R"), (2, b"\x02", "R"),
                                                         (5, b"\x05", "R")]
    assert [e.seq for e in rep.replay(seq=3)] == [5]
    assert rep.get(5).data == b"\x05"
    with pytest.raises(KeyError):
        rep.get(3)
    assert rep.info()["stored"] == 3


def test_replicated_stream_cache_never_refuses():
    # the retention's discard/duplicate window are JetStream's: the cache
    # evicts the oldest, and keeps what JetStream stored
    f = Flow()
    rep = f.add_stream("R", "o.>", Retention(max_events=2, discard="new",
                                             duplicate_window=60), replicas=3)
    same = record(b"a", id="fixed")
    for seq in (1, 2, 3):
        rep.append_at(seq, "o.a", same)
    assert [s for s, _, _, _ in rep.log.read(0)] == [2, 3]
    assert rep.retention.discard == "new"       # (what JetStream is told)


def test_replicated_stream_config_and_handler():
    f = Flow()
    seen = []
    f.replica_handler = lambda kind, st: seen.append((kind, st.name))
    rep = f.add_stream("R", "o.>", replicas=3)
    assert f.add_stream("R", "o.>", replicas=3) is rep
    with pytest.raises(ValueError, match="exists with another config.*replicas=3"):
        f.add_stream("R", "o.>")
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="replicas must be an int >= 1"):
            f.add_stream("X", "x.>", replicas=bad)
    f.add_stream("L", "l.>")
    f.delete_stream("L")
    f.delete_stream("R")
    assert seen == [("add", "R"), ("delete", "R")]
    assert f.replicated_stream("o.a") is None
    f.add_stream("R", "o.>")                    # the name again, local now
    assert f.publish("o.a", b"") == 1


def test_replicated_stream_persists(tmp_path):
    with Flow(tmp_path) as f:
        rep = f.add_stream("R", "o.>", replicas=3)
        rep.append_at(4, "o.a", record(b"4"))
        rep.consumer("c").fetch(1)[0].ack()
    state = json.loads((tmp_path / "flow.json").read_text())
    assert state["streams"]["R"]["replicas"] == 3
    seen = []
    with Flow(tmp_path) as f:
        rep = f.stream("R")
        assert rep.replicas == 3 and f.replicated_stream("o.x") is rep
        assert (rep.log.first_seq, rep.log.last_seq) == (4, 4)
        assert f.publish("o.x", b"") == 0 and len(rep) == 1
        rep.append_at(7, "o.b", record(b"7"))
        assert [e.seq for e in rep.consumer("c").fetch(5)] == [7]
        f.replica_handler = lambda kind, st: seen.append(kind)
    assert seen == []
