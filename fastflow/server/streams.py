"""The stream and consumer requests every door serves: the native door's
STREAM, REPLAY, CONSUMER and ACK frames (``fastflow.server.native``) and the
HTTP door's ``/streams`` API (``fastflow.server.sse``).

What is the same whatever the protocol lives here: who may do what (the
``streams`` permission, read and manage rights on a stream's subjects, the
owner of a consumer), the actions themselves (their answers are dicts),
the checks of a replay's and a fetch's arguments, acknowledgements, and
reading a log from a seq in bounded batches.  A refusal is a
``RequestError`` whose code is an HTTP status (400, 403, 404, 409); each
door says it in its own words and writes the records in its own frames.
"""

import asyncio
import datetime as _dt
import json
import time

from fastflow._impl import batch_payload_bytes, validate_pattern
from fastflow.errors import FastflowError, SubjectError
from fastflow.flow import Retention
from fastflow.protocol import AckKind
from fastflow.server.config import MAX_REPLICAS, parse_duration, parse_size
from fastflow.server.connection import READY
from fastflow.server.quotas import QuotaExceeded

__all__ = ("ACK_KINDS", "LogReader", "RequestError", "StreamRequests", "json_args", "room",
           "stream_summary", "time_arg", "wait_append")

REPLAY_BATCH = 1024                     # records per log read
REPLAY_BYTES = 1 << 20                  # bytes per log read

# an acknowledgement's kind by name (the HTTP door) -> the native protocol's number
ACK_KINDS = {"ack": int(AckKind.ACK), "nak": int(AckKind.NAK), "term": int(AckKind.TERM),
             "progress": int(AckKind.PROGRESS)}


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


def json_args(body, what):
    """The JSON object of a request body (empty: ``{}``); RequestError 400
    naming ``what`` otherwise."""
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


def time_arg(v, what="REPLAY: 'time'"):
    """A replay's start time: ns since the epoch (int) or an RFC 3339 string
    (a datetime; naive: UTC)."""
    if isinstance(v, bool):
        raise RequestError(400, "{} must be ns since the epoch or an RFC 3339 string".format(
            what))
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        s = v.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            t = _dt.datetime.fromisoformat(s)
        except ValueError:
            raise RequestError(400, "{} {!r} is not an RFC 3339 time".format(what, v)) from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        return t
    raise RequestError(400, "{} must be ns since the epoch or an RFC 3339 string, got "
                            "{!r}".format(what, v))


def stream_summary(st):
    """One stream in a list (STREAM list, ``GET /streams``)."""
    lg = st.log
    d = {"name": st.name, "subjects": list(st.subjects), "storage": st.storage,
         "events": len(lg), "bytes": lg.bytes, "first_seq": lg.first_seq,
         "last_seq": lg.last_seq, "consumers": len(st.consumers())}
    if st.replicas > 1:
        d["replicas"] = st.replicas
    return d


def decimal(text, digits=19):
    """The int the ASCII decimal ``text`` spells (at most ``digits``
    digits), else None: str.isdigit also takes '\u00b2', and int() refuses
    over 4,300 digits with its own words; neither is a number here."""
    if 0 < len(text) <= digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def _int_arg(args, key, what, least=0):
    v = args.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < least):
        raise RequestError(400, "{}: '{}' must be an int >= {}".format(what, key, least))
    return v


class StreamRequests:
    """The stream and consumer requests of ``principal`` (a
    ``fastflow.server.auth.Principal``) on ``server``'s engine.  Made per
    request (HTTP: each request has its own principal), on the engine of
    the principal's account."""

    def __init__(self, server, principal):
        self.server = server
        self.account = server.accounts[principal.account]
        self.flow = self.account.flow
        self.principal = principal
        self.perms = principal.permissions

    # -- who may do what ---------------------------------------------------------------

    def need(self, level, what):
        """403 unless the ``streams`` permission allows ``level`` ("read" or
        "manage")."""
        have = self.perms.streams
        if have == "none" or (level == "manage" and have != "manage"):
            raise RequestError(403, "permission denied: {} ({}; this user has streams = "
                                    "'{}')".format(what, "managing streams needs 'manage'"
                                                   if level == "manage" else
                                                   "stream requests need 'read'", have))

    def may_manage(self, subjects, what):
        """403 unless this user may manage a stream on ``subjects``."""
        perms = self.perms
        if not perms.unrestricted:
            why = perms.stream_manage_denied(subjects)
            if why is not None:
                raise RequestError(403, "{}: {}".format(what, why))

    def may_read(self, patterns, what):
        """403 unless this user may read ``patterns`` (a stream's subjects,
        or a consumer's or a replay's filter)."""
        perms = self.perms
        if not perms.unrestricted:
            why = perms.can_read_stream(patterns)
            if why is not None:
                raise RequestError(403, "{}: {}".format(what, why))

    @property
    def owner_id(self):
        """Who owns the durable consumers this user creates (in an account
        other than $G, with its account: a consumer on a shared stream is
        never another account's user's of the same name)."""
        p = self.principal
        if p.account == "$G":
            return "{}:{}".format(p.kind, p.name)
        return "{}:{}@{}".format(p.kind, p.name, p.account)

    def may_operate(self, st, c, what):
        """403 unless this user created the consumer ``c`` or may manage
        its stream."""
        perms = self.perms
        if c.owner == self.owner_id:
            return
        if self.is_shared(st):          # another account's consumer: never
            raise RequestError(403, "permission denied: {} on consumer {!r} of stream {!r}: "
                                    "it belongs to another account".format(what, c.name,
                                                                          st.name))
        if perms.unrestricted:
            return
        if perms.streams == "manage" and perms.stream_manage_denied(st.subjects) is None:
            return
        raise RequestError(403, "permission denied: {} on consumer {!r} of stream {!r}: it "
                                "belongs to another user".format(what, c.name, st.name))

    def stream_of(self, name):
        """The stream ``name`` of this account, or one another account
        shares with it (read-only: ``is_shared``)."""
        if not isinstance(name, str) or not name:
            raise RequestError(400, "a stream name is required")
        st = self.flow.streams().get(name)
        if st is None:
            st, _key = self.account.shared_stream(name)
        if st is None:
            raise RequestError(404, "no stream named {!r}".format(name))
        return st

    def is_shared(self, st):
        """Whether ``st`` is another account's stream shared with this one."""
        return st.name not in self.flow.streams() or self.flow.streams()[st.name] is not st

    def share_key(self, st):
        """The import key a replay of ``st`` is metered under (None: own)."""
        if not self.is_shared(st):
            return None
        for name, (src, sname, _imp) in self.account.shared.items():
            if src.flow.streams().get(sname) is st:
                return self.account.shared_stream(name)[1]
        return None

    def read_only(self, st, what):
        if self.is_shared(st):
            owner = next((src.name for src, sname, _i in self.account.shared.values()
                          if src.flow.streams().get(sname) is st), "?")
            raise RequestError(403, "permission denied: {}: stream {!r} is shared with this "
                                    "account by account {} (read-only)".format(what, st.name,
                                                                              owner))

    def consumer_of(self, st, name):
        c = st.consumers().get(name) if isinstance(name, str) else None
        if c is None:
            raise RequestError(404, "stream {!r} has no consumer {!r}".format(st.name, name))
        return c

    # -- streams -----------------------------------------------------------------------

    def stream(self, action, args):
        """STREAM ``action`` (add, info, list, delete, purge) with ``args``:
        the answer (a dict)."""
        flow = self.flow
        if action == "add":
            return self._add_stream(args)
        if action == "info":
            self.need("read", "STREAM info")
            st = self.stream_of(args.get("name"))
            self.may_read(st.subjects, "STREAM info")
            return st.info()
        if action == "list":
            self.need("read", "STREAM list")
            may = self.perms.may_read_stream
            out = [stream_summary(s) for s in flow.streams().values() if may(s.subjects)]
            for name in sorted(self.account.shared):
                st, _key = self.account.shared_stream(name)
                if st is not None and may(st.subjects):
                    d = stream_summary(st)
                    d["name"] = name
                    d["shared_by"] = self.account.shared[name][0].name
                    out.append(d)
            return {"streams": out}
        if action == "delete":
            self.need("manage", "STREAM delete")
            st = self.stream_of(args.get("name"))
            self.read_only(st, "STREAM delete")
            self.may_manage(st.subjects, "STREAM delete")
            self.server.end_requests("stream", st, "stream {!r} was deleted".format(st.name))
            flow.delete_stream(st.name)
            return {"deleted": st.name}
        if action == "purge":
            self.need("manage", "STREAM purge")
            st = self.stream_of(args.get("name"))
            self.read_only(st, "STREAM purge")
            self.may_manage(st.subjects, "STREAM purge")
            up_to = args.get("up_to")
            if up_to is not None and (isinstance(up_to, bool) or not isinstance(up_to, int)):
                raise RequestError(400, "STREAM purge: 'up_to' must be a seq (int)")
            return {"purged": st.purge(args.get("subject"), up_to)}
        raise RequestError(400, "unknown STREAM action {!r} (add, info, list, delete, purge)"
                           .format(action))

    def _add_stream(self, args):
        flow = self.flow
        self.need("manage", "STREAM add")
        name = args.get("name")
        subjects = args.get("subjects")
        if isinstance(subjects, str):
            subjects = [subjects]
        if not isinstance(subjects, list) or not subjects:
            raise RequestError(400, "STREAM add: 'subjects' must be a list of subject patterns")
        for p in subjects:
            if not isinstance(p, str):
                raise RequestError(400, "STREAM add: 'subjects' must be a list of subject "
                                        "patterns, got {!r}".format(p))
            validate_pattern(p)
        self.may_manage(subjects, "STREAM add")
        if isinstance(name, str) and name in flow.streams():
            self.may_manage(flow.streams()[name].subjects, "STREAM add")
        ret = dict(args.get("retention") or {})
        for k in Retention.__slots__:
            if k in args:
                ret[k] = args[k]
        unknown = set(args) - {"name", "subjects", "storage", "retention", "replicas"} - set(
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
        replicas = args.get("replicas", 1)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or \
                not 1 <= replicas <= MAX_REPLICAS:
            raise RequestError(400, "STREAM add: 'replicas' must be an int in 1..{}, got {!r}"
                               .format(MAX_REPLICAS, replicas))
        if replicas > 1 and self.server.replicated is None:
            raise RequestError(400, "STREAM add: replicas={} needs a cluster (this server has "
                                    "no [cluster] link to a NATS cluster with JetStream)"
                                    .format(replicas))
        exists = isinstance(name, str) and name in flow.streams()
        if isinstance(name, str) and name in self.account.shared:
            raise RequestError(409, "STREAM add: {!r} is the name of a stream account {} "
                                    "shares with this account".format(
                                        name, self.account.shared[name][0].name))
        if isinstance(name, str):
            try:
                self.server.quotas.may_add_stream(self.account, name, retention)
            except QuotaExceeded as exc:
                raise RequestError(429, "STREAM add: {}".format(exc)) from None
        try:
            st = flow.add_stream(name, subjects, retention, args.get("storage"), replicas)
        except SubjectError:
            raise
        except ValueError as exc:
            raise RequestError(409 if exists else 400, str(exc)) from None
        return st.info()

    # -- replay ------------------------------------------------------------------------

    def replay(self, name, args, what="REPLAY"):
        """Check a replay of stream ``name`` (``args``: ``filter``,
        ``limit``, ``seq``, ``time``, ``start``): (stream, start Position,
        filter, limit)."""
        self.need("read", what)
        st = self.stream_of(name)
        filt = args.get("filter")
        if filt is not None:
            validate_pattern(filt)
        why = self.perms.can_read_stream([filt] if filt else st.subjects)
        if why is not None:
            raise RequestError(403, why)
        limit = _int_arg(args, "limit", what)
        seq = _int_arg(args, "seq", what)
        t = args.get("time")
        pos = st.log.seek(args.get("start", "first"), seq=seq,
                          time=None if t is None else time_arg(t, what + ": 'time'"))
        return st, pos, filt, limit

    # -- consumers ---------------------------------------------------------------------

    def consumer(self, action, args):
        """CONSUMER ``action`` (add, info, list, delete) with ``args``: the
        answer (a dict).  A fetch goes through ``fetch``."""
        what = "CONSUMER " + action
        self.need("read", what)
        st = self.stream_of(args.get("stream"))
        if action == "list":
            may = self.perms.may_read_stream
            shared = self.is_shared(st)
            return {"consumers": [c.info() for c in st.consumers().values()
                                  if may([c.config.filter] if c.config.filter
                                         else st.subjects)
                                  and (not shared or c.owner == self.owner_id)]}
        name = args.get("name")
        if action == "add":
            return self._add_consumer(st, name, args)
        if action == "info":
            c = self.consumer_of(st, name)
            self.may_read([c.config.filter] if c.config.filter else st.subjects, what)
            return c.info()
        if action == "delete":
            c = self.consumer_of(st, name)
            self.may_operate(st, c, what)
            self.server.end_requests("consumer", c, "consumer {!r} of stream {!r} was deleted"
                                     .format(name, st.name))
            st.delete_consumer(name)
            return {"deleted": name}
        raise RequestError(400, "unknown CONSUMER action {!r} (add, info, list, delete, "
                                "fetch)".format(action))

    def _add_consumer(self, st, name, args):
        config = dict(args.get("config") or {})
        for k, v in args.items():
            if k not in ("stream", "name", "config"):
                config[k] = v
        filt = config.get("filter")
        if filt is not None:
            validate_pattern(filt)
        why = self.perms.can_read_stream([filt] if filt else st.subjects)
        if why is not None:
            raise RequestError(403, why)
        exists = isinstance(name, str) and name in st.consumers()
        if exists:
            self.may_operate(st, st.consumers()[name], "CONSUMER add")
        else:
            try:
                self.server.quotas.may_add_consumer(self.account, st, name, self.is_shared(st))
            except QuotaExceeded as exc:
                raise RequestError(429, "CONSUMER add: {}".format(exc)) from None
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
        return c.info()

    def fetch(self, args, what="CONSUMER fetch"):
        """Check a fetch (``args``: ``stream``, ``name``, ``n``, ``wait``):
        (stream, consumer, n, wait in seconds)."""
        self.need("read", what)
        st = self.stream_of(args.get("stream"))
        c = self.consumer_of(st, args.get("name"))
        self.may_operate(st, c, what)
        why = self.perms.can_read_stream([c.config.filter] if c.config.filter
                                         else st.subjects)
        if why is not None:
            raise RequestError(403, why)
        n = args.get("n", 1)
        wait = args.get("wait", 0)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise RequestError(400, "{}: 'n' must be an int >= 1".format(what))
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait:
            raise RequestError(400, "{}: 'wait' must be seconds >= 0".format(what))
        return st, c, n, float(wait)

    def ack(self, c, seq, kind, delay=0.0, what="ACK"):
        """Apply an acknowledgement of ``kind`` (``AckKind``'s number) to
        consumer ``c``'s delivery ``seq``; True when the delivery is done
        with (ack, term)."""
        if c._closed:
            raise RequestError(404, "{}: the consumer was deleted".format(what))
        last = c.stream.log.last_seq
        if seq > last:
            raise RequestError(400, "{}: seq {} is beyond the last seq {} of stream {!r}"
                                    .format(what, seq, last, c.stream.name))
        d = _Seq(seq)
        if kind == AckKind.ACK:
            c._ack(d)
            return True
        if kind == AckKind.NAK:
            c._nak(d, delay)
            return False
        if kind == AckKind.TERM:
            c._term(d)
            return True
        if kind == AckKind.PROGRESS:
            c._in_progress(d)
            return False
        raise RequestError(400, "ACK: unknown kind {} (1 ack, 2 nak, 3 term, 4 in "
                                "progress)".format(kind))

    def parse_ack(self, subject, what="ACK"):
        """(consumer, seq) of an ack subject ``$ACK.<stream>.<consumer>.<seq>``
        (the reply of a native delivery, the ``ack`` token of an HTTP one)."""
        parts = subject.split(".") if isinstance(subject, str) else ()
        seq = decimal(parts[3], 20) if len(parts) == 4 else None
        if parts[0] != "$ACK" or seq is None:
            raise RequestError(400, "{}: {!r} is not an ack subject "
                                    "($ACK.<stream>.<consumer>.<seq>)".format(what, subject))
        st = self.flow.streams().get(parts[1])
        if st is None:                  # (a shared stream's ack names it by its own name)
            for src, sname, _imp in self.account.shared.values():
                if sname == parts[1] and not src.flow.closed:
                    st = src.flow.streams().get(sname)
                    break
        c = st.consumers().get(parts[2]) if st is not None else None
        if c is None:
            raise RequestError(404, "{} {}: no such stream or consumer".format(what, subject))
        self.may_operate(st, c, what)
        return c, seq


def ack_subject(stream, consumer, seq):
    """The ack subject (native) or token (HTTP) of a delivery."""
    return "$ACK.{}.{}.{}".format(stream, consumer, seq)


class LogReader:
    """Reads a stream's log from a position on, in bounded batches, and
    counts the records evicted before it got to them (``lost``; ``gap``:
    the last such range, first and last seq); what it read is metered as
    replayed by ``account``."""

    __slots__ = ("log", "seq", "lost", "filter", "gap", "account", "share")

    def __init__(self, lg, pos, filt=None, account=None, share=None):
        self.log = lg
        self.seq = pos.seq              # the next seq to read
        self.lost = pos.lost
        self.filter = filt
        self.gap = (pos.seq - pos.lost, pos.seq - 1) if pos.lost else None
        self.account = account
        self.share = share              # the import key of a shared stream (metering)

    def read(self, stop, limit=REPLAY_BATCH, max_bytes=REPLAY_BYTES):
        """The retained records from ``seq`` up to ``stop`` (at most
        ``limit`` records, about ``max_bytes``), as a log Batch and how
        many of its records are at or below ``stop``; (None, 0) when
        nothing is left up to ``stop``.  ``seq`` moves past them."""
        seq = self.seq
        if seq > stop:
            return None, 0
        lg = self.log
        first = lg.first_seq
        if seq < first:                 # evicted before we got there
            end = min(first, stop + 1)
            self.lost += end - seq
            self.gap = (seq, end - 1)
            seq = self.seq = end
            if seq > stop:
                return None, 0
        b = lg.read(seq, limit=limit, max_bytes=max_bytes, filter=self.filter)
        if b.next_seq <= seq:
            return None, 0
        k = len(b)
        seqs = b.seqs
        while k and seqs[k - 1] > stop:
            k -= 1
        self.seq = seqs[k] if k < len(b) else b.next_seq
        if self.account is not None:
            self.account.replayed(k, batch_payload_bytes(b, k), self.share)
        return b, k


async def room(conn, low):
    """Let this tick's output go out; wait while ``conn``'s pending output
    is above ``low`` bytes (replays and fetches never queue more than that,
    so they do not stall publishers)."""
    await asyncio.sleep(0)
    while conn.state == READY and conn.pending_bytes() > low:
        await asyncio.sleep(0.005)


async def wait_append(st, deadline, consumer=None):
    """Wait until stream ``st`` stores a record, or until ``deadline`` (the
    loop's time; None: no end); with ``consumer``, no longer than until its
    next redelivery falls due."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def on_append(_seq):
        if not fut.done():
            fut.set_result(None)

    listeners = st._target.listeners
    listeners.append(on_append)
    timeout = None if deadline is None else deadline - loop.time()
    if consumer is not None and consumer.pending:     # a redelivery may fall due first
        due = max(0.0, consumer._due - time.monotonic()) + 0.001
        timeout = due if timeout is None else min(timeout, due)
    try:
        if timeout is None:
            await fut
        else:
            await asyncio.wait_for(fut, max(0.0, timeout))
    except asyncio.TimeoutError:
        pass
    finally:
        if on_append in listeners:
            listeners.remove(on_append)
