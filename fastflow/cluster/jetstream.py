"""Replicated streams stored in JetStream (docs/cluster.md), over the
cluster link's API (``request`` / ``subscribe`` / ``publish`` with raw
bytes, ``on_connect``; subjects as they are on the backbone).

- ``JetStream``: the requests of the JetStream API this needs (stream
  create / info / update, consumer create / delete), answers as dicts,
  refusals as ``JetStreamError``.
- ``PubAcks``: the answers to publishes forwarded to JetStream, whose
  reply subject is ``_FFK.<node>.<n>``: one future per ``n``, a bounded
  table, a deadline (then ``JetStreamError`` 408).
- ``Mirror``: feeds a replicated stream's local log (a read cache whose
  seqs are JetStream's) with an ordered push consumer, from the log's
  last seq + 1, made again on a gap, a stall, a reconnect.
- ``ReplicatedStreams``: the service that ties them to the flows of the
  accounts (``Flow.replica_handler``).

Why a push consumer and not pull fetches: the cache should hold an event
as soon as JetStream has stored it (the durable consumers of the stream
read it there), and a push consumer delivers at once with no request per
batch; its flow control and heartbeats keep it honest.  Memory stays
bounded without a queue of our own: every delivery is appended to the log
in the link's callback, before the next one is read, and a flow control
request is answered when it arrives, which is after every delivery before
it was stored.
"""

import asyncio
import itertools
import json
import logging
import os
import re
import time
from collections import OrderedDict
from typing import NamedTuple

from fastflow.errors import FastflowError, JetStreamError

__all__ = ("JetStream", "Mirror", "PubAck", "PubAcks", "ReplicatedStreams", "account_prefix",
           "door_code", "js_stream_name", "parse_ack_reply", "stream_config")

log = logging.getLogger("fastflow.cluster")

API = "$JS.API."
ACK_PREFIX = "$JS.ACK."
ACK_REPLY = "_FFK"                      # _FFK.<node>.<n>: JetStream's answer to a publish
DELIVER = "_FFJ"                        # _FFJ.<node>.<k>: a mirror's deliveries

# answers JetStream gives that a retry may outlive (no leader yet, quorum lost)
_RETRY_BACKOFF = (0.1, 2.0)             # seconds: first and longest wait between attempts
_NOT_FOUND = 10059                      # JetStream's "stream not found"

_STATUS = re.compile(rb"NATS/1\.0 (\d{3})[ ]?([^\r\n]*)")
_SANITIZE = re.compile(r"[^A-Za-z0-9_-]")


# -- names ---------------------------------------------------------------------------------


def js_stream_name(account, stream):
    """The JetStream stream of fastflow stream ``stream`` of ``account``:
    ``FF_<account>_<stream>``, every character JetStream does not take in a
    name (``$`` of ``$G``) made ``_``."""
    return "FF_{}_{}".format(_SANITIZE.sub("_", account), _SANITIZE.sub("_", stream))


def account_prefix(account, link=None):
    """What an account's subjects (and reply subjects) carry on the
    backbone: the link's own prefix for it when ``link`` has the account
    attached, else ``_FFA.<account>.``."""
    a = getattr(link, "accounts", {}).get(account) if link is not None else None
    if a is not None:
        return a.prefix
    return "_FFA.{}.".format(account)


def stream_config(name, subjects, retention, replicas):
    """The JetStream stream config of a replicated stream: ``subjects`` as
    they are on the backbone, file storage, ``replicas``, and the limits of
    ``retention`` where JetStream has them (max_events -> max_msgs,
    max_bytes, max_age, max_per_subject -> max_msgs_per_subject,
    max_event_size -> max_msg_size: the record is the message, discard,
    duplicate_window, at most max_age as JetStream requires)."""
    r = retention
    age = int(r.max_age * 1e9)
    dup = int(r.duplicate_window * 1e9)
    if age and dup > age:
        dup = age
    return {
        "name": name,
        "subjects": list(subjects),
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": r.max_events or -1,
        "max_bytes": r.max_bytes or -1,
        "max_age": age,
        "max_msgs_per_subject": r.max_per_subject or -1,
        "max_msg_size": r.max_event_size if 0 < r.max_event_size < (1 << 31) else -1,
        "discard": r.discard,
        "storage": "file",
        "num_replicas": replicas,
        "duplicate_window": dup,
    }


# the keys of stream_config a running stream is compared on (JetStream adds others)
_MANAGED = ("subjects", "max_msgs", "max_bytes", "max_age", "max_msgs_per_subject",
            "max_msg_size", "discard", "storage", "num_replicas", "duplicate_window")


def parse_ack_reply(reply):
    """``(stream seq, consumer seq)`` from the reply subject of a JetStream
    delivery, ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.
    <pending>`` (or the form with a domain and an account hash before the
    stream: 12 tokens or more); None when it is not one."""
    if not reply or not reply.startswith(ACK_PREFIX):
        return None
    t = reply.split(".")
    try:
        if len(t) == 9:
            return int(t[5]), int(t[6])
        if len(t) >= 12:
            return int(t[7]), int(t[8])
    except ValueError:
        pass
    return None


def door_code(exc):
    """The ERR code a door answers a JetStreamError with: 413 for a record
    over the stream's max_msg_size, 507 for a stream full under
    discard='new' (as a local stream's LogFullError), 503 for the rest
    (no answer, no leader, no stream): worth a retry."""
    text = getattr(exc, "description", "").lower()
    if "exceeds maximum" in text or "too large" in text:
        return 413
    if "maximum" in text and "exceeded" in text:
        return 507
    return 503


def _status(headers):
    """``(code, description, {name: value})`` of a NATS status message's
    header block, or None."""
    if not headers:
        return None
    m = _STATUS.match(headers)
    if m is None:
        return None
    fields = {}
    for line in headers.split(b"\r\n")[1:]:
        k, sep, v = line.partition(b":")
        if sep:
            fields[k.strip().decode("latin-1").lower()] = v.strip().decode("latin-1")
    return int(m.group(1)), m.group(2).decode("latin-1"), fields


def _error_of(body, what):
    """The JetStreamError of an API answer that carries one, else None."""
    err = body.get("error") if isinstance(body, dict) else None
    if err is None:
        return None
    if not isinstance(err, dict):
        return JetStreamError(500, "{}: {!r}".format(what, err))
    return JetStreamError(err.get("code", 500), "{}: {}".format(
        what, err.get("description", "error")), err.get("err_code", 0))


# -- the API ---------------------------------------------------------------------------------


class JetStream:
    """The JetStream API requests of replicated streams, over ``link``."""

    def __init__(self, link, timeout=2.0, prefix=API):
        self.link = link
        self.timeout = timeout
        self.prefix = prefix

    async def api(self, op, body=None, what=None):
        """Request ``$JS.API.<op>`` with the JSON ``body``: the answer (a
        dict); JetStreamError when JetStream refuses, answers nonsense, has
        no responder (no JetStream) or does not answer within the timeout."""
        what = what or op
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            msg = await self.link.request(self.prefix + op, payload, timeout=self.timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise JetStreamError(408, "{}: no answer within {} s".format(
                what, self.timeout)) from None
        except FastflowError as exc:        # NoRespondersError and the link's own
            raise JetStreamError(503, "{}: {}".format(what, exc)) from None
        st = _status(msg.headers)
        if st is not None and st[0] >= 300:
            raise JetStreamError(st[0], "{}: {}".format(what, st[1] or "status"))
        try:
            answer = json.loads(msg.data)
        except ValueError:
            raise JetStreamError(500, "{}: not JSON: {!r}".format(what, msg.data[:200])) from None
        err = _error_of(answer, what)
        if err is not None:
            raise err
        return answer

    async def stream_info(self, name):
        """The stream's info (``config``, ``state``, ``cluster``), or None
        when there is no such stream."""
        try:
            return await self.api("STREAM.INFO." + name, None, "stream info " + name)
        except JetStreamError as exc:
            if exc.err_code == _NOT_FOUND:
                return None
            raise

    async def ensure_stream(self, config):
        """Create the stream of ``config``, or update it when its managed
        keys differ; returns its info."""
        name = config["name"]
        info = await self.stream_info(name)
        if info is None:
            try:
                return await self.api("STREAM.CREATE." + name, config, "create stream " + name)
            except JetStreamError as exc:
                if "already in use" not in exc.description:
                    raise
                info = await self.stream_info(name)     # made by another node meanwhile
                if info is None:
                    raise
        have = info.get("config") or {}
        if all(have.get(k) == config[k] for k in _MANAGED):
            return info
        new = dict(have)
        new.update(config)
        log.info("JetStream stream %s: updating %s", name, ", ".join(
            "{} {!r} -> {!r}".format(k, have.get(k), config[k]) for k in _MANAGED
            if have.get(k) != config[k]))
        return await self.api("STREAM.UPDATE." + name, new, "update stream " + name)

    async def create_consumer(self, stream, config):
        return await self.api("CONSUMER.CREATE." + stream,
                              {"stream_name": stream, "config": config},
                              "create a consumer of " + stream)

    async def delete_consumer(self, stream, name):
        return await self.api("CONSUMER.DELETE.{}.{}".format(stream, name), None,
                              "delete consumer {} of {}".format(name, stream))


# -- acknowledgements of publishes -------------------------------------------------------------


class PubAck(NamedTuple):
    """JetStream's answer to a publish: its ``stream`` (JetStream's name),
    ``seq`` and whether it was a ``duplicate``."""

    stream: str
    seq: int
    duplicate: bool


class PubAcks:
    """Futures of the publishes forwarded to JetStream with the reply
    subject ``_FFK.<node>.<n>`` (an account's carry its prefix before it):
    ``expect()`` hands out the subject and the future; JetStream's answer
    resolves it with a ``PubAck`` or fails it with ``JetStreamError``; no
    answer within ``timeout`` seconds fails it (code 408).  At most
    ``max_pending`` wait at once: one more is refused (code 503)."""

    def __init__(self, link, node, timeout=3.0, max_pending=65536):
        self.link = link
        self.node = node
        self.timeout = timeout
        self.max_pending = max_pending
        self.prefix = "{}.{}.".format(ACK_REPLY, node)
        self._n = itertools.count(1)
        self._table = OrderedDict()     # n -> (future, deadline, JetStream stream name)
        self._sids = []
        self._timer = None
        self.n_acked = 0
        self.n_errors = 0
        self.n_timeouts = 0
        self.n_refused = 0
        self.n_stray = 0                # answers nobody waited for (late, or not JetStream's)

    def start(self):
        self._sids = [self.link.subscribe(self.prefix + "*", self._on_msg),
                      self.link.subscribe("_FFA.*." + self.prefix + "*", self._on_msg)]

    def stop(self):
        for sid in self._sids:
            self.link.unsubscribe(sid)
        self._sids = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        table, self._table = self._table, OrderedDict()
        for fut, _, _ in table.values():
            if not fut.done():
                fut.set_exception(JetStreamError(503, "the cluster link was closed"))

    @property
    def pending(self):
        return len(self._table)

    def expect(self, stream=None):
        """``(reply subject, future)`` for one publish to JetStream stream
        ``stream`` (its answer must name it; None: any)."""
        if len(self._table) >= self.max_pending:
            self.n_refused += 1
            raise JetStreamError(503, "{} publishes are waiting for JetStream's "
                                      "acknowledgement already".format(len(self._table)))
        loop = asyncio.get_running_loop()
        n = next(self._n)
        fut = loop.create_future()
        self._table[n] = (fut, time.monotonic() + self.timeout, stream)
        if self._timer is None:
            self._timer = loop.call_later(self.timeout, self._sweep)
        return self.prefix + str(n), fut

    def forget(self, reply):
        """Drop the entry of ``reply`` (its publish was not sent)."""
        try:
            n = int(reply.rsplit(".", 1)[1])
        except (IndexError, ValueError):
            return
        entry = self._table.pop(n, None)
        if entry is not None and not entry[0].done():
            entry[0].cancel()

    def _on_msg(self, msg):
        try:
            n = int(msg.subject.rsplit(".", 1)[1])
        except (IndexError, ValueError):
            self.n_stray += 1
            return
        entry = self._table.get(n)
        if entry is None:
            self.n_stray += 1
            return
        fut, _, stream = entry
        st = _status(msg.headers)
        if st is not None and st[0] == 503:         # no responders: no such stream
            del self._table[n]
            self.n_errors += 1
            if not fut.done():
                fut.set_exception(JetStreamError(503, "no JetStream stream took the publish "
                                                      "(no responders)"))
            return
        try:
            answer = json.loads(msg.data)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or ("error" not in answer and (
                not isinstance(answer.get("seq"), int) or
                (stream is not None and answer.get("stream") != stream))):
            self.n_stray += 1       # a subscriber's reply, not JetStream's: wait on
            return
        del self._table[n]
        if fut.done():
            return
        err = _error_of(answer, "publish")
        if err is not None:
            self.n_errors += 1
            fut.set_exception(err)
            return
        self.n_acked += 1
        fut.set_result(PubAck(answer.get("stream"), answer["seq"],
                              bool(answer.get("duplicate", False))))

    def _sweep(self):
        self._timer = None
        now = time.monotonic()
        table = self._table
        while table:
            n, (fut, deadline, _) = next(iter(table.items()))
            if deadline > now:
                break
            del table[n]
            if not fut.done():
                self.n_timeouts += 1
                fut.set_exception(JetStreamError(408, "no acknowledgement within {} s".format(
                    self.timeout)))
        if table:
            first = next(iter(table.values()))[1]
            self._timer = asyncio.get_running_loop().call_later(max(0.01, first - now),
                                                                  self._sweep)

    def info(self):
        return {"pending": len(self._table), "acked": self.n_acked, "errors": self.n_errors,
                "timeouts": self.n_timeouts, "refused": self.n_refused, "stray": self.n_stray}


# -- the mirror -------------------------------------------------------------------------------


class Mirror:
    """Feeds the local log of replicated stream ``stream`` (of ``account``)
    from JetStream stream ``js_name`` with an ordered push consumer: it
    starts at the log's last seq + 1, stores each delivery at its stream
    seq (``Stream.append_at``: the seqs JetStream no longer has, or that
    did not hold an event record, are skipped), and is made again from
    there when a delivery or a heartbeat shows a gap, when nothing came for
    three heartbeats (a consumer lost with its server), and after every
    reconnect of the link.  ``ensure``: a coroutine function run before each
    consumer is made (the JetStream stream's config)."""

    def __init__(self, link, js, node, account, stream, js_name, heartbeat=1.0, ensure=None):
        self.link = link
        self.js = js
        self.node = node
        self.account = account
        self.stream = stream
        self.js_name = js_name
        self.prefix = account_prefix(account, link)
        self.forward = []               # the flow's handles of the link's forwarder
        self._ensured = False           # ``ensure`` done (again after a stream not found)
        self.config_error = None        # why JetStream refused this node's stream config
        self.heartbeat = heartbeat
        self.ensure = ensure
        self._gen = 0                   # the consumer deliveries are taken from
        self._k = itertools.count(1)
        self._sid = None
        self._consumer = None
        self._dseq = 0                  # the last consumer seq taken
        self._seen = 0.0                # monotonic time of the last delivery or heartbeat
        self._reset = None              # asyncio.Event: make the consumer again
        self._task = None
        self.closed = False
        self.state = "new"
        self.last_error = None
        self.js_last_seq = None         # JetStream's last seq when the consumer was made
        self.n_stored = 0
        self.n_skipped = 0              # seqs skipped (gone from JetStream, or not events)
        self.n_invalid = 0              # deliveries that were not event records
        self.n_duplicates = 0           # deliveries at or below the log's last seq
        self.n_resets = 0
        self.n_heartbeats = 0
        self.n_flow_control = 0
        self.n_errors = 0

    # -- lifecycle -----------------------------------------------------------------

    def start(self):
        self._reset = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self._task

    async def stop(self):
        self.closed = True
        self.state = "stopped"
        if self._reset is not None:
            self._reset.set()
        name = self._consumer
        self._consumer = None
        self._drop()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if name is not None and self.link.connected:
            # (waited for, briefly: no task left behind; JetStream drops an
            # ephemeral consumer without interest anyway)
            try:
                await asyncio.wait_for(self.js.delete_consumer(self.js_name, name),
                                       self.js.timeout)
            except (JetStreamError, asyncio.TimeoutError):
                pass

    def reset(self, why):
        """Make the consumer again (from the log's last seq + 1)."""
        if self.closed or self._reset is None:
            return
        if self._sid is not None:
            log.info("mirror of %s: %s; making its consumer again from seq %d", self.js_name,
                     why, self.stream.log.last_seq + 1)
        self._drop()
        self._reset.set()

    def _drop(self):
        """Stop taking the current consumer's deliveries (and delete it)."""
        self._gen += 1
        if self._sid is not None:
            self.link.unsubscribe(self._sid)
            self._sid = None
        if self._consumer is not None:
            self._forget(self._consumer)
            self._consumer = None

    def _forget(self, name):
        if not self.link.connected:
            return                      # (JetStream drops an ephemeral without interest)

        async def delete():
            try:
                await self.js.delete_consumer(self.js_name, name)
            except JetStreamError:
                pass
        asyncio.get_running_loop().create_task(delete())

    async def _run(self):
        backoff = _RETRY_BACKOFF[0]
        while not self.closed:
            self._reset.clear()
            if not self.link.connected:
                # (the link's on_connect resets: no error to count until then)
                self.state = "waiting"
                try:
                    await asyncio.wait_for(self._reset.wait(), _RETRY_BACKOFF[1])
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                await self._make()
                backoff = _RETRY_BACKOFF[0]
            except Exception as exc:
                if self._reset.is_set() and not self.closed:
                    continue            # replaced while being made: again, at once
                self.n_errors += 1
                self.state = "retrying"
                if str(exc) != self.last_error:
                    if isinstance(exc, FastflowError):
                        log.warning("mirror of %s: %s (retrying)", self.js_name, exc)
                    else:
                        log.exception("mirror of %s failed (retrying)", self.js_name)
                self.last_error = str(exc)
                try:
                    await asyncio.wait_for(self._reset.wait(), backoff)
                except asyncio.TimeoutError:
                    pass
                backoff = min(_RETRY_BACKOFF[1], backoff * 2)
                continue
            # taking deliveries: until a reset, or three heartbeats of silence
            while not self.closed:
                try:
                    await asyncio.wait_for(self._reset.wait(), self.heartbeat)
                    break
                except asyncio.TimeoutError:
                    if time.monotonic() - self._seen > 3 * self.heartbeat:
                        self.reset("no delivery or heartbeat for {:.1f} s".format(
                            time.monotonic() - self._seen))
                        break
            if not self.closed:
                self.n_resets += 1

    async def _make(self):
        """The consumer, from the log's last seq + 1."""
        if self.ensure is not None and not self._ensured:
            try:
                await self.ensure()
            except JetStreamError as exc:
                if not 400 <= exc.code < 500 or exc.code == 408:
                    raise               # (no answer, no leader: again later)
                # a config JetStream refuses (storage changed, subjects taken):
                # said once; the stream as it is is mirrored if there is one
                log.error("mirror of %s: the JetStream stream does not take this node's "
                          "config: %s", self.js_name, exc)
                self.config_error = str(exc)
            else:
                self.config_error = None
            self._ensured = True
        info = await self.js.stream_info(self.js_name)
        if info is None:
            self._ensured = False       # (deleted meanwhile: made again next time)
            raise JetStreamError(404, "stream {} not found".format(self.js_name), _NOT_FOUND)
        lg = self.stream.log
        self.js_last_seq = (info.get("state") or {}).get("last_seq", 0)
        if self.js_last_seq < lg.last_seq:
            # JetStream lost (or had recreated) the stream: the cache is ahead
            # and takes nothing until JetStream passes its last seq
            self.last_error = ("the local cache is ahead of JetStream: last seq {} here, {} "
                               "there".format(lg.last_seq, self.js_last_seq))
            log.error("mirror of %s: %s", self.js_name, self.last_error)
        self._drop()
        gen = self._gen
        inbox = "{}.{}.{}.{}".format(DELIVER, self.node, next(self._k), os.urandom(3).hex())
        self._sid = self.link.subscribe(inbox, lambda msg: self._on_msg(msg, gen))
        self._dseq = 0
        self._seen = time.monotonic()
        start = lg.last_seq + 1
        config = {"deliver_subject": inbox, "deliver_policy": "by_start_sequence",
                  "opt_start_seq": start, "ack_policy": "none", "max_deliver": 1,
                  "replay_policy": "instant", "flow_control": True,
                  "idle_heartbeat": int(self.heartbeat * 1e9), "mem_storage": True,
                  "num_replicas": 1, "description": "fastflow mirror {}".format(self.node)}
        answer = await self.js.create_consumer(self.js_name, config)
        name = answer.get("name")
        if gen != self._gen:            # reset while it was being made
            if name:
                self._forget(name)
            raise JetStreamError(409, "the consumer was replaced while being made")
        self._consumer = name
        self._seen = time.monotonic()
        self.state = "mirroring"
        if self.js_last_seq >= lg.last_seq:
            self.last_error = None

    # -- deliveries (in the link's callback: synchronous, one at a time) ----------------

    def _on_msg(self, msg, gen):
        if gen != self._gen:
            return                      # the consumer before a reset
        self._seen = time.monotonic()
        if msg.headers:
            st = _status(msg.headers)
            if st is not None:
                self._on_status(msg, st)
                return
        pos = parse_ack_reply(msg.reply)
        if pos is None:
            self.n_errors += 1
            return
        sseq, dseq = pos
        if dseq != self._dseq + 1:
            self.reset("consumer seq {} after {}".format(dseq, self._dseq))
            return
        self._dseq = dseq
        lg = self.stream.log
        last = lg.last_seq
        if sseq <= last:
            self.n_duplicates += 1
            return
        subject = msg.subject
        if self.prefix:
            if not subject.startswith(self.prefix):
                self.n_invalid += 1
                return
            subject = subject[len(self.prefix):]
        try:
            self.stream.append_at(sseq, subject, msg.data)
        except (FastflowError, ValueError) as exc:      # not an event record
            self.n_invalid += 1         # (its seq counts as skipped at the next one stored)
            if self.n_invalid == 1 or self.n_invalid % 1000 == 0:
                log.warning("mirror of %s: seq %d on %r is not an event record (%s); "
                            "skipped (%d so far)", self.js_name, sseq, subject, exc,
                            self.n_invalid)
            return
        self.n_stored += 1
        self.n_skipped += sseq - last - 1

    def _on_status(self, msg, st):
        code, what, fields = st
        if code != 100:
            self.reset("status {} {}".format(code, what))
            return
        if msg.reply:                                   # flow control: we keep up
            self.n_flow_control += 1
            self.link.publish(msg.reply, b"")
            return
        self.n_heartbeats += 1
        stalled = fields.get("nats-consumer-stalled")
        if stalled:
            self.link.publish(stalled, b"")
        last = fields.get("nats-last-consumer")
        if last is not None and last.isdigit() and int(last) != self._dseq:
            self.reset("heartbeat says consumer seq {}, the last taken is {}".format(
                last, self._dseq))

    def info(self):
        return {"jetstream_stream": self.js_name, "state": self.state,
                "consumer": self._consumer, "consumer_seq": self._dseq,
                "last_seq": self.stream.log.last_seq, "jetstream_last_seq": self.js_last_seq,
                "stored": self.n_stored, "skipped": self.n_skipped, "invalid": self.n_invalid,
                "duplicates": self.n_duplicates, "resets": self.n_resets,
                "heartbeats": self.n_heartbeats, "flow_control": self.n_flow_control,
                "errors": self.n_errors, "last_error": self.last_error,
                "config_error": self.config_error}


# -- the service ------------------------------------------------------------------------------


class ReplicatedStreams:
    """The replicated streams of a node: for each stream with
    ``replicas > 1`` of an attached flow, its JetStream stream (made or
    updated to its config), the link's forwarder on its patterns (every
    publish on them goes to the backbone, where JetStream stores it,
    whether or not another node wants it) and its ``Mirror``; ``acks``
    answers the publishes forwarded to JetStream."""

    def __init__(self, link, node, api_timeout=2.0, ack_timeout=3.0, heartbeat=1.0,
                 max_acks=65536):
        self.link = link
        self.node = node
        self.heartbeat = heartbeat
        self.js = JetStream(link, api_timeout)
        self.acks = PubAcks(link, node, ack_timeout, max_acks)
        self.mirrors = {}               # (account, stream name) -> Mirror
        self.flows = {}                 # account -> Flow
        self._handlers = {}             # account -> its flow's replica_handler
        self.started = False

    def start(self):
        """Subscribe the acknowledgements, follow the link's reconnects, and
        start the mirrors of the flows attached so far (in the running loop)."""
        self.started = True
        self.acks.start()
        self.link.on_connect(self._on_connect)
        for m in self.mirrors.values():
            m.start()

    async def close(self):
        self.started = False
        self.acks.stop()
        for m in list(self.mirrors.values()):
            await m.stop()
        self.mirrors.clear()
        for account, flow in self.flows.items():
            if flow.replica_handler is self._handlers.get(account):
                flow.replica_handler = None

    def attach(self, account, flow):
        """Mirror the replicated streams of ``flow`` (the flow of ``account``),
        now and as they are added or deleted."""
        self.flows[account] = flow

        def handler(kind, st):
            if kind == "add":
                self.add(account, st)
            else:
                self.remove(account, st)
        self._handlers[account] = handler
        flow.replica_handler = handler
        for st in flow.streams().values():
            if st.replicated:
                self.add(account, st)

    def detach(self, account):
        """Stop mirroring the streams of ``account`` (its flow goes)."""
        flow = self.flows.pop(account, None)
        handler = self._handlers.pop(account, None)
        if flow is not None and flow.replica_handler is handler:
            flow.replica_handler = None
        for (a, _), m in list(self.mirrors.items()):
            if a == account:
                self.remove(account, m.stream)

    def add(self, account, st):
        key = (account, st.name)
        if key in self.mirrors:
            return self.mirrors[key]
        name = js_stream_name(account, st.name)
        prefix = account_prefix(account, self.link)
        config = stream_config(name, [prefix + s for s in st.subjects], st.retention,
                               st.replicas)
        async def ensure():
            await self.js.ensure_stream(config)
        m = Mirror(self.link, self.js, self.node, account, st, name, self.heartbeat, ensure)
        a = getattr(self.link, "accounts", {}).get(account)
        flow = self.flows.get(account)
        if a is not None and flow is not None:
            # the account's forwarder (the link's ClusterTarget, written once
            # per event however many of its patterns match) on the stream's
            # patterns: not this node's interest, nothing comes back for it
            m.forward = [flow.add(pattern, a.plain) for pattern in st.subjects]
        st.mirror = m
        self.mirrors[key] = m
        if self.started:
            m.start()
        return m

    def remove(self, account, st):
        m = self.mirrors.pop((account, st.name), None)
        if m is not None:
            st.mirror = None
            flow = st.flow
            for h in m.forward:
                try:
                    flow.remove(h)
                except (KeyError, ValueError):
                    pass
            m.forward = []
            try:
                asyncio.get_running_loop().create_task(m.stop())
            except RuntimeError:        # no loop: nothing runs it
                m.closed = True

    def js_name(self, account, st):
        return js_stream_name(account, st.name)

    def _on_connect(self):
        for m in self.mirrors.values():
            m.reset("the cluster link (re)connected")

    def info(self):
        return {"acks": self.acks.info(),
                "streams": {"{}/{}".format(a, n): m.info()
                            for (a, n), m in self.mirrors.items()}}
