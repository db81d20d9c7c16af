"""Streams and durable consumers over the wire, hardened (issue 11): who may
manage, read and consume which stream, consumers belong to whoever made
them, a stream that refuses an event never stops its delivery, and the
duplicate window keyed by the event's (source, id).

Engine tests run on both cores (``core``); server tests run in the
test's loop under asyncio and uvloop (``aloop``), on the core the run
selected (``FASTFLOW_NO_EXTENSIONS=1`` for the reference)."""

import pytest

import fastflow
import fastflow.client as fc
from fastflow.errors import EventTooLarge, LogFullError

from helpers import wait_until


# -- a refusing stream never blocks delivery ------------------------------------------------


def test_a_stream_that_refuses_an_event_does_not_stop_its_delivery(core):
    Router, StreamTarget, SubTarget, Log = core.Router, core.StreamTarget, core.SubTarget, core.Log
    r = Router("t")
    full = StreamTarget("FULL", Log(max_events=1, discard="new"))
    small = StreamTarget("SMALL", Log(max_event_size=200))
    keep = StreamTarget("KEEP", Log())
    r.add(">", full)
    r.add("a.>", small)
    r.add("a.>", keep)
    got = []
    r.add("a.b", SubTarget(got.append))
    assert r.publish("a.b", b"1") == 1
    with pytest.raises(LogFullError, match=r"stream 'FULL' did not store the event: "
                                           r"log full: max_events=1"):
        r.publish("a.b", b"2")
    with pytest.raises(LogFullError) as ei:     # the first refusal is the one raised
        r.publish("a.b", b"3" * 500)
    assert ei.value.stream == "FULL"
    assert [e.data for e in got] == [b"1", b"2", b"3" * 500]
    assert (full.rejected, small.rejected, keep.rejected) == (2, 1, 0)
    assert (full.log.last_seq, small.log.last_seq, keep.log.last_seq) == (1, 2, 3)
    assert r.stats()["rejected_by_stream"] == 3

    # a batch: every event is published, the first refusal raised at the end
    with pytest.raises(LogFullError, match=r"stream 'FULL' .* \(batch index 0; the whole batch "
                                           r"was published\)"):
        r.publish_batch("a.b", [b"4", b"5", b"6"])
    assert [e.data for e in got[3:]] == [b"4", b"5", b"6"]
    assert keep.log.last_seq == 6

    r2 = Router("t2")
    r2.add("b", StreamTarget("SMALL", Log(max_event_size=200)))
    got2 = []
    r2.add("b", SubTarget(got2.append))
    with pytest.raises(EventTooLarge, match="stream 'SMALL' did not store the event"):
        r2.publish("b", b"x" * 500)
    assert [e.data for e in got2] == [b"x" * 500]


def test_a_full_stream_on_every_subject_blocks_no_one_over_the_wire(aloop, ffserver):
    async def main():
        async with ffserver() as srv:
            errors = []
            async with await fc.connect(srv.url) as admin, \
                    await fc.connect(srv.url, error_callback=errors.append) as pub:
                await admin.add_stream("ALL", [">"], {"max_events": 1, "discard": "new"})
                sub = admin.subscribe("x.>")
                await admin.flush()
                assert await pub.publish_ack("x.1", b"1") == (1, "ALL")
                pub.publish("x.2", b"2")
                await pub.flush()
                with pytest.raises(fc.ServerError) as ei:
                    await pub.publish_ack("x.3", b"3")
                assert ei.value.code == 507
                assert "stream 'ALL' did not store the event" in ei.value.message
                assert [(await sub.next(2)).data for _ in range(3)] == [b"1", b"2", b"3"]
                with pytest.raises(fc.ServerError, match=r"PUB_BATCH item 0: stream 'ALL' did not "
                                                         r"store .* \(all 2 items were published"):
                    await pub.publish_batch_ack(["x.4", "x.5"], [b"4", b"5"], type="t")
                assert [(await sub.next(2)).data for _ in range(2)] == [b"4", b"5"]
                await wait_until(lambda: len(errors) == 1, what="the ERR of the plain PUB")
                assert errors[0].code == 507 and "'ALL'" in errors[0].message
                info = await admin.stream_info("ALL")
                assert (info["events"], info["rejected"]) == (1, 4)

    aloop(main)


# -- stream permissions ----------------------------------------------------------------------

SVC = {"publish": ["svc.>"], "subscribe": ["svc.>"]}                  # streams: the default
MGR = {"publish": ["svc.>", "mgr.>"], "subscribe": ["svc.>", "mgr.>"], "streams": "manage"}


def users(**more):
    u = [{"user": "svc", "password": "svc-pw", "permissions": SVC},
         {"user": "mgr", "password": "mgr-pw", "permissions": MGR}]
    u += [{"user": name, "password": name + "-pw", "permissions": p} for name, p in more.items()]
    return dict(token="admin", users=u)


def test_stream_management_needs_manage_and_rights_on_every_subject(aloop, ffserver):
    async def main():
        async with ffserver(**users()) as srv:
            url = srv.url
            async with await fc.connect(url, token="admin") as admin, \
                    await fc.connect(url, user="svc", password="svc-pw",
                                     error_callback=lambda e: None) as svc, \
                    await fc.connect(url, user="mgr", password="mgr-pw",
                                     error_callback=lambda e: None) as mgr:
                await admin.add_stream("ADM", ["adm.>"])
                await admin.add_stream("SVC", ["svc.>"])
                admin.publish("adm.1", b"secret")
                await admin.flush()

                # a permissions table without 'streams': no stream management
                for call in (lambda: svc.add_stream("S", ["svc.a.>"]),
                             lambda: svc.add_stream("ALL", [">"],
                                                    {"max_events": 1, "discard": "new"}),
                             lambda: svc.delete_stream("ADM"),
                             lambda: svc.purge_stream("ADM"),
                             lambda: svc.delete_stream("SVC"),
                             lambda: svc.purge_stream("SVC")):
                    with pytest.raises(fc.PermissionDeniedError, match="managing streams"):
                        await call()
                # reading needs rights on the stream's subjects
                with pytest.raises(fc.PermissionDeniedError, match="subscribe to 'adm.>'"):
                    await svc.stream_info("ADM")
                with pytest.raises(fc.PermissionDeniedError):
                    await svc.replay("ADM").list()
                with pytest.raises(fc.PermissionDeniedError):
                    await svc.add_consumer("ADM", "peek")
                await admin.add_consumer("ADM", "adm")
                assert await svc.consumers("ADM") == []
                assert [s["name"] for s in await svc.streams()] == ["SVC"]
                assert (await svc.stream_info("SVC"))["subjects"] == ["svc.>"]

                # manage: only streams on subjects it may publish and subscribe to
                for subjects in ([">"], ["svc.>", "adm.>"], ["*.x"], ["$SYS.>"]):
                    with pytest.raises(fc.PermissionDeniedError, match="STREAM add"):
                        await mgr.add_stream("M", subjects, {"max_events": 1, "discard": "new"})
                for call in (lambda: mgr.delete_stream("ADM"), lambda: mgr.purge_stream("ADM"),
                             lambda: mgr.add_stream("ADM", ["adm.>"])):
                    with pytest.raises(fc.PermissionDeniedError, match="'adm.>'"):
                        await call()
                await mgr.add_stream("M", ["mgr.>", "svc.m.*"])
                assert await mgr.purge_stream("SVC") == 0
                await mgr.delete_stream("M")
                assert sorted(s["name"] for s in await mgr.streams()) == ["SVC"]

                # nothing of ADM changed, and the admin (no permissions) does everything
                assert (await admin.stream_info("ADM"))["events"] == 1
                assert sorted(s["name"] for s in await admin.streams()) == ["ADM", "SVC"]
                assert await admin.purge_stream("ADM") == 1
                await admin.delete_stream("ADM")
                assert srv.stats()["permission_denied"] >= 15

    aloop(main)


def test_default_permissions_of_a_user_do_not_manage_streams():
    from fastflow.server.auth import Permissions

    assert Permissions.from_dict({"publish": [">"]}).streams == "read"
    assert Permissions.from_dict({"streams": "manage"}).streams == "manage"
    assert Permissions.from_dict(None).streams == "manage"          # no permissions at all
    p = Permissions.from_dict({"publish": {"allow": ["a.>"], "deny": ["a.x.>"]},
                               "subscribe": ["a.>"], "streams": "manage"})
    assert p.stream_manage_denied(["a.y.>", "a.b"]) is None
    assert "overlaps the denied 'a.x.>'" in p.stream_manage_denied(["a.*.z"])
    assert "publish to 'a'" in p.stream_manage_denied(["a"])
    assert "publish to '>'" in p.stream_manage_denied([">"])


# -- consumers belong to whoever made them -----------------------------------------------------

JOBS = {"publish": ["jobs.>"], "subscribe": ["jobs.>"], "streams": "read"}


def test_consumers_are_operated_by_their_owner_or_a_manager(aloop, ffserver):
    async def main():
        more = {"alice": JOBS, "bob": JOBS,
                "boss": dict(JOBS, streams="manage"),
                "other": {"publish": ["else.>"], "subscribe": ["else.>"]}}
        async with ffserver(**users(**more)) as srv:
            url = srv.url
            bob_errors = []
            alice_errors = []
            async with await fc.connect(url, token="admin") as admin, \
                    await fc.connect(url, user="alice", password="alice-pw",
                                     error_callback=alice_errors.append) as alice, \
                    await fc.connect(url, user="bob", password="bob-pw",
                                     error_callback=bob_errors.append) as bob, \
                    await fc.connect(url, user="other", password="other-pw",
                                     error_callback=lambda e: None) as other:
                await admin.add_stream("JOBS", ["jobs.>"])
                await admin.add_stream("ELSE", ["else.>"])
                await alice.add_consumer("JOBS", "a", ack="all")
                for i in range(3):
                    await admin.publish_ack("jobs.{}".format(i), b"%d" % i)

                # bob may read the stream, not alice's consumer
                for call in (lambda: bob.fetch("JOBS", "a", 3),
                             lambda: bob.delete_consumer("JOBS", "a"),
                             lambda: bob.add_consumer("JOBS", "a", ack="all")):
                    with pytest.raises(fc.PermissionDeniedError, match="another user"):
                        await call()
                await bob._ack("$ACK.JOBS.a.18446744073709551615", 1)
                await bob._ack("$ACK.JOBS.a.2", 3)
                await wait_until(lambda: len(bob_errors) == 2, what="bob's ACK errors")
                assert all(e.code == 403 and "another user" in e.message for e in bob_errors)
                # an ACK beyond the stream's last seq is an error naming it
                await alice._ack("$ACK.JOBS.a.18446744073709551615", 1)
                await wait_until(lambda: len(alice_errors) == 1, what="alice's ACK error")
                assert alice_errors[0].code == 400
                assert "seq 18446744073709551615 is beyond the last seq 3 of stream 'JOBS'" \
                    in alice_errors[0].message
                info = await alice.consumer_info("JOBS", "a")
                assert (info["acked"], info["terminated"], info["ack_floor"]) == (0, 0, 0)

                # the owner works as before
                ds = await alice.fetch("JOBS", "a", 3)
                assert [d.data for d in ds] == [b"0", b"1", b"2"]
                await ds[-1].ack()
                await wait_until(lambda: srv.flow.stream("JOBS").consumers()["a"].ack_floor == 3)

                # lists show what the caller may read
                await admin.add_consumer("ELSE", "e")
                assert await other.consumers("JOBS") == []
                assert [c["name"] for c in await other.consumers("ELSE")] == ["e"]
                assert [s["name"] for s in await other.streams()] == ["ELSE"]
                assert [s["name"] for s in await bob.streams()] == ["JOBS"]

                # a manager of the stream operates every consumer of it
                async with await fc.connect(url, user="boss", password="boss-pw") as boss:
                    assert (await boss.consumer_info("JOBS", "a"))["ack_floor"] == 3
                    await boss.delete_consumer("JOBS", "a")
                assert "a" not in srv.flow.stream("JOBS").consumers()

    aloop(main)


def test_consumer_owners_survive_a_restart(tmp_path):
    flow = fastflow.Flow(tmp_path)
    st = flow.add_stream("S", ["s.>"])
    st.consumer("c")
    st.set_consumer_owner("c", "user:alice")
    flow.close()
    flow = fastflow.Flow(tmp_path)
    try:
        assert flow.stream("S").consumers()["c"].owner == "user:alice"
    finally:
        flow.close()


# -- the duplicate window: (source, id) ------------------------------------------------------


def test_the_duplicate_window_keeps_one_event_per_source_and_id(core):
    Router, StreamTarget, SubTarget, Log = core.Router, core.StreamTarget, core.SubTarget, core.Log
    r = Router("t")
    st = StreamTarget("S", Log(dedup_window=120.0))
    st.dedup = True
    plain = StreamTarget("P", Log(dedup_window=120.0))     # dedup off: stores every retry
    r.add("o.>", st)
    r.add("p.>", plain)
    got = []
    r.add("o.>", SubTarget(got.append))
    assert r.publish("o.1", b"a", id="order-1") == 1 and not r.last_duplicate
    assert r.publish("o.1", b"a", id="order-1") == 1
    assert r.last_duplicate and r.last_stream == "S"
    assert r.publish("o.2", b"b", id="order-1", source="/other") == 2    # another source
    assert r.publish("o.3", b"c", id="order-1x") == 3
    # the same bytes split otherwise between id and source: another event
    assert r.publish("o.5", b"", id="ab", source="c") == 4
    assert r.publish("o.5", b"", id="a", source="bc") == 5 and not r.last_duplicate
    assert r.publish("o.5", b"", id="ab", source="c") == 4 and r.last_duplicate
    # a long id (kept out of the window's entry) is found again as well
    assert r.publish("o.6", b"", id="L" * 500) == 6
    assert r.publish("o.6", b"", id="L" * 500) == 6 and r.last_duplicate
    # the same event as a network record
    rec = fastflow.Event("o.1", b"a", id="order-1").encode()
    assert r.publish_record("o.1", rec) == 1 and r.last_duplicate
    # generated ids never repeat: never looked up
    assert r.publish("o.4", b"d") == 7 and r.publish("o.4", b"d") == 8
    assert not r.last_duplicate
    assert (len(st.log), st.duplicates, st.appended) == (8, 4, 8)
    assert st.log.stats()["duplicates"] == 4
    assert len(got) == 12               # subscribers see every publish (as JetStream's)
    assert r.publish("p.1", b"", id="x") == 1 and r.publish("p.1", b"", id="x") == 2
    assert plain.duplicates == 0


def test_streams_have_a_duplicate_window_by_default():
    f = fastflow.Flow()
    s = f.add_stream("S", "a")
    off = f.add_stream("OFF", "off.>", fastflow.Retention(duplicate_window=0))
    assert s.retention.duplicate_window == 120.0
    assert f.publish("a", b"", id="1") == 1 and f.publish("a", b"", id="1") == 1
    assert f.publish("off.a", b"", id="1") == 1 and f.publish("off.a", b"", id="1") == 2
    assert len(off) == 2 and len(s) == 1
    assert s.info()["duplicates"] == 1 and off.info()["duplicates"] == 0
    with pytest.raises(ValueError, match="duplicate_window must be a finite number"):
        fastflow.Retention(duplicate_window=-1)


def test_stream_spec_takes_a_duplicate_window_with_units():
    from fastflow.server.config import ConfigError, stream_spec

    _, _, ret, _, _ = stream_spec({"name": "S", "subjects": ["s.>"], "duplicate_window": "5m"},
                                  "s")
    assert ret.duplicate_window == 300.0
    with pytest.raises(ConfigError, match="s.duplicate_window"):
        stream_spec({"name": "S", "subjects": ["s.>"], "duplicate_window": "soon"}, "s")


def test_a_retried_publish_is_stored_once_and_acked_as_duplicate(aloop, ffserver):
    async def main():
        async with ffserver() as srv:
            async with await fc.connect(srv.url) as c:
                await c.add_stream("O", ["o.>"])
                await c.add_stream("N", ["n.>"], {"duplicate_window": 0})
                first = await c.publish_ack("o.1", b"x", id="order-17")
                again = await c.publish_ack("o.1", b"x", id="order-17")
                assert first == again == (1, "O")
                assert not first.duplicate and again.duplicate and again.seq == 1
                assert "duplicate=True" in repr(again)
                assert not (await c.publish_ack("o.2", b"y")).duplicate
                assert (await c.publish_ack("n.1", b"", id="k"))[0] == 1
                assert (await c.publish_ack("n.1", b"", id="k"))[0] == 2
                info = await c.stream_info("O")
                assert (info["events"], info["duplicates"]) == (2, 1)
                assert info["retention"]["duplicate_window"] == 120.0
                # units as in the config
                info = await c.add_stream("U", ["u.>"], {"duplicate_window": "5m",
                                                         "max_bytes": "1MiB"})
                assert info["retention"]["duplicate_window"] == 300.0
                assert info["retention"]["max_bytes"] == 1 << 20
                with pytest.raises(fc.ServerError, match="duplicate_window: expected a duration"):
                    await c.add_stream("V", ["v.>"], {"duplicate_window": "soon"})

    aloop(main)


def test_nats_msg_id_is_the_event_id_so_retries_dedupe(aloop, ffnats):
    nats = pytest.importorskip("nats")

    async def main():
        async with ffnats() as srv:
            async with await fc.connect(srv.url) as c:
                await c.add_stream("O", ["o.>"])
                sub = c.subscribe("o.>")
                await c.flush()
                nc = await nats.connect(srv.nats_url, allow_reconnect=False, connect_timeout=3)
                try:
                    for _ in range(3):
                        await nc.publish("o.1", b"x", headers={"Nats-Msg-Id": "m-1"})
                    await nc.publish("o.1", b"y", headers={"Nats-Msg-Id": "m-2"})
                    await nc.flush()
                finally:
                    await nc.close()
                evs = [await sub.next(2) for _ in range(4)]
                assert [e.id for e in evs] == ["m-1", "m-1", "m-1", "m-2"]
                info = await c.stream_info("O")
                assert (info["events"], info["duplicates"]) == (2, 2)

    aloop(main)


def test_a_full_stream_keeps_nats_clients_connected_and_served(aloop, ffnats):
    nats = pytest.importorskip("nats")

    async def main():
        async with ffnats() as srv:
            async with await fc.connect(srv.url) as admin:
                await admin.add_stream("ALL", [">"], {"max_events": 1, "discard": "new"})
                errors = []

                async def on_error(e):
                    errors.append(e)

                nc = await nats.connect(srv.nats_url, allow_reconnect=False, connect_timeout=3,
                                        error_cb=on_error)
                try:
                    sub = await nc.subscribe("x.>")
                    await nc.flush()
                    for i in range(3):
                        await nc.publish("x.{}".format(i), b"%d" % i)
                    await nc.publish("x.h", b"h", headers={"ce-type": "t"})
                    await nc.flush()
                    got = [(await sub.next_msg(2)).data for _ in range(4)]
                    assert got == [b"0", b"1", b"2", b"h"]
                    assert nc.is_connected and not errors      # no -ERR (as nats-server)
                finally:
                    await nc.close()
                info = await admin.stream_info("ALL")
                assert (info["events"], info["rejected"]) == (1, 3)

    aloop(main)
