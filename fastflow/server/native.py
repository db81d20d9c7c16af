"""The native protocol's front door (docs/protocol.md): the handlers of
its frames, served by the shared ``Connection`` lifecycle.

The hot path runs in C: ``FrameParser.feed`` cuts the frames and routes
every PUB without ACK to the engine (``Router._publish_wire``), which
stores the record and appends MSG frames straight into each subscriber's
``OutBuf``.  Python sees only the other frames (``NativeProtocol.handle``:
one handler per op), and each connection writes its ``OutBuf`` once per
loop tick.
"""

import asyncio
import datetime as _dt
import json
import logging
import struct
import time

from fastflow._impl import FrameParser, NativeTarget, OutBuf, ProtocolError, validate_pattern
from fastflow._version import __version__
from fastflow.errors import EventTooLarge, FastflowError, LogFullError, SubjectError
from fastflow.flow import Retention
from fastflow.protocol import AckKind, Flag, Op, error_code
from fastflow.server.config import parse_duration, parse_size
from fastflow.server.connection import CLOSING, READY, DoorProtocol, connect_json

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

_REPLAY_BATCH = 1024                    # records per log read
_REPLAY_BYTES = 1 << 20                 # bytes per log read
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


def _op_name(op):
    """An op's name for a message (the number if it has none)."""
    try:
        return Op(op).name
    except ValueError:
        return op


class RequestError(FastflowError):
    """A request refused with a protocol error code (the connection stays)."""

    def __init__(self, code, message):
        FastflowError.__init__(self, message)
        self.code = code


class _Seq:
    """What Consumer._ack/_nak/_term/_in_progress need of a delivery."""

    __slots__ = ("seq",)

    def __init__(self, seq):
        self.seq = seq


def _json_args(body, what):
    if not body:
        return {}
    try:
        args = json.loads(body)
    except RecursionError:
        raise RequestError(400, "{}: the body nests too deeply".format(what)) from None
    except ValueError as exc:
        raise RequestError(400, "{}: the body is not valid JSON: {}".format(what, exc)) from None
    if not isinstance(args, dict):
        raise RequestError(400, "{}: the body must be a JSON object, got {}".format(
            what, type(args).__name__))
    return args


def _json(obj):
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


def _time_arg(v):
    """A REPLAY ``time``: ns since the epoch (int) or an RFC 3339 string."""
    if isinstance(v, bool):
        raise RequestError(400, "REPLAY: 'time' must be ns since the epoch or an RFC 3339 string")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        s = v.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            t = _dt.datetime.fromisoformat(s)
        except ValueError:
            raise RequestError(400, "REPLAY: 'time' {!r} is not an RFC 3339 time".format(v)) \
                from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        return t
    raise RequestError(400, "REPLAY: 'time' must be ns since the epoch or an RFC 3339 string, "
                            "got {!r}".format(v))


class NativeProtocol(DoorProtocol):
    """The native protocol's handlers for one connection (``conn``)."""

    name = "native"
    parser_error = ProtocolError

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

    def _pub(self, flags, rid, subject, reply, body):
        conn = self.conn
        if not conn.may_publish(subject):
            raise RequestError(403, "permission denied: publish to '{}'".format(subject))
        flow = self.flow
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
        mv = memoryview(body)
        n = len(body)
        off = count = last = 0
        refused = None                  # a stream's first refusal: the batch goes on
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
                try:
                    seq = publish(subject, mv[off:off + rn], None, origin)
                except (LogFullError, EventTooLarge) as exc:   # delivered, not stored
                    if refused is None:
                        refused = (count, exc)
                    seq = 0
                off += rn
                count += 1
                if seq:
                    last = seq
        except (FastflowError, ValueError, TypeError) as exc:   # (RequestError included)
            code = exc.code if isinstance(exc, RequestError) else (
                error_code(exc) if isinstance(exc, FastflowError) else 400)
            raise RequestError(code, "PUB_BATCH item {}: {} ({} item{} before it published)"
                               .format(count, exc, count, "" if count == 1 else "s")) from None
        finally:
            conn.in_msgs_py += count
            mv.release()
        if refused is not None:
            raise RequestError(error_code(refused[1]), "PUB_BATCH item {}: {} (all {} items were "
                               "published)".format(refused[0], refused[1], count))
        if flags & _FL_ACK:
            self.outbuf.frame(_PUBACK, 0, rid, body=_BATCH_ACK.pack(last, count))
        elif conn.verbose:
            self.ok(rid)

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

    def _sub(self, _flags, sid, pattern, queue, _body):
        conn = self.conn
        queue = queue or None
        if not pattern:
            raise RequestError(400, "SUB needs a subject pattern")
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
        conn.subscribe(sid, pattern, queue, NativeTarget(self.outbuf, sid, conn.echo))
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

    def _stream_of(self, name):
        if not isinstance(name, str) or not name:
            raise RequestError(400, "a stream name is required")
        st = self.flow.streams().get(name)
        if st is None:
            raise RequestError(404, "no stream named {!r}".format(name))
        return st

    def _need(self, level, what):
        have = self.conn.principal.permissions.streams
        if have == "none" or (level == "manage" and have != "manage"):
            raise RequestError(403, "permission denied: {} ({}; this user has streams = "
                                    "'{}')".format(what, "managing streams needs 'manage'"
                                                   if level == "manage" else
                                                   "stream requests need 'read'", have))

    def _may_manage(self, subjects, what):
        """403 unless this user may manage a stream on ``subjects``."""
        perms = self.conn.principal.permissions
        if not perms.unrestricted:
            why = perms.stream_manage_denied(subjects)
            if why is not None:
                raise RequestError(403, "{}: {}".format(what, why))

    def _may_read(self, patterns, what):
        """403 unless this user may read ``patterns`` (a stream's subjects,
        or a consumer's or a replay's filter)."""
        perms = self.conn.principal.permissions
        if not perms.unrestricted:
            why = perms.can_read_stream(patterns)
            if why is not None:
                raise RequestError(403, "{}: {}".format(what, why))

    @property
    def owner_id(self):
        """Who owns the durable consumers this connection creates."""
        p = self.conn.principal
        return "{}:{}".format(p.kind, p.name)

    def _may_operate(self, st, c, what):
        """403 unless this user created the consumer ``c`` or may manage
        its stream."""
        perms = self.conn.principal.permissions
        if perms.unrestricted or c.owner == self.owner_id:
            return
        if perms.streams == "manage" and perms.stream_manage_denied(st.subjects) is None:
            return
        raise RequestError(403, "permission denied: {} on consumer {!r} of stream {!r}: it "
                                "belongs to another user".format(what, c.name, st.name))

    def _stream(self, _flags, rid, action, _reply, body):
        args = _json_args(body, "STREAM " + action)
        flow = self.flow
        if action == "add":
            self._need("manage", "STREAM add")
            name = args.get("name")
            subjects = args.get("subjects")
            if isinstance(subjects, str):
                subjects = [subjects]
            if not isinstance(subjects, list) or not subjects:
                raise RequestError(400, "STREAM add: 'subjects' must be a list of subject "
                                        "patterns")
            for p in subjects:
                if not isinstance(p, str):
                    raise RequestError(400, "STREAM add: 'subjects' must be a list of subject "
                                            "patterns, got {!r}".format(p))
                validate_pattern(p)
            self._may_manage(subjects, "STREAM add")
            if isinstance(name, str) and name in flow.streams():
                self._may_manage(flow.streams()[name].subjects, "STREAM add")
            ret = dict(args.get("retention") or {})
            for k in Retention.__slots__:
                if k in args:
                    ret[k] = args[k]
            unknown = set(args) - {"name", "subjects", "storage", "retention"} - set(
                Retention.__slots__)
            if unknown:
                raise RequestError(400, "STREAM add: unknown arguments {}".format(sorted(unknown)))
            try:
                for k, v in ret.items():        # units as in the config: "2m", "1GiB"
                    if isinstance(v, str) and k in ("max_age", "duplicate_window"):
                        ret[k] = parse_duration(v, k)
                    elif isinstance(v, str) and k in ("max_bytes", "max_event_size"):
                        ret[k] = parse_size(v, k)
                retention = Retention(**ret)
            except (TypeError, ValueError) as exc:      # (ConfigError included)
                raise RequestError(400, "STREAM add: retention: {}".format(exc)) from None
            exists = isinstance(name, str) and name in flow.streams()
            try:
                st = flow.add_stream(name, subjects, retention, args.get("storage"))
            except SubjectError:
                raise
            except ValueError as exc:
                raise RequestError(409 if exists else 400, str(exc)) from None
            self.ok(rid, st.info())
        elif action == "info":
            self._need("read", "STREAM info")
            st = self._stream_of(args.get("name"))
            self._may_read(st.subjects, "STREAM info")
            self.ok(rid, st.info())
        elif action == "list":
            self._need("read", "STREAM list")
            may = self.conn.principal.permissions.may_read_stream
            self.ok(rid, {"streams": [_stream_summary(s) for s in flow.streams().values()
                                      if may(s.subjects)]})
        elif action == "delete":
            self._need("manage", "STREAM delete")
            st = self._stream_of(args.get("name"))
            self._may_manage(st.subjects, "STREAM delete")
            self.server.end_requests("stream", st, "stream {!r} was deleted".format(st.name))
            flow.delete_stream(st.name)
            self.ok(rid, {"deleted": st.name})
        elif action == "purge":
            self._need("manage", "STREAM purge")
            st = self._stream_of(args.get("name"))
            self._may_manage(st.subjects, "STREAM purge")
            up_to = args.get("up_to")
            if up_to is not None and (isinstance(up_to, bool) or not isinstance(up_to, int)):
                raise RequestError(400, "STREAM purge: 'up_to' must be a seq (int)")
            self.ok(rid, {"purged": st.purge(args.get("subject"), up_to)})
        else:
            raise RequestError(400, "unknown STREAM action {!r} (add, info, list, delete, purge)"
                               .format(action))

    def _replay(self, _flags, rid, name, _reply, body):
        args = _json_args(body, "REPLAY")
        self._need("read", "REPLAY")
        st = self._stream_of(name)
        filt = args.get("filter")
        if filt is not None:
            validate_pattern(filt)
        why = self.conn.principal.permissions.can_read_stream([filt] if filt else st.subjects)
        if why is not None:
            raise RequestError(403, why)
        limit = args.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 0):
            raise RequestError(400, "REPLAY: 'limit' must be an int >= 0")
        seq = args.get("seq")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
            raise RequestError(400, "REPLAY: 'seq' must be an int >= 0")
        t = args.get("time")
        pos = st.log.seek(args.get("start", "first"), seq=seq,
                          time=None if t is None else _time_arg(t))
        self.conn.track(self.loop.create_task(self._replay_task(rid, st, pos, filt, limit,
                                                            st.log.last_seq)), rid, st)

    async def _replay_task(self, rid, st, pos, filt, limit, stop):
        """MSG frames of the stored records (their bytes as stored: no
        re-encoding), in bounded batches that wait for the socket to drain."""
        lg = st.log
        seq = pos.seq
        lost = pos.lost
        count = 0
        frame = self.outbuf.frame
        prefix = "$REPLAY.{}.".format(st.name)
        try:
            while seq <= stop and (limit is None or count < limit):
                if lg.closed or self.conn.state != READY:
                    return
                first = lg.first_seq
                if seq < first:         # evicted while we waited
                    lost += min(first, stop + 1) - seq
                    seq = first
                    if seq > stop:
                        break
                n = _REPLAY_BATCH if limit is None else min(_REPLAY_BATCH, limit - count)
                b = lg.read(seq, limit=n, max_bytes=_REPLAY_BYTES, filter=filt)
                k = len(b)
                seqs, ts, offs, subjects = b.seqs, b.ts, b.offsets, b.subjects
                buf = memoryview(b.buffer)
                for i in range(k):
                    s = seqs[i]
                    if s > stop:
                        k = i
                        break
                    frame(_MSG, 0, rid, subjects[i], "{}{}.{}".format(prefix, s, ts[i]),
                          buf[offs[i]:offs[i + 1]])
                buf.release()
                count += k
                if b.next_seq <= seq:
                    break
                seq = b.next_seq
                if k == 0 and seq > stop:
                    break
                await self._room()
            self.ok(rid, {"count": count, "lost": lost, "next_seq": min(seq, stop + 1)})
        except (FastflowError, ValueError) as exc:
            if self.conn.state == READY:
                self.err(error_code(exc) if isinstance(exc, FastflowError) else 400,
                         "REPLAY {}: {}".format(st.name, exc), rid)
        except Exception as exc:
            log.exception("client %d: REPLAY %s failed", self.conn.id, st.name)
            if self.conn.state == READY:
                self.err(500, "REPLAY {}: internal error: {}".format(st.name, exc), rid)

    async def _room(self):
        """Let this tick's output go out; wait while the connection's pending
        output is above the low-water mark (replays and fetches never queue
        more than that, so they do not stall publishers)."""
        await asyncio.sleep(0)
        low = self.cfg.write_low_water
        while self.conn.state == READY and self.conn.pending_bytes() > low:
            await asyncio.sleep(0.005)

    # -- durable consumers -------------------------------------------------------------

    def _consumer_of(self, st, name):
        c = st.consumers().get(name) if isinstance(name, str) else None
        if c is None:
            raise RequestError(404, "stream {!r} has no consumer {!r}".format(st.name, name))
        return c

    def _consumer(self, _flags, rid, action, _reply, body):
        args = _json_args(body, "CONSUMER " + action)
        self._need("read", "CONSUMER " + action)
        if action == "list":
            st = self._stream_of(args.get("stream"))
            may = self.conn.principal.permissions.may_read_stream
            self.ok(rid, {"consumers": [
                c.info() for c in st.consumers().values()
                if may([c.config.filter] if c.config.filter else st.subjects)]})
            return
        st = self._stream_of(args.get("stream"))
        name = args.get("name")
        perms = self.conn.principal.permissions
        if action == "add":
            config = dict(args.get("config") or {})
            for k, v in args.items():
                if k not in ("stream", "name", "config"):
                    config[k] = v
            filt = config.get("filter")
            if filt is not None:
                validate_pattern(filt)
            why = perms.can_read_stream([filt] if filt else st.subjects)
            if why is not None:
                raise RequestError(403, why)
            exists = isinstance(name, str) and name in st.consumers()
            if exists:
                self._may_operate(st, st.consumers()[name], "CONSUMER add")
            try:
                c = st.consumer(name, **config)
            except TypeError as exc:
                raise RequestError(400, "CONSUMER add: {}".format(exc)) from None
            except SubjectError:
                raise
            except ValueError as exc:
                raise RequestError(409 if exists else 400, str(exc)) from None
            if not exists:
                st.set_consumer_owner(name, self.owner_id)
            self.ok(rid, c.info())
        elif action == "info":
            c = self._consumer_of(st, name)
            self._may_read([c.config.filter] if c.config.filter else st.subjects,
                           "CONSUMER info")
            self.ok(rid, c.info())
        elif action == "delete":
            c = self._consumer_of(st, name)
            self._may_operate(st, c, "CONSUMER delete")
            self.server.end_requests("consumer", c, "consumer {!r} of stream {!r} was deleted"
                                     .format(name, st.name))
            st.delete_consumer(name)
            self.ok(rid, {"deleted": name})
        elif action == "fetch":
            c = self._consumer_of(st, name)
            self._may_operate(st, c, "CONSUMER fetch")
            why = perms.can_read_stream([c.config.filter] if c.config.filter else st.subjects)
            if why is not None:
                raise RequestError(403, why)
            n = args.get("n", 1)
            wait = args.get("wait", 0)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise RequestError(400, "CONSUMER fetch: 'n' must be an int >= 1")
            if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait:
                raise RequestError(400, "CONSUMER fetch: 'wait' must be seconds >= 0")
            self.conn.track(self.loop.create_task(self._fetch_task(rid, st, c, n, float(wait))),
                        rid, st, c)
        else:
            raise RequestError(400, "unknown CONSUMER action {!r} (add, info, list, delete, "
                                    "fetch)".format(action))

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
                    await self._room()
                    continue
                if count or loop.time() >= deadline:
                    break
                await self._wait_append(st, c, deadline)
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

    async def _wait_append(self, st, c, deadline):
        loop = self.loop
        fut = loop.create_future()

        def on_append(_seq):
            if not fut.done():
                fut.set_result(None)

        listeners = st._target.listeners
        listeners.append(on_append)
        timeout = deadline - loop.time()
        if c.pending:                   # a redelivery may fall due first
            timeout = min(timeout, max(0.0, c._due - time.monotonic()) + 0.001)
        try:
            await asyncio.wait_for(fut, max(0.0, timeout))
        except asyncio.TimeoutError:
            pass
        finally:
            if on_append in listeners:
                listeners.remove(on_append)

    def _ack(self, _flags, rid, subject, _reply, body):
        self._need("read", "ACK")
        if not body:
            raise RequestError(400, "ACK: the body must start with the kind (1-4)")
        kind = body[0]
        entry = self.acks.get(subject)
        if entry is None:
            entry = self._parse_ack(subject)
        c, seq = entry
        if c._closed:
            self.acks.pop(subject, None)
            raise RequestError(404, "ACK {}: the consumer was deleted".format(subject))
        last = c.stream.log.last_seq
        if seq > last:
            self.acks.pop(subject, None)
            raise RequestError(400, "ACK {}: seq {} is beyond the last seq {} of stream {!r}"
                                    .format(subject, seq, last, c.stream.name))
        d = _Seq(seq)
        if kind == AckKind.ACK:
            c._ack(d)
            self.acks.pop(subject, None)
        elif kind == AckKind.NAK:
            delay = _F64.unpack_from(body, 1)[0] if len(body) >= 9 else 0.0
            c._nak(d, delay)
        elif kind == AckKind.TERM:
            c._term(d)
            self.acks.pop(subject, None)
        elif kind == AckKind.PROGRESS:
            c._in_progress(d)
        else:
            raise RequestError(400, "ACK: unknown kind {} (1 ack, 2 nak, 3 term, 4 in "
                                    "progress)".format(kind))
        if self.conn.verbose:
            self.ok(rid)

    def _parse_ack(self, subject):
        """(consumer, seq) of ``$ACK.<stream>.<consumer>.<seq>`` (a delivery
        made to another connection, or forgotten)."""
        parts = subject.split(".")
        if len(parts) != 4 or parts[0] != "$ACK" or not parts[3].isdigit():
            raise RequestError(400, "ACK: {!r} is not an ack subject "
                                    "($ACK.<stream>.<consumer>.<seq>)".format(subject))
        st = self.flow.streams().get(parts[1])
        c = st.consumers().get(parts[2]) if st is not None else None
        if c is None:
            raise RequestError(404, "ACK {}: no such stream or consumer".format(subject))
        self._may_operate(st, c, "ACK")
        return c, int(parts[3])

    # -- monitoring --------------------------------------------------------------------


def _stream_summary(st):
    lg = st.log
    return {"name": st.name, "subjects": list(st.subjects), "storage": st.storage,
            "events": len(lg), "bytes": lg.bytes, "first_seq": lg.first_seq,
            "last_seq": lg.last_seq, "consumers": len(st.consumers())}


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
