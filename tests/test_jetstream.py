"""fastflow.cluster.jetstream without a NATS server: names and config,
the ack reply parser, PubAcks and the Mirror over a fake link that plays
JetStream's part (its answers and deliveries as nats-server 2.9 sends
them).  The same code against a real cluster: tests/test_cluster_streams.py."""

import asyncio
import json
from typing import NamedTuple, Optional

import pytest

from fastflow import Event, Flow, Retention
from fastflow.cluster import Link
from fastflow.cluster import jetstream as jsm
from fastflow.cluster.jetstream import (
    JetStream,
    Mirror,
    PubAcks,
    ReplicatedStreams,
    account_prefix,
    door_code,
    js_stream_name,
    parse_ack_reply,
    stream_config,
)
from fastflow.errors import JetStreamError


class Msg(NamedTuple):
    subject: str
    reply: Optional[str]
    headers: Optional[bytes]
    data: bytes


class FakeLink:
    """The link API; ``answer(subject, payload)`` plays JetStream's API."""

    def __init__(self, answer=None):
        self.connected = True
        self.subs = {}
        self.published = []
        self.requests = []
        self.callbacks = []
        self.answer = answer
        self._sid = 0

    def subscribe(self, subject, callback, queue=None):
        self._sid += 1
        self.subs[self._sid] = (subject, callback)
        return self._sid

    def unsubscribe(self, sid):
        self.subs.pop(sid, None)

    def publish(self, subject, payload, reply=None, headers=None):
        self.published.append((subject, payload, reply))

    def on_connect(self, callback):
        self.callbacks.append(callback)

    async def request(self, subject, payload, timeout=2.0, headers=None):
        self.requests.append((subject, json.loads(payload) if payload else None))
        out = self.answer(subject, json.loads(payload) if payload else None)
        if isinstance(out, BaseException):
            raise out
        return Msg("_INBOX.x", None, None, json.dumps(out).encode())

    def deliver(self, subject_pattern, msg):
        """Hand ``msg`` to the subscription on ``subject_pattern``."""
        for subject, cb in list(self.subs.values()):
            if subject == subject_pattern:
                cb(msg)
                return True
        return False


def run(coro):
    return asyncio.run(coro)


# -- names, config, parsing ---------------------------------------------------------------


def test_names_and_prefix():
    assert js_stream_name("$G", "orders") == "FF__G_orders"
    assert js_stream_name("acme", "o-1_x") == "FF_acme_o-1_x"
    assert account_prefix("$G") == "_FFA.$G."
    assert account_prefix("acme") == "_FFA.acme."
    link = Link("nats://127.0.0.1:4222", node="n")
    link.attach("odd name", Flow())
    assert account_prefix("odd name", link) == link.accounts["odd name"].prefix \
        == "_FFA.x6f6464206e616d65."


def test_stream_config_maps_retention():
    r = Retention(max_events=10, max_bytes=1000, max_age=60, max_per_subject=2,
                  max_event_size=512, discard="new", duplicate_window=120)
    c = stream_config("FF_a_s", ["_FFA.a.o.>"], r, 3)
    assert c == {"name": "FF_a_s", "subjects": ["_FFA.a.o.>"], "retention": "limits",
                 "max_consumers": -1, "max_msgs": 10, "max_bytes": 1000,
                 "max_age": 60_000_000_000, "max_msgs_per_subject": 2, "max_msg_size": 512,
                 "discard": "new", "storage": "file", "num_replicas": 3,
                 # (JetStream wants the duplicate window within max_age)
                 "duplicate_window": 60_000_000_000}
    c = stream_config("F", ["o"], Retention(max_event_size=0), 3)
    assert (c["max_msgs"], c["max_bytes"], c["max_age"], c["max_msgs_per_subject"],
            c["max_msg_size"], c["duplicate_window"]) == (-1, -1, 0, -1, -1, 120_000_000_000)


def test_parse_ack_reply():
    assert parse_ack_reply("$JS.ACK.FOO.6WCGJyfP.1.2.1.1796438423884244340.1") == (2, 1)
    assert parse_ack_reply("$JS.ACK.dom.acchash.FOO.cons.1.77.5.1796438423884244340.0.rnd") \
        == (77, 5)
    for bad in (None, "", "_INBOX.x", "$JS.ACK.FOO.c.1.x.1.2.3", "$JS.ACK.a.b"):
        assert parse_ack_reply(bad) is None


def test_door_code():
    assert door_code(JetStreamError(503, "publish: maximum messages exceeded", 10077)) == 507
    assert door_code(JetStreamError(400, "publish: message size exceeds maximum allowed",
                                    10054)) == 413
    assert door_code(JetStreamError(408, "no acknowledgement within 3 s")) == 503
    assert door_code(ValueError("x")) == 503


def test_api_errors():
    def answer(subject, body):
        if subject.endswith("INFO.NOPE"):
            return {"error": {"code": 404, "err_code": 10059, "description": "stream not found"}}
        if subject.endswith("INFO.SLOW"):
            return TimeoutError("no answer")
        return {"error": {"code": 503, "err_code": 10008,
                          "description": "JetStream system temporarily unavailable"}}

    js = JetStream(FakeLink(answer), timeout=0.5)

    async def go():
        assert await js.stream_info("NOPE") is None
        with pytest.raises(JetStreamError, match=r"stream info SLOW: no answer within 0.5 s "
                                                 r"\(code 408\)"):
            await js.stream_info("SLOW")
        with pytest.raises(JetStreamError, match="temporarily unavailable") as ei:
            await js.stream_info("X")
        assert (ei.value.code, ei.value.err_code) == (503, 10008)
    run(go())


def test_ensure_stream_creates_then_updates():
    streams = {}

    def answer(subject, body):
        op, name = subject[len("$JS.API."):].rsplit(".", 1)
        if op == "STREAM.INFO":
            if name not in streams:
                return {"error": {"code": 404, "err_code": 10059,
                                  "description": "stream not found"}}
            return {"config": streams[name], "state": {"last_seq": 0}}
        if op in ("STREAM.CREATE", "STREAM.UPDATE"):
            streams[name] = dict(body, sealed=False)
            return {"config": streams[name]}
        raise AssertionError(subject)

    link = FakeLink(answer)
    js = JetStream(link)
    cfg = stream_config("FF__G_s", ["s.>"], Retention(), 3)

    async def go():
        await js.ensure_stream(cfg)
        await js.ensure_stream(cfg)             # the same: info only
        cfg2 = stream_config("FF__G_s", ["s.>"], Retention(max_events=5), 3)
        await js.ensure_stream(cfg2)
    run(go())
    ops = [s.rsplit(".", 1)[0][len("$JS.API."):] for s, _ in link.requests]
    assert ops == ["STREAM.INFO", "STREAM.CREATE", "STREAM.INFO", "STREAM.INFO", "STREAM.UPDATE"]
    assert streams["FF__G_s"]["max_msgs"] == 5 and streams["FF__G_s"]["sealed"] is False


# -- PubAcks ----------------------------------------------------------------------------------


def test_pub_acks_resolve_fail_and_ignore_strays():
    link = FakeLink()
    acks = PubAcks(link, "n1", timeout=5.0, max_pending=3)

    async def go():
        acks.start()
        assert sorted(s for s, _ in link.subs.values()) == ["_FFA.*._FFK.n1.*", "_FFK.n1.*"]
        r1, f1 = acks.expect("FF__G_s")
        r2, f2 = acks.expect("FF_a_s")
        r3, f3 = acks.expect("FF__G_s")
        assert (r1, r2) == ("_FFK.n1.1", "_FFK.n1.2")
        with pytest.raises(JetStreamError, match="3 publishes are waiting") as ei:
            acks.expect()
        assert ei.value.code == 503
        link.deliver("_FFK.n1.*", Msg(r1, None, None, b'{"stream":"FF__G_s","seq":7}'))
        # an account's reply carries its prefix
        link.deliver("_FFA.*._FFK.n1.*", Msg("_FFA.a." + r2, None, None,
                                             b'{"stream":"FF_a_s","seq":3,"duplicate":true}'))
        # not JetStream's (a subscriber answered), another stream's: waited on
        link.deliver("_FFK.n1.*", Msg(r3, None, None, b"thanks"))
        link.deliver("_FFK.n1.*", Msg(r3, None, None, b'{"stream":"OTHER","seq":1}'))
        assert not f3.done()
        link.deliver("_FFK.n1.*", Msg(r3, None, None, json.dumps({"error": {
            "code": 503, "err_code": 10077, "description": "maximum messages exceeded"}})
            .encode()))
        link.deliver("_FFK.n1.*", Msg("_FFK.n1.99", None, None, b'{"seq":1}'))   # late
        assert await f1 == ("FF__G_s", 7, False)
        assert await f2 == ("FF_a_s", 3, True)
        with pytest.raises(JetStreamError, match="maximum messages exceeded") as ei:
            await f3
        assert door_code(ei.value) == 507
        assert acks.info() == {"pending": 0, "acked": 2, "errors": 1, "timeouts": 0,
                               "refused": 1, "stray": 3}
        r4, f4 = acks.expect()
        acks.forget(r4)
        assert f4.cancelled() and acks.pending == 0
        acks.stop()
        assert link.subs == {}
    run(go())


def test_pub_acks_time_out():
    link = FakeLink()
    acks = PubAcks(link, "n1", timeout=0.05)

    async def go():
        acks.start()
        _, f1 = acks.expect()
        await asyncio.sleep(0.03)
        r2, f2 = acks.expect()
        with pytest.raises(JetStreamError, match=r"no acknowledgement within 0.05 s") as ei:
            await f1
        assert ei.value.code == 408 and not f2.done()
        link.deliver("_FFK.n1.*", Msg(r2, None, None, b'{"stream":"S","seq":2}'))
        assert (await f2).seq == 2
        _, f3 = acks.expect()
        acks.stop()
        with pytest.raises(JetStreamError, match="link was closed"):
            await f3
        assert acks.info()["timeouts"] == 1
    run(go())


# -- the mirror -------------------------------------------------------------------------------


class FakeJetStream:
    """JetStream's part for a Mirror: one stream, its consumers' configs."""

    def __init__(self, last_seq=0):
        self.last_seq = last_seq
        self.consumers = []             # configs, in order of creation
        self.deleted = []
        self.fail = 0                   # create requests to refuse first

    def answer(self, subject, body):
        api = subject[len("$JS.API."):]
        if api.startswith("STREAM.INFO."):
            return {"config": {}, "state": {"last_seq": self.last_seq}}
        if api.startswith("CONSUMER.CREATE."):
            if self.fail:
                self.fail -= 1
                return {"error": {"code": 503, "err_code": 10008,
                                  "description": "JetStream system temporarily unavailable"}}
            self.consumers.append(body["config"])
            return {"name": "C{}".format(len(self.consumers)), "config": body["config"]}
        if api.startswith("CONSUMER.DELETE."):
            self.deleted.append(api.rsplit(".", 1)[1])
            return {"success": True}
        raise AssertionError(subject)


def delivery(link, fake, sseq, dseq, subject="o.a", data=None, name=None):
    cfg = fake.consumers[-1]
    rec = Event(subject, data if data is not None else b"%d" % sseq).encode() \
        if not isinstance(data, bytes) or data[:1] == b"\x01" or data is None else data
    reply = "$JS.ACK.S.{}.1.{}.{}.17964384238842.0".format(name or "C{}".format(
        len(fake.consumers)), sseq, dseq)
    return link.deliver(cfg["deliver_subject"], Msg("_FFA.$G." + subject, reply, None, rec))


def heartbeat(link, fake, last_consumer, last_stream=0, stalled=None):
    h = "NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: {}\r\nNats-Last-Stream: {}\r\n" \
        .format(last_consumer, last_stream)
    if stalled:
        h += "Nats-Consumer-Stalled: {}\r\n".format(stalled)
    return link.deliver(fake.consumers[-1]["deliver_subject"],
                        Msg(fake.consumers[-1]["deliver_subject"], None,
                            (h + "\r\n").encode(), b""))


async def until(cond, timeout=2.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met within {} s".format(timeout))
        await asyncio.sleep(0.005)


def make_mirror(last_seq=0, heartbeat=0.05, account="$G", log_last=0):
    fake = FakeJetStream(last_seq)
    link = FakeLink(fake.answer)
    flow = Flow()
    st = flow.add_stream("S", "o.>", replicas=3)
    if log_last:
        st.append_at(log_last, "o.a", Event("o.a", b"").encode())
    m = Mirror(link, JetStream(link), "n1", account, st, "FF__G_S", heartbeat)
    return fake, link, st, m


def test_mirror_stores_deliveries_at_their_seqs():
    async def go():
        fake, link, st, m = make_mirror()
        pushed = []
        st.consumer("c", callback=lambda ev: (pushed.append(ev.seq), ev.ack()))
        m.start()
        await until(lambda: m.state == "mirroring")
        cfg = fake.consumers[0]
        assert cfg["deliver_subject"].startswith("_FFJ.n1.")
        assert (cfg["opt_start_seq"], cfg["deliver_policy"], cfg["ack_policy"],
                cfg["flow_control"], cfg["idle_heartbeat"]) == (1, "by_start_sequence", "none",
                                                                True, 50_000_000)
        delivery(link, fake, 1, 1)
        delivery(link, fake, 2, 2)
        delivery(link, fake, 9, 3)          # 3..8 gone from JetStream: skipped
        assert [(e.seq, e.data) for e in st.replay()] == [(1, b"1"), (2, b"2"), (9, b"9")]
        assert pushed == [1, 2, 9]
        delivery(link, fake, 10, 4, data=b"not a record")
        assert st.log.last_seq == 9
        delivery(link, fake, 11, 5)
        assert st.log.last_seq == 11
        # flow control: answered at once
        link.deliver(cfg["deliver_subject"], Msg(cfg["deliver_subject"], "$JS.FC.S.x.1",
                                                 b"NATS/1.0 100 FlowControl Request\r\n\r\n",
                                                 b""))
        assert link.published[-1] == ("$JS.FC.S.x.1", b"", None)
        heartbeat(link, fake, 5, 11, stalled="$JS.FC.S.y.2")
        assert link.published[-1] == ("$JS.FC.S.y.2", b"", None)
        info = m.info()
        assert (info["stored"], info["skipped"], info["invalid"], info["resets"],
                info["flow_control"], info["heartbeats"]) == (4, 7, 1, 0, 1, 1)
        assert len(fake.consumers) == 1
        await m.stop()
        assert fake.deleted == ["C1"] and link.subs == {}
    run(go())


def test_mirror_remakes_its_consumer_on_a_gap():
    async def go():
        fake, link, st, m = make_mirror()
        m.start()
        await until(lambda: m.state == "mirroring")
        delivery(link, fake, 1, 1)
        delivery(link, fake, 3, 3)          # consumer seq 2 was lost: again from seq 2
        assert st.log.last_seq == 1
        await until(lambda: len(fake.consumers) == 2 and m.state == "mirroring")
        assert fake.consumers[1]["opt_start_seq"] == 2
        assert fake.consumers[1]["deliver_subject"] != fake.consumers[0]["deliver_subject"]
        # the old consumer's deliveries are no longer taken
        old = fake.consumers[0]["deliver_subject"]
        assert not link.deliver(old, Msg("_FFA.$G.o.a", "$JS.ACK.S.C1.1.2.2.1.0", None, b""))
        delivery(link, fake, 2, 1)
        delivery(link, fake, 3, 2)
        assert [e.seq for e in st.replay()] == [1, 2, 3]
        # a heartbeat that says more was delivered than taken
        heartbeat(link, fake, 7, 20)
        await until(lambda: len(fake.consumers) == 3)
        assert fake.consumers[2]["opt_start_seq"] == 4
        await until(lambda: "C1" in fake.deleted and "C2" in fake.deleted)
        assert m.info()["resets"] == 2
        await m.stop()
    run(go())


def test_mirror_remakes_its_consumer_when_silent_or_reconnected():
    async def go():
        fake, link, st, m = make_mirror(heartbeat=0.02)
        m.start()
        await until(lambda: m.state == "mirroring")
        await until(lambda: len(fake.consumers) >= 2, timeout=3)    # 3 heartbeats of silence
        n = len(fake.consumers)
        heartbeat(link, fake, 0)
        m.reset("the cluster link (re)connected")
        await until(lambda: len(fake.consumers) > n)
        await m.stop()
    run(go())


def test_mirror_retries_and_starts_after_the_cache():
    async def go():
        fake, link, st, m = make_mirror(last_seq=50, log_last=40)
        fake.fail = 2
        m.start()
        await until(lambda: m.state == "mirroring", timeout=3)
        assert fake.consumers[0]["opt_start_seq"] == 41
        assert m.info()["errors"] == 2 and m.info()["last_error"] is None
        await m.stop()
    run(go())


def test_mirror_strips_the_account_prefix():
    async def go():
        fake, link, st, m = make_mirror(account="acme")
        m.start()
        await until(lambda: m.state == "mirroring")
        cfg = fake.consumers[0]
        rec = Event("o.a", b"x").encode()
        link.deliver(cfg["deliver_subject"], Msg("_FFA.acme.o.a", "$JS.ACK.S.C1.1.1.1.1.0",
                                                 None, rec))
        link.deliver(cfg["deliver_subject"], Msg("_FFA.other.o.a", "$JS.ACK.S.C1.1.2.2.1.0",
                                                 None, rec))
        assert st.get(1).routing_subject == "o.a"
        assert (st.log.last_seq, m.info()["invalid"]) == (1, 1)
        await m.stop()
    run(go())


def test_service_attaches_flows():
    async def go():
        fake = FakeJetStream()
        created = []

        def answer(subject, body):
            name = subject.rsplit(".", 1)[1]
            if subject.startswith("$JS.API.STREAM.CREATE."):
                created.append(body)
                return {"config": body}
            if subject.startswith("$JS.API.STREAM.INFO.") and \
                    name not in [c["name"] for c in created]:
                return {"error": {"code": 404, "err_code": 10059,
                                  "description": "stream not found"}}
            return fake.answer(subject, body)
        link = FakeLink(answer)
        svc = ReplicatedStreams(link, "n1", heartbeat=0.05)
        flow = Flow()
        flow.add_stream("L", "l.>")
        r1 = flow.add_stream("R1", "o.>", replicas=3)
        svc.attach("acme", flow)
        svc.start()
        assert link.callbacks == [svc._on_connect]
        r2 = flow.add_stream("R2", ["p.>", "q.*"], Retention(max_events=9), replicas=2)
        await until(lambda: r1.mirror.state == r2.mirror.state == "mirroring")
        assert sorted((c["name"], tuple(c["subjects"]), c["num_replicas"]) for c in created) == [
            ("FF_acme_R1", ("_FFA.acme.o.>",), 3), ("FF_acme_R2", ("_FFA.acme.p.>",
                                                                   "_FFA.acme.q.*"), 2)]
        assert r1.info()["mirror"]["state"] == "mirroring"
        assert set(svc.info()["streams"]) == {"acme/R1", "acme/R2"}
        flow.delete_stream("R2")
        await until(lambda: "acme/R2" not in svc.info()["streams"])
        n = len(fake.consumers)
        svc._on_connect()
        await until(lambda: len(fake.consumers) == n + 1)
        await svc.close()
        assert flow.replica_handler is None and svc.mirrors == {}
    run(go())


def test_module_names():
    assert set(jsm.__all__) <= set(dir(jsm))


def test_service_forwards_replicated_subjects_through_the_link():
    # the account's forwarder on a replicated stream's patterns: its publishes
    # go to the backbone (to JetStream) though no node wants them, written once
    link = Link("nats://127.0.0.1:4222", node="n")
    flow = Flow()
    link.attach("$G", flow)
    link.connected = True               # (what is written stays in link.out)
    flow.add_stream("R", ["o.>", "o.a"], replicas=3)
    svc = ReplicatedStreams(link, link.node)
    svc.attach("$G", flow)
    assert flow.publish("o.a", b"x") == 0
    assert flow.publish("p", b"y") == 0
    out = link.out.take()
    assert out.startswith(b"PUB _FFA.$G.o.a ") and out.count(b"PUB ") == 1
    assert flow.interest() == []        # not this node's interest: nothing comes back
    flow.delete_stream("R")
    flow.publish("o.a", b"x")
    assert link.out.take() == b""


def test_mirror_with_a_refused_config_mirrors_the_stream_as_it_is():
    async def go():
        fake, link, st, m = make_mirror()
        calls = []

        async def ensure():
            calls.append(1)
            if len(calls) == 1:
                raise JetStreamError(503, "update stream: no leader", 10008)
            raise JetStreamError(400, "update stream: stream configuration update can "
                                 "not change storage type", 10052)
        m.ensure = ensure
        m.start()
        await until(lambda: m.state == "mirroring", timeout=3)
        assert len(calls) == 2          # a 503 is tried again, a refusal is not
        assert "can not change storage type" in m.info()["config_error"]
        assert m.info()["last_error"] is None
        # the JetStream stream deleted: made again (ensure), then mirrored
        gone = []
        real = fake.answer

        def answer(subject, body):
            if subject.startswith("$JS.API.STREAM.INFO.") and not gone:
                gone.append(1)
                return {"error": {"code": 404, "err_code": 10059,
                                  "description": "stream not found"}}
            return real(subject, body)
        link.answer = answer
        m.reset("test")
        await until(lambda: len(calls) == 3 and m.state == "mirroring", timeout=3)
        await m.stop()
    run(go())
