"""The native protocol's front door (docs/protocol.md): the handlers of
its frames, served by the shared ``Connection`` lifecycle.

The hot path runs in C: ``FrameParser.feed`` cuts the frames and routes
every PUB without ACK to the engine (``Router._publish_wire``), which
stores the record and appends MSG frames straight into each subscriber's
``OutBuf``.  Python sees only the other frames (``NativeProtocol.handle``:
one handler per op), and each connection writes its ``OutBuf`` once per
loop tick.
"""

import json
import logging
import struct

from fastflow._impl import (
    Event,
    FrameParser,
    NativeTarget,
    OutBuf,
    ProtocolError,
    validate_pattern,
)
from fastflow._version import __version__
from fastflow.cluster.jetstream import door_code, js_stream_name
from fastflow.errors import (
    EventTooLarge,
    FastflowError,
    JetStreamError,
    LogFullError,
    SubjectError,
)
from fastflow.protocol import AckKind, Flag, Op, error_code
from fastflow.server.connection import CLOSING, READY, DoorProtocol, connect_json
from fastflow.server.streams import (
    REPLAY_BATCH,
    LogReader,
    RequestError,
    StreamRequests,
    json_args,
    room,
    wait_append,
)

__all__ = ("NativeProtocol", "RequestError", "frame_bytes")

log = logging.getLogger("fastflow.server")

PROTO = 1                               # the native protocol's version (INFO "proto")

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_ITEM = struct.Struct("<HI")            # PUB_BATCH item: subject length, record length
_BATCH_ACK = struct.Struct("<QI")       # PUB_BATCH's PUBACK: last seq, count

# the ops and flags written per frame or per record, as plain ints: an enum's
# attribute lookup costs ~0.1-0.4 us there, and its `&` a few us
_MSG = int(Op.MSG)
_OK = int(Op.OK)
_ERR = int(Op.ERR)
_PONG = int(Op.PONG)
_PUBACK = int(Op.PUBACK)
_FL_ACK = int(Flag.ACK)
_FL_DUPLICATE = int(Flag.DUPLICATE)
_FL_NO_RESPONDERS = int(Flag.NO_RESPONDERS)
_FL_CONFLATE = int(Flag.CONFLATE)
_NAK = int(AckKind.NAK)

_FETCH_CHUNK = 256                      # deliveries per Consumer.fetch call
_ACK_MAP_MAX = 65536                    # ack subjects remembered per connection
_CREDENTIALS = ("user", "password", "token")    # the members of CONNECT that log in

_scratch = OutBuf(0)                    # builds frames written outside a connection's OutBuf


# the first bytes of a NATS client's ops (a NATS client at the native port)
_NATS_WORDS = frozenset((b"CONN", b"INFO", b"PING", b"PONG", b"SUB ", b"PUB ", b"HPUB",
                         b"UNSU"))


def frame_bytes(op, flags=0, fid=0, subject="", reply="", body=b""):
    """One frame as bytes (for writes that bypass an OutBuf)."""
    _scratch.frame(op, flags, fid, subject, reply, body)
    return _scratch.take()


def err_body(code, message):
    return _U16.pack(code) + message.encode("utf-8", "replace")


def _json(obj):
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


def _cancel(waits):
    """Give up the JetStream answers ``[(item, future)]`` nobody will read."""
    for _, fut in waits:
        if not fut.done():
            fut.cancel()
        elif not fut.cancelled():
            fut.exception()             # (retrieved: asyncio would log it)


def _op_name(op):
    """An op's name for a message (the number if it has none)."""
    try:
        return Op(op).name
    except ValueError:
        return op


class NativeProtocol(DoorProtocol):
    """The native protocol's handlers for one connection (``conn``)."""

    name = "native"
    parser_error = ProtocolError
    checks_schemas = True

    def __init__(self, conn):
        DoorProtocol.__init__(self, conn)
        cfg = self.cfg
        self.parser = FrameParser(self.flow, self.outbuf, cfg.max_payload, cfg.max_control)
        self.parser.max_connect = cfg.max_connect   # until CONNECT is accepted
        self.acks = {}                  # ack subject -> (Consumer, seq)
        # the principal an HTTP upgrade request authenticated (WebSocket):
        # a CONNECT without credentials takes it
        self.upgrade_principal = None

    # -- what the lifecycle writes -----------------------------------------------------

    def greet(self):
        srv = self.server
        cfg = self.cfg
        self.outbuf.frame(Op.INFO, 0, 0, body=json.dumps({
            "server_id": srv.id, "server_name": srv.name, "version": __version__,
            "proto": PROTO, "max_payload": cfg.max_payload, "max_control": cfg.max_control,
            "auth_required": srv.auth.required, "tls_required": cfg.tls,
            "tls_verify": cfg.tls_verify, "ping_interval": cfg.ping_interval,
            "max_subscriptions": cfg.max_subscriptions, "client_id": self.conn.id,
        }, separators=(",", ":")).encode())

    def close_data(self, code, message, rid):
        return frame_bytes(Op.ERR, Flag.CLOSE, rid, body=err_body(code, message))

    def ping(self):
        self.outbuf.frame(Op.PING)

    def ok(self, rid, result=None):
        self.outbuf.frame(_OK, 0, rid, body=b"" if result is None else _json(result))

    def err(self, code, message, rid=0):
        log.debug("client %d: ERR %d %s", self.conn.id, code, message)
        self.outbuf.frame(_ERR, 0, rid, body=err_body(code, message))

    def refused(self, data):
        """True (and the connection closes with one NATS -ERR line) if the
        first bytes are a NATS client's (CONNECT, PING, SUB, ...): as a
        frame size they would be hundreds of MB, so no native frame begins
        so."""
        if data[:4].upper() not in _NATS_WORDS:
            return False
        cfg = self.cfg
        if int.from_bytes(data[:4], "little") <= cfg.max_payload + cfg.max_control + 16:
            return False
        conn = self.conn
        self.server.n_protocol_errors += 1
        port = self.server.nats_port
        text = "this port speaks the fastflow native protocol, not NATS; {}".format(
            "NATS clients use port {}".format(port) if port
            else "this server has no NATS door (nats_port)")
        log.info("client %d (%s): a NATS client at the native port", conn.id, conn.peer)
        try:
            conn.transport.write("-ERR '{}'\r\n".format(text).encode())
        except (OSError, RuntimeError):
            pass
        conn.close(flush=False)
        conn.close_reason = text
        return True

    def protocol_error(self, exc):
        return exc.code, str(exc)

    # -- the frames --------------------------------------------------------------------

    def handle(self, items):
        """Act on the frames (and the parser's 'error'/'noresp' entries):
        each frame goes to its op's handler, as ``(flags, id, subject,
        reply, body)`` (``fastflow.protocol.Frame``)."""
        conn = self.conn
        rest = iter(items)              # (what follows a CONNECT may wait for its check)
        for item in rest:
            if conn.state >= CLOSING:
                return
            op = item[0]                # a frame's op, or what the parser has to say
            if type(op) is str:
                if op == "error":     # (denied publishes: counted by the parser)
                    _kind, code, message, rid = item
                    self.err(code, message, rid)
                elif op == "noresp":
                    _kind, reply = item
                    self.no_responders(reply)
                continue
            _op, flags, rid, subject, reply, body = item
            if conn.state != READY:
                if op == Op.CONNECT:
                    if self._connect(body, rid, rest):
                        return          # the rest waits for the (asynchronous) check
                elif op == Op.PING:
                    self.outbuf.frame(_PONG, 0, rid)
                elif op != Op.PONG:
                    self.server.n_auth_failures += 1
                    conn.close(401, "authentication required: the first frame must be CONNECT, "
                                    "got {}".format(_op_name(op)), rid)
                    return
                continue
            handler = _HANDLERS.get(op)
            if handler is None:
                self.server.n_protocol_errors += 1
                conn.close(400, "unexpected {} frame from a client".format(_op_name(op)), rid)
                return
            try:
                handler(self, flags, rid, subject, reply, body)
            except RequestError as exc:
                if exc.code == 403:
                    self.server.n_denied += 1
                self.err(exc.code, str(exc), rid)
            except (FastflowError, ValueError, TypeError, KeyError) as exc:
                code = error_code(exc) if isinstance(exc, FastflowError) else 400
                if isinstance(exc, KeyError):
                    code, exc = 404, exc.args[0] if exc.args else exc
                self.err(code, str(exc), rid)
            except Exception as exc:
                log.exception("client %d: %s request failed", conn.id, _op_name(op))
                self.err(500, "internal error: {}".format(exc), rid)

    # -- CONNECT -----------------------------------------------------------------------

    def _connect(self, body, rid, rest):
        """Returns True when the frames ``rest`` must wait (asynchronous
        check) or the connection closed."""
        try:
            req = connect_json(body)
        except ValueError as exc:
            self.server.n_protocol_errors += 1
            self.conn.close(400, "CONNECT: {}".format(exc), rid)
            return True
        if self.upgrade_principal is not None and all(
                req.get(k) is None for k in _CREDENTIALS):
            self.conn.connected(req, self.upgrade_principal, rid)
            return False
        return self.conn.authenticate(req, req, rest, rid)

    def options(self, req):
        self.conn.verbose = bool(req.get("verbose", False))
        self.parser.max_connect = 0

    def welcome(self, rid):
        conn = self.conn
        self.ok(rid, {"client_id": conn.id, "server_id": self.server.id, "user": conn.user})

    def _connect_again(self, _flags, _rid, _subject, _reply, _body):
        raise RequestError(400, "already connected: CONNECT comes once, first")

    # -- publishing (the frames the parser did not route) ------------------------------

    @staticmethod
    def _check_schema(store, subject, record):
        """RequestError 400 when the event ``record`` published on
        ``subject`` does not validate against a schema bound to it
        (docs/catalog.md)."""
        from fastflow.catalog.schemas import SchemaRefusal

        try:
            ev = Event.decode(subject, record)
        except (FastflowError, ValueError) as exc:
            raise RequestError(400, "not an event record: {}".format(exc)) from None
        try:
            store.check((ev,))
        except SchemaRefusal as exc:
            raise RequestError(400, str(exc)) from None

    def _pub(self, flags, rid, subject, reply, body):
        conn = self.conn
        if not conn.may_publish(subject):
            raise RequestError(403, "permission denied: publish to '{}'".format(subject))
        store = self._schemas()
        if store is not None:
            self._check_schema(store, subject, body)
        flow = self.flow
        if flags & _FL_ACK:
            # (only a PUB with ACK comes here: one lookup, None without
            # replicated streams; PUBs without ACK stay in C)
            st = flow.replicated_stream(subject)
            if st is not None:
                self._pub_replicated(rid, subject, reply, body, st)
                return
        before = flow.n_delivered
        seq = flow.publish_record(subject, body, reply or None, self.outbuf)
        conn.in_msgs_py += 1
        if flags & _FL_ACK:
            stream = flow.last_stream if seq else None
            self.outbuf.frame(_PUBACK, _FL_DUPLICATE if seq and flow.last_duplicate else 0,
                              rid, body=_U64.pack(seq) + (stream.encode() if stream else b""))
        elif conn.verbose:
            self.ok(rid)
        if reply and flow.n_delivered == before:
            self.no_responders(reply)

    def _pub_replicated(self, rid, subject, reply, body, st):
        """A PUB with ACK on a subject of replicated stream ``st``: published
        with the reply subject JetStream answers on (the cluster link
        forwards it), and acknowledged with JetStream's answer (its seq),
        or an error when it refuses or does not answer in time."""
        if reply:
            raise RequestError(400, "PUB {!r} with ACK: a replicated stream's subject takes no "
                                    "reply subject (JetStream's acknowledgement takes it)"
                                    .format(subject))
        ack_reply, fut = self._expect_ack(subject, st)
        try:
            self.flow.publish_record(subject, body, ack_reply, self.outbuf)
        except BaseException:
            self.server.replicated.acks.forget(ack_reply)
            raise
        self.conn.in_msgs_py += 1
        fut.add_done_callback(lambda f: self._replicated_ack(f, rid, subject, st.name))

    def _expect_ack(self, subject, st):
        """(reply subject, future) of JetStream's answer to a publish on
        ``subject`` of replicated stream ``st`` (RequestError 503 when
        there is no cluster link, or too many wait already)."""
        service = self.server.replicated
        if service is None or not service.link.connected:
            raise RequestError(503, "PUB {!r}: stream {!r} is replicated in JetStream and "
                                    "this server has no cluster link{}".format(
                                        subject, st.name,
                                        "" if service is None else " connected now"))
        try:
            return service.acks.expect(js_stream_name(self.conn.account.name, st.name))
        except JetStreamError as exc:
            raise RequestError(503, "PUB {!r}: {}".format(subject, exc)) from None

    def _replicated_ack(self, fut, rid, subject, name):
        if fut.cancelled():
            return
        exc = fut.exception()           # (retrieved: the connection may be gone)
        if self.conn.state != READY:
            return
        if exc is not None:
            self.err(door_code(exc), "PUB {!r}: {}".format(subject, exc), rid)
            return
        ack = fut.result()
        self.outbuf.frame(_PUBACK, _FL_DUPLICATE if ack.duplicate else 0, rid,
                          body=_U64.pack(ack.seq) + name.encode())

    def _pub_batch(self, flags, rid, _subject, _reply, body):
        conn = self.conn
        perms = conn.principal.permissions
        check = None
        if perms.pub_allow is not None or perms.pub_deny is not None:
            check = perms.can_publish
        allowed = {}
        responses = conn.responses
        publish = self.flow.publish_record
        origin = self.outbuf
        max_payload = self.cfg.max_payload
        store = self._schemas()
        mv = memoryview(body)
        n = len(body)
        off = count = last = 0
        refused = None                  # a stream's first refusal: the batch goes on
        # with ACK, items on replicated streams' subjects wait for JetStream's
        # answers: [(item index, future)] (no lookup per item without ACK)
        replicated = self.flow.replicated_stream if flags & _FL_ACK else None
        waits = []
        last_at = -1                    # the item whose seq ``last`` is
        try:
            while off < n:
                if n - off < 6:
                    raise RequestError(400, "truncated item header")
                sn, rn = _ITEM.unpack_from(body, off)
                off += 6
                if off + sn + rn > n:
                    raise RequestError(400, "subject ({}) and record ({}) overrun the body".format(
                        sn, rn))
                try:
                    subject = str(body[off:off + sn], "utf-8")
                except UnicodeDecodeError:
                    raise RequestError(400, "the subject is not valid UTF-8") from None
                off += sn
                if rn > max_payload:
                    raise RequestError(413, "record of {} bytes exceeds max_payload={}".format(
                        rn, max_payload))
                if check is not None:
                    ok = allowed.get(subject)
                    if ok is None:
                        ok = allowed[subject] = check(subject)
                    if not ok and responses is not None:
                        ok = responses(subject)
                    if not ok:
                        raise RequestError(403, "permission denied: publish to '{}'".format(
                            subject))
                if store is not None:
                    self._check_schema(store, subject, bytes(mv[off:off + rn]))
                reply = None
                if replicated is not None:
                    st = replicated(subject)
                    if st is not None:
                        reply, fut = self._expect_ack(subject, st)
                        waits.append((count, fut))
                try:
                    seq = publish(subject, mv[off:off + rn], reply, origin)
                except (LogFullError, EventTooLarge) as exc:   # delivered, not stored
                    if refused is None:
                        refused = (count, exc)
                    seq = 0
                off += rn
                count += 1
                if seq:
                    last = seq
                    last_at = count - 1
        except (FastflowError, ValueError, TypeError) as exc:   # (RequestError included)
            _cancel(waits)
            code = exc.code if isinstance(exc, RequestError) else (
                error_code(exc) if isinstance(exc, FastflowError) else 400)
            raise RequestError(code, "PUB_BATCH item {}: {} ({} item{} before it published)"
                               .format(count, exc, count, "" if count == 1 else "s")) from None
        except BaseException:
            _cancel(waits)
            raise
        finally:
            conn.in_msgs_py += count
            mv.release()
        if refused is not None:
            _cancel(waits)
            raise RequestError(error_code(refused[1]), "PUB_BATCH item {}: {} (all {} items were "
                               "published)".format(refused[0], refused[1], count))
        if waits:
            self.conn.track(self.loop.create_task(self._batch_acks(rid, waits, last, last_at,
                                                                   count)), rid)
        elif flags & _FL_ACK:
            self.outbuf.frame(_PUBACK, 0, rid, body=_BATCH_ACK.pack(last, count))
        elif conn.verbose:
            self.ok(rid)

    async def _batch_acks(self, rid, waits, last, last_at, count):
        """The PUBACK of a PUB_BATCH some of whose items JetStream
        acknowledges: once every answer is in, the seq of the last item
        stored (JetStream's for those), or an ERR naming the first item
        JetStream refused or did not answer."""
        try:
            for i, fut in waits:
                try:
                    ack = await fut
                except JetStreamError as exc:
                    if self.conn.state == READY:
                        self.err(door_code(exc), "PUB_BATCH item {}: {} (all {} items were "
                                 "published)".format(i, exc, count), rid)
                    return
                if i > last_at:
                    last, last_at = ack.seq, i
        finally:
            _cancel(waits)
        if self.conn.state == READY:
            self.outbuf.frame(_PUBACK, 0, rid, body=_BATCH_ACK.pack(last, count))

    def no_responders(self, reply):
        """A request (PUB with ``reply``) reached no subscriber: tell the
        requester at once, through its own subscriptions of the reply
        subject (a notice for nobody else, in this door's frames)."""
        try:
            targets = self.flow.matcher.match(reply)
        except (SubjectError, ValueError):
            return
        outbuf = self.outbuf
        for t in targets:
            if type(t) is NativeTarget and t.outbuf is outbuf:
                outbuf.frame(_MSG, _FL_NO_RESPONDERS, t.sid, reply)

    # -- subscriptions -----------------------------------------------------------------

    def _sub(self, flags, sid, pattern, queue, _body):
        conn = self.conn
        queue = queue or None
        if not pattern:
            raise RequestError(400, "SUB needs a subject pattern")
        if flags & ~_FL_CONFLATE:
            raise RequestError(400, "SUB: unknown flags 0x{:x} (known: CONFLATE = 0x{:x})".format(
                flags & ~_FL_CONFLATE, _FL_CONFLATE))
        validate_pattern(pattern)
        perms = conn.principal.permissions
        if not perms.unrestricted:
            why = perms.subscribe_denied(pattern, queue)
            if why is not None:
                raise RequestError(403, why)
        old = conn.subs.get(sid)
        if old is not None:
            t, old_pattern, _q = old
            if t.handle in self.flow.matcher:
                raise RequestError(409, "subscription id {} is in use (on '{}')".format(
                    sid, old_pattern))
            conn.forget_sub(sid)
        limit = self.cfg.max_subscriptions
        # conn.subs holds only live subscriptions (the engine's automatic
        # UNSUBs are forgotten as they happen): a refusal costs O(1)
        if limit and len(conn.subs) >= limit:
            raise RequestError(429, "maximum subscriptions per connection ({}) reached"
                               .format(limit))
        why = conn.may_subscribe()
        if why is not None:
            raise RequestError(429, why)
        conn.subscribe(sid, pattern, queue, NativeTarget(self.outbuf, sid, conn.echo),
                       conflate=bool(flags & _FL_CONFLATE))
        if conn.verbose:
            self.ok(sid)

    def _unsub(self, _flags, sid, _subject, _reply, body):
        conn = self.conn
        entry = conn.subs.get(sid)
        if entry is not None:
            mx = _U32.unpack_from(body)[0] if len(body) >= 4 else 0
            if mx:
                entry[0].remaining = mx
            else:
                conn.forget_sub(sid)
        if conn.verbose:
            self.ok(sid)

    # -- PING / PONG -------------------------------------------------------------------

    def _ping(self, _flags, rid, _subject, _reply, _body):
        self.outbuf.frame(_PONG, 0, rid)

    def _pong(self, _flags, _rid, _subject, _reply, _body):
        self.conn.pings_out = 0

    # -- streams -----------------------------------------------------------------------

    def _requests(self):
        """The stream requests of this connection's user."""
        return StreamRequests(self.server, self.conn.principal)

    def _stream(self, _flags, rid, action, _reply, body):
        self.ok(rid, self._requests().stream(action, json_args(body, "STREAM " + action)))

    def _replay(self, _flags, rid, name, _reply, body):
        req = self._requests()
        st, pos, filt, limit = req.replay(name, json_args(body, "REPLAY"))
        self.conn.track(self.loop.create_task(self._replay_task(
            rid, st, pos, filt, limit, st.log.last_seq, req.share_key(st))), rid, st)

    async def _replay_task(self, rid, st, pos, filt, limit, stop, share=None):
        """MSG frames of the stored records (their bytes as stored: no
        re-encoding), in bounded batches that wait for the socket to drain."""
        lg = st.log
        reader = LogReader(lg, pos, filt, self.conn.account, share)
        count = 0
        frame = self.outbuf.frame
        prefix = "$REPLAY.{}.".format(st.name)
        try:
            while limit is None or count < limit:
                if lg.closed or self.conn.state != READY:
                    return
                b, k = reader.read(stop, REPLAY_BATCH if limit is None
                                   else min(REPLAY_BATCH, limit - count))
                if b is None:
                    break
                seqs, ts, offs, subjects = b.seqs, b.ts, b.offsets, b.subjects
                buf = memoryview(b.buffer)
                for i in range(k):
                    frame(_MSG, 0, rid, subjects[i], "{}{}.{}".format(prefix, seqs[i], ts[i]),
                          buf[offs[i]:offs[i + 1]])
                buf.release()
                count += k
                await room(self.conn, self.cfg.write_low_water)
            self.ok(rid, {"count": count, "lost": reader.lost,
                          "next_seq": min(reader.seq, stop + 1)})
        except (FastflowError, ValueError) as exc:
            if self.conn.state == READY:
                self.err(error_code(exc) if isinstance(exc, FastflowError) else 400,
                         "REPLAY {}: {}".format(st.name, exc), rid)
        except Exception as exc:
            log.exception("client %d: REPLAY %s failed", self.conn.id, st.name)
            if self.conn.state == READY:
                self.err(500, "REPLAY {}: internal error: {}".format(st.name, exc), rid)

    # -- durable consumers -------------------------------------------------------------

    def _consumer(self, _flags, rid, action, _reply, body):
        args = json_args(body, "CONSUMER " + action)
        req = self._requests()
        if action != "fetch":
            self.ok(rid, req.consumer(action, args))
            return
        st, c, n, wait = req.fetch(args)
        self.conn.track(self.loop.create_task(self._fetch_task(rid, st, c, n, wait)),
                        rid, st, c)

    async def _fetch_task(self, rid, st, c, n, wait):
        """Deliveries of ``c`` as MSG frames (reply = the ack subject), up
        to ``n``; with ``wait``, waits that long for the first one."""
        loop = self.loop
        deadline = loop.time() + wait
        count = 0
        frame = self.outbuf.frame
        acks = self.acks
        track = c.config.ack != "none"
        prefix = "$ACK.{}.{}.".format(st.name, c.name)
        try:
            while self.conn.state == READY:
                evs = c.fetch(min(_FETCH_CHUNK, n - count))
                self.conn.account.replayed_events(evs)
                for ev in evs:
                    ack = prefix + str(ev.seq)
                    frame(_MSG, 0, rid, ev.routing_subject, ack, ev.encode())
                    if track:
                        acks[ack] = (c, ev.seq)
                count += len(evs)
                if len(acks) > _ACK_MAP_MAX:   # a cache: ACK falls back to parsing
                    for k in list(acks)[:len(acks) // 2]:
                        del acks[k]
                if count >= n:
                    break
                if evs:
                    await room(self.conn, self.cfg.write_low_water)
                    continue
                if count or loop.time() >= deadline:
                    break
                await wait_append(st, deadline, c)
            if self.conn.state == READY:
                self.ok(rid, {"count": count})
        except (FastflowError, ValueError) as exc:     # a consumer closed meanwhile
            if self.conn.state == READY:
                self.err(404 if c._closed else 400,
                         "CONSUMER fetch {}/{}: {}".format(st.name, c.name, exc), rid)
        except Exception as exc:
            log.exception("client %d: CONSUMER fetch %s/%s failed", self.conn.id, st.name, c.name)
            if self.conn.state == READY:
                self.err(500, "CONSUMER fetch {}/{}: internal error: {}".format(
                    st.name, c.name, exc), rid)

    def _ack(self, _flags, rid, subject, _reply, body):
        req = self._requests()
        req.need("read", "ACK")
        if not body:
            raise RequestError(400, "ACK: the body must start with the kind (1-4)")
        kind = body[0]
        entry = self.acks.get(subject)
        if entry is None:
            entry = req.parse_ack(subject)
        c, seq = entry
        delay = _F64.unpack_from(body, 1)[0] if kind == _NAK and len(body) >= 9 else 0.0
        try:
            done = req.ack(c, seq, kind, delay, "ACK " + subject)
        except RequestError:
            if c._closed or seq > c.stream.log.last_seq:
                self.acks.pop(subject, None)    # no use remembering it
            raise
        if done:
            self.acks.pop(subject, None)
        if self.conn.verbose:
            self.ok(rid)

    # -- monitoring --------------------------------------------------------------------


# op -> handler(self, flags, id, subject, reply, body), once the client is ready
# (keyed by the plain int, as the parser hands the op over)
_HANDLERS = {op.value: handler for op, handler in (
    (Op.CONNECT, NativeProtocol._connect_again),
    (Op.PUB, NativeProtocol._pub),
    (Op.PUB_BATCH, NativeProtocol._pub_batch),
    (Op.SUB, NativeProtocol._sub),
    (Op.UNSUB, NativeProtocol._unsub),
    (Op.PING, NativeProtocol._ping),
    (Op.PONG, NativeProtocol._pong),
    (Op.STREAM, NativeProtocol._stream),
    (Op.REPLAY, NativeProtocol._replay),
    (Op.CONSUMER, NativeProtocol._consumer),
    (Op.ACK, NativeProtocol._ack),
)}
