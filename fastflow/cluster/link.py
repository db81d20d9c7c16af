"""The cluster link: one NATS client connection from this node to the
backbone (a NATS cluster), and what it carries (docs/cluster.md).

- **Interest.**  Every target a door or the engine adds to an account's
  router (``Router.on_interest``) counts; the link subscribes on the
  backbone once per (pattern, queue group) this node wants, and tells the
  other nodes (the ``_FFI.<node>`` gossip), which register a forwarder
  (``ClusterTarget``) for it in their own routers.  A node pays nothing per
  publish for what no other node wants: no forwarder matches it.
- **Forwarding.**  A local publish that matches a forwarder goes to the
  backbone once (one PUB, the event record as the payload) however many
  nodes and patterns want it; NATS fans it out.  What comes back from the
  backbone is routed in C (``NatsParser(client=True)``, a ``NatsRoute``
  per sid) with the link's OutBuf as the origin: forwarders never send it
  again (their ``echo`` is False), and the connection says ``echo: false``.
- **Queue groups.**  A group with members on several nodes is a NATS
  queue subscription on ``_FFQ.<hex(group)>.<subject>``; a node prefers its
  local members and forwards to the group only when it has none.
- **Accounts** are subject prefixes on the backbone, ``_FFA.<account>.``
  (subject and reply subject): one connection serves them all.

The backbone is trusted infrastructure: the nodes enforce permissions at
their doors; what a node forwards is checked again (the record, the trust
policy) by the node that receives it.
"""

import asyncio
import binascii
import hashlib
import json
import logging
import os
import random
import urllib.parse

from fastflow import _version
from fastflow._impl import ClusterTarget, NatsParser, NatsRoute, OutBuf
from fastflow.errors import FastflowError, NoRespondersError

__all__ = ("Link", "Msg", "parse_urls")

log = logging.getLogger("fastflow.cluster")

GOSSIP = "_FFI."                # _FFI.<node>: a node's interest; _FFI.sync: send yours
QUEUE_NS = "_FFQ."              # _FFQ.<hex(group)>.<backbone subject>: a queue group's
ACCOUNT_NS = "_FFA."            # _FFA.<account>.<subject>: an account's subjects
MAX_GOSSIP_BYTES = 256 << 10    # a full snapshot is sent in parts of about this size
MAX_REQUESTS = 65536            # requests waiting for a reply at once
MAX_NODES = 4096                # other nodes remembered


class Msg:
    """A message from the backbone (``Link.subscribe`` / ``request``)."""

    __slots__ = ("subject", "reply", "headers", "data")

    def __init__(self, subject, reply, headers, data):
        self.subject = subject
        self.reply = reply
        self.headers = headers
        self.data = data

    def header(self, name):
        """The value of header ``name`` (case-insensitive), or None; the
        status line's code as ``header(":status")``."""
        if not self.headers:
            return None
        lines = self.headers.split(b"\r\n")
        if name == ":status":
            parts = lines[0].split(None, 2)
            return parts[1].decode("latin-1") if len(parts) > 1 else None
        want = name.lower().encode("latin-1")
        for ln in lines[1:]:
            k, sep, v = ln.partition(b":")
            if sep and k.strip().lower() == want:
                return v.strip().decode("utf-8", "replace")
        return None

    def __repr__(self):
        return "<Msg {} reply={} {} bytes>".format(self.subject, self.reply, len(self.data))


def parse_urls(urls):
    """``nats://host:port[,nats://...]`` (a str, or a list of them) as a
    list of (host, port, user, password); a bare ``host:port`` works too."""
    if isinstance(urls, str):
        urls = [u for u in urls.split(",")]
    out = []
    for u in urls:
        u = u.strip()
        if not u:
            continue
        if "://" not in u:
            u = "nats://" + u
        p = urllib.parse.urlsplit(u)
        if p.scheme not in ("nats", "tcp"):
            raise ValueError("cluster url {!r}: the scheme must be nats:// (TLS to the "
                             "backbone is not supported yet)".format(u))
        try:
            port = p.port or 4222
        except ValueError:
            raise ValueError("cluster url {!r}: bad port".format(u)) from None
        if not p.hostname:
            raise ValueError("cluster url {!r}: no host".format(u))
        out.append((p.hostname, port, urllib.parse.unquote(p.username or "") or None,
                    urllib.parse.unquote(p.password or "") or None))
    if not out:
        raise ValueError("cluster: no NATS server url given")
    return out


def _token(s):
    """``s`` as one subject token (hex when it is not one as it is)."""
    if s and all(c.isalnum() or c in "_-$" for c in s) and len(s) <= 64:
        return s
    return "x" + binascii.hexlify(s.encode("utf-8")).decode("ascii")


def _group_token(queue):
    """A queue group's name on the backbone: 16 hex digits of its hash
    (short whatever the name's length; a token whatever its bytes)."""
    return hashlib.blake2b(queue.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _check_line(s, what):
    if not s or any(c in s for c in " \t\r\n\0"):
        raise ValueError("{} {!r} has a space, tab, CR, LF or NUL, or is empty".format(what, s))
    return s


class _Account:
    """An account's router on the backbone: its interest (local, and the
    other nodes'), its subscriptions and its forwarders."""

    def __init__(self, link, name, router):
        self.link = link
        self.name = name
        self.router = router
        self.prefix = ACCOUNT_NS + _token(name) + "."
        self.local = {}             # (pattern, queue) -> targets here
        self.sids = {}              # (pattern, queue) -> its backbone sid (bytes)
        self.remote = {}            # (pattern, queue) -> nodes that want it
        self.fwd = {}               # (pattern, queue) -> the forwarder's handle here
        self.plain = ClusterTarget(link.out, self.prefix, self.prefix)
        self.groups = {}            # queue -> its ClusterTarget
        self.group_keys = {}        # queue -> its patterns forwarded
        self.gone = [0, 0, 0]       # msgs, bytes, too_large of the groups gone
        self.bad_patterns = 0       # remote patterns this router refused
        link._limits(self.plain)

    # -- this node's interest -------------------------------------------------------

    def on_interest(self, pattern, queue, d):
        key = (pattern, queue)
        n = self.local.get(key, 0) + d
        if n > 0:
            self.local[key] = n
            if n == 1 and d == 1:
                self.link._local_changed(self, key, True)
        else:
            self.local.pop(key, None)
            if n == 0:
                self.link._local_changed(self, key, False)

    def backbone_sub(self, key):
        """The SUB of ``key`` on the backbone: (subject, queue, NatsRoute)."""
        pattern, queue = key
        if queue is None:
            return (self.prefix + pattern, self.link.node_queue,
                    NatsRoute(self.router, len(self.prefix), None, self.prefix))
        ns = QUEUE_NS + _group_token(queue) + "."
        return (ns + self.prefix + pattern, ns[len(QUEUE_NS):-1],
                NatsRoute(self.router, len(ns) + len(self.prefix), queue, self.prefix))

    # -- the other nodes' interest ---------------------------------------------------

    def remote_add(self, key):
        n = self.remote.get(key, 0) + 1
        self.remote[key] = n
        if n > 1:
            return
        pattern, queue = key
        if queue is None:
            target = self.plain
        else:
            target = self.groups.get(queue)
            if target is None:
                ns = QUEUE_NS + _group_token(queue) + "."
                target = self.groups[queue] = ClusterTarget(self.link.out, ns + self.prefix,
                                                            self.prefix)
                self.link._limits(target)
                self.group_keys[queue] = 0
            self.group_keys[queue] += 1
            self.router.prefer_local = True
        try:
            self.fwd[key] = self.router.add(pattern, target, queue)
        except (FastflowError, ValueError, TypeError) as exc:
            self.bad_patterns += 1
            log.warning("cluster: account %s: another node's interest %r refused: %s",
                        self.name, key, exc)

    def remote_del(self, key):
        n = self.remote.get(key, 0) - 1
        if n > 0:
            self.remote[key] = n
            return
        self.remote.pop(key, None)
        h = self.fwd.pop(key, None)
        if h is not None:
            try:
                self.router.remove(h)
            except KeyError:
                pass
        queue = key[1]
        if queue is not None and queue in self.group_keys:
            self.group_keys[queue] -= 1
            if self.group_keys[queue] <= 0:     # its last pattern: the group goes
                del self.group_keys[queue]
                t = self.groups.pop(queue)
                self.gone[0] += t.fwd_msgs
                self.gone[1] += t.fwd_bytes
                self.gone[2] += t.too_large
                self.router.prefer_local = bool(self.groups)

    def forwarded(self):
        msgs = self.plain.fwd_msgs + self.gone[0]
        nbytes = self.plain.fwd_bytes + self.gone[1]
        big = self.plain.too_large + self.gone[2]
        for t in self.groups.values():
            msgs += t.fwd_msgs
            nbytes += t.fwd_bytes
            big += t.too_large
        return msgs, nbytes, big


class _Protocol(asyncio.Protocol):
    def __init__(self, link):
        self.link = link
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.link.proto = self

    def data_received(self, data):
        self.link._data(self, data)

    def connection_lost(self, exc):
        self.link._lost(self, exc)

    def pause_writing(self):
        self.link.out.behind = True

    def resume_writing(self):
        self.link.out.behind = False
        self.link._flush()


class Link:
    """This node's connection to the backbone (docs/cluster.md).

    ``urls``: the NATS servers (``parse_urls``), tried in a random order
    and again after a loss, with backoff; ``node``: this node's name on the
    backbone (unique; a random suffix is added); ``interest_interval``:
    seconds between heartbeats (a node silent for three is forgotten).
    ``attach(name, router)`` puts an account's router on the backbone.
    For services (JetStream): ``subscribe``, ``unsubscribe``, ``publish``,
    ``request`` on raw backbone subjects.
    """

    def __init__(self, urls, *, node="fastflow", interest_interval=1.0, token=None,
                 user=None, password=None, max_pending=64 << 20, connect_timeout=2.0,
                 reconnect_wait=0.1, reconnect_wait_max=2.0, ping_interval=10.0):
        self.servers = parse_urls(urls)
        if interest_interval <= 0:
            raise ValueError("interest_interval must be > 0")
        self.node = _token(node)[:40] + "-" + binascii.hexlify(os.urandom(4)).decode("ascii")
        self.node_queue = "_ffn_" + self.node       # one copy per node, patterns overlapping
        self.interest_interval = float(interest_interval)
        self.token = token
        self.user = user
        self.password = password
        self.connect_timeout = connect_timeout
        self.reconnect_wait = reconnect_wait
        self.reconnect_wait_max = reconnect_wait_max
        self.ping_interval = ping_interval
        self.out = OutBuf(max_pending, on_data=self._kick)
        self.out.backbone = True        # (what the link publishes came from other nodes)
        self.max_payload = 0        # the server's (INFO), for the forwarders
        self._sync_soon = None      # a full snapshot asked for, to be sent once
        self.out.flush_at = 256 << 10   # (a burst is written before the tick ends)
        self.out.on_flush = self._flush
        self.in_closed = [0, 0]     # msgs, refused of the routes of interest now gone
        self.routes = {}            # sid bytes -> NatsRoute (the parser's)
        self.parser = None
        self.accounts = {}          # name -> _Account
        self.raw = {}               # sid bytes -> (subject, queue, callback)
        self.nodes = {}             # node -> {"v", "seen", "keys": set of (acct, p, q)}
        self.loop = None
        self.proto = None
        self.connected = False
        self.server = None          # "host:port" connected to
        self.server_info = {}
        self.closed = False
        self.reconnects = 0
        self.n_connects = 0
        self.last_error = None
        self.in_msgs = 0            # messages from the backbone (routed and raw)
        self.in_bytes = 0
        self.bad_in = 0             # messages refused that no route counts
        self._bad_logged = 0
        self.too_long = 0           # subscriptions too long for the backbone
        self.gossip_in = 0
        self.gossip_out = 0
        self._next_sid = 0
        self._version = 0           # of this node's interest, as gossiped
        self._adds = []             # interest changes to gossip this tick
        self._dels = []
        self._flush_soon = None
        self._task = None
        self._timer = None
        self._ready = None          # a future: the first connection made
        self._inbox = None          # "_INBOX.<node>." (requests' replies)
        self._requests = {}         # token -> future
        self._next_req = 0
        self._pings = []            # futures waiting for a PONG
        self._on_connect = []
        self._last_ping = 0.0
        self._pongs_missed = 0
        self._cstate = None         # (future) the CONNECT handshake's PONG

    def _limits(self, target):
        """The backbone's limits on a forwarder (what it would close the link for)."""
        target.max_payload = self.max_payload
        target.max_line = 4096          # (nats-server's default max_control_line)

    # -- accounts ---------------------------------------------------------------------

    def attach(self, name, router):
        """Put account ``name``'s router on the backbone (its interest now
        and as it changes)."""
        if name in self.accounts:
            raise ValueError("account {!r} is on the backbone already".format(name))
        a = self.accounts[name] = _Account(self, name, router)
        router.on_interest = a.on_interest
        for pattern, queue in router.interest():
            a.on_interest(pattern, queue, 1)
        for st in self.nodes.values():  # what the others want of it, known already
            for k in st["keys"]:
                if k[0] == name:
                    a.remote_add((k[1], k[2]))
        return a

    def detach(self, name):
        """Take account ``name`` off the backbone."""
        a = self.accounts.pop(name, None)
        if a is None:
            return
        a.router.on_interest = None
        for key in list(a.local):
            a.local.pop(key)
            self._local_changed(a, key, False)
        for key in list(a.fwd):
            a.remote[key] = 1
            a.remote_del(key)

    # -- interest ---------------------------------------------------------------------

    def _local_changed(self, a, key, added):
        if added:
            subject, queue, route = a.backbone_sub(key)
            sid = self._sid()
            a.sids[key] = sid
            self.routes[sid] = route
            if self.connected:
                self._write_sub(subject, queue, sid)
            self._adds.append([a.name, key[0], key[1]])
        else:
            sid = a.sids.pop(key, None)
            if sid is not None:
                r = self.routes.pop(sid, None)
                if r is not None:
                    self.in_closed[0] += r.msgs
                    self.in_closed[1] += r.bad
                if self.connected:
                    self._write(b"UNSUB " + sid + b"\r\n")
            self._dels.append([a.name, key[0], key[1]])
        if self.connected:
            # told at once: an event this node forwards next (a request whose
            # reply subject was just subscribed) must not pass the news
            self._gossip_changes()

    def _sid(self):
        self._next_sid += 1
        return b"%d" % self._next_sid

    def _write_sub(self, subject, queue, sid):
        line = "SUB {} {}".format(subject, queue) if queue else "SUB {}".format(subject)
        b = line.encode("utf-8") + b" " + sid + b"\r\n"
        if len(b) > 4096:
            # (nats-server would close the link for it, again at each reconnection)
            self.too_long += 1
            log.warning("cluster: a subscription of %d bytes is too long for the backbone: "
                        "%.80s...", len(b), line)
            return
        self._write(b)

    def _write(self, b):
        """A control line; if the output cannot take it (full), the link
        starts again (what the server and the other nodes know is resent)."""
        if not self.out.write(b) and self.connected and self.proto is not None:
            log.warning("cluster: the backbone's output is full: reconnecting to resend "
                        "the subscriptions and this node's interest")
            self.proto.transport.abort()

    def _my_interest(self):
        return [[a.name, p, q] for a in self.accounts.values() for (p, q) in a.local]

    def _gossip_changes(self):
        if not (self._adds or self._dels) or not self.connected:
            return
        self._version += 1
        body = {"node": self.node, "v": self._version}
        if self._adds:
            body["add"] = self._adds
        if self._dels:
            body["del"] = self._dels
        self._adds = []
        self._dels = []
        self._publish_gossip(body)

    def _gossip_full(self):
        """All of this node's interest, in parts of about MAX_GOSSIP_BYTES
        (the first says ``full``, the others ``add``)."""
        self._adds = []
        self._dels = []
        self._version += 1
        items = self._my_interest()
        part, size, first = [], 0, True
        for it in items:
            part.append(it)
            size += len(it[1]) + 16
            if size >= MAX_GOSSIP_BYTES:
                self._publish_gossip({"node": self.node, "v": self._version, "full": first,
                                      "add": part})
                first = False
                self._version += 1
                part, size = [], 0
        self._publish_gossip({"node": self.node, "v": self._version, "full": first,
                              "add": part})

    def _sync_now(self):
        self._sync_soon = None
        if self.connected:
            self._gossip_full()

    def _publish_gossip(self, body):
        self.gossip_out += 1
        self.publish(GOSSIP + self.node, json.dumps(body, separators=(",", ":")).encode())

    def _on_gossip(self, msg):
        self.gossip_in += 1
        if msg.subject == GOSSIP + "sync":
            try:
                want = json.loads(msg.data).get("node")
            except (ValueError, AttributeError):
                return
            if want in ("*", self.node) and self._sync_soon is None:
                # (however many ask within a moment: one snapshot)
                self._sync_soon = self.loop.call_later(
                    min(0.05, self.interest_interval / 4), self._sync_now)
            return
        try:
            body = json.loads(msg.data)
            node = body["node"]
            v = int(body["v"])
            if not isinstance(node, str):
                raise TypeError("node")
        except (ValueError, KeyError, TypeError, OverflowError):
            log.warning("cluster: malformed interest gossip on %s", msg.subject)
            return
        if node == self.node or msg.subject != GOSSIP + node:
            return
        st = self.nodes.get(node)
        if st is None:
            if len(self.nodes) >= MAX_NODES:
                log.warning("cluster: more than %d nodes: %s ignored", MAX_NODES, node)
                return
            st = self.nodes[node] = {"v": 0, "seen": 0.0, "keys": set()}
        st["seen"] = self.loop.time()
        if body.get("full"):
            # all of it (or its first part): only the difference changes here
            st["v"] = v
            keys = set()
            for it in body.get("add", ()):
                k = self._key(it)
                if k is not None:
                    keys.add(k)
            self._set_node(st, keys)
            if body.get("bye"):
                del self.nodes[node]     # it left: forgotten at once
            return
        elif v != (st["v"] if body.get("hb") else st["v"] + 1):
            # a heartbeat with another version than the last change known,
            # a gap, a node not heard from before: ask for all of it
            st["v"] = -1
            self.publish(GOSSIP + "sync", json.dumps({"node": node}).encode())
            return
        elif body.get("hb"):
            return                      # nothing changed
        st["v"] = v
        keys = st["keys"]
        for it in body.get("add", ()):
            k = self._key(it)
            if k is not None and k not in keys:
                keys.add(k)
                self._remote(k, True)
        for it in body.get("del", ()):
            k = self._key(it)
            if k is not None and k in keys:
                keys.discard(k)
                self._remote(k, False)

    def _key(self, it):
        try:
            acct, pattern, queue = it
        except (TypeError, ValueError):
            return None
        if not isinstance(acct, str) or not isinstance(pattern, str) \
                or not (queue is None or isinstance(queue, str)):
            return None
        return (acct, pattern, queue)

    def _set_node(self, st, keys):
        for k in st["keys"] - keys:
            self._remote(k, False)
        for k in keys - st["keys"]:
            self._remote(k, True)
        st["keys"] = keys

    def _remote(self, k, add):
        a = self.accounts.get(k[0])
        if a is None:
            return                      # an account this node does not have
        if add:
            a.remote_add((k[1], k[2]))
        else:
            a.remote_del((k[1], k[2]))

    def _forget_all(self):
        for st in self.nodes.values():
            self._set_node(st, set())
        self.nodes.clear()

    def _tick(self):
        """Every interest_interval: a heartbeat; nodes silent for three
        forgotten; a PING now and then (a dead server found)."""
        self._timer = self.loop.call_later(self.interest_interval, self._tick)
        if not self.connected:
            return
        self._publish_gossip({"node": self.node, "v": self._version, "hb": True})
        now = self.loop.time()
        for node, st in list(self.nodes.items()):
            if now - st["seen"] > 3 * self.interest_interval:
                log.info("cluster: node %s silent for %.1f s: its interest forgotten", node,
                         now - st["seen"])
                self._set_node(st, set())
                del self.nodes[node]
        if now - self._last_ping >= self.ping_interval:
            self._last_ping = now
            if self._pongs_missed >= 2:
                log.warning("cluster: %s does not answer PINGs: reconnecting", self.server)
                self.proto.transport.abort()
                return
            self._pongs_missed += 1
            self._pings.append(None)    # (its PONG is not a flush's)
            self.out.write(b"PING\r\n")

    # -- services ---------------------------------------------------------------------

    def subscribe(self, subject, callback, queue=None):
        """Subscribe to the raw backbone ``subject``; ``callback(Msg)`` runs
        in the loop.  Kept across reconnects.  Returns the sid."""
        _check_line(subject, "subject")
        if queue is not None:
            _check_line(queue, "queue")
        sid = self._sid()
        self.raw[sid] = (subject, queue, callback)
        if self.connected:
            self._write_sub(subject, queue, sid)
        return sid

    def unsubscribe(self, sid):
        if self.raw.pop(sid, None) is not None and self.connected:
            self._write(b"UNSUB " + sid + b"\r\n")

    def publish(self, subject, payload, reply=None, headers=None):
        """Publish ``payload`` (bytes) on the raw backbone ``subject``;
        dropped (False) while disconnected."""
        if not self.connected:
            return False
        _check_line(subject, "subject")
        if self.max_payload and len(payload) + (len(headers) if headers else 0) \
                > self.max_payload:
            raise ValueError("{} bytes: over the backbone's max_payload ({})".format(
                len(payload), self.max_payload))
        parts = [subject]
        if reply:
            parts.append(_check_line(reply, "reply subject"))
        if headers:
            parts.append(str(len(headers)))
            parts.append(str(len(headers) + len(payload)))
            line = "HPUB " + " ".join(parts)
            self._write(line.encode("utf-8") + b"\r\n" + headers + payload + b"\r\n")
        else:
            parts.append(str(len(payload)))
            self._write(("PUB " + " ".join(parts)).encode("utf-8") + b"\r\n" + payload
                        + b"\r\n")
        return True

    async def request(self, subject, payload, timeout=2.0, headers=None):
        """Publish with a reply subject and wait for the first reply (a
        ``Msg``); ``TimeoutError``, or ``NoRespondersError`` when NATS says
        nobody listens."""
        if not self.connected:
            raise FastflowError("the cluster link is not connected")
        if len(self._requests) >= MAX_REQUESTS:
            raise FastflowError("too many requests waiting on the cluster link")
        self._next_req += 1
        tok = str(self._next_req)
        fut = self.loop.create_future()
        self._requests[tok] = fut
        try:
            self.publish(subject, payload, self._inbox + tok, headers)
            msg = await asyncio.wait_for(fut, timeout)
        finally:
            self._requests.pop(tok, None)
        if not msg.data and msg.header(":status") == "503":
            raise NoRespondersError("no responders on the backbone for {!r}".format(subject))
        return msg

    def _on_reply(self, msg):
        fut = self._requests.pop(msg.subject[len(self._inbox):], None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def on_connect(self, callback):
        """``callback()`` after every (re)connection, the subscriptions made."""
        self._on_connect.append(callback)

    async def flush(self, timeout=2.0):
        """Wait until the backbone server has read what was written (PING/PONG)."""
        if not self.connected:
            raise FastflowError("the cluster link is not connected")
        fut = self.loop.create_future()
        self._pings.append(fut)
        self.out.write(b"PING\r\n")
        await asyncio.wait_for(fut, timeout)

    # -- the connection ----------------------------------------------------------------

    async def start(self, wait=None):
        """Connect in the background (and again after a loss); with
        ``wait`` seconds, wait that long for the first connection."""
        self.loop = asyncio.get_running_loop()
        self._ready = self.loop.create_future()
        self._inbox = "_INBOX." + self.node + "."
        self.subscribe(self._inbox + "*", self._on_reply)
        self.subscribe(GOSSIP + "*", self._on_gossip)
        self._task = self.loop.create_task(self._run())
        self._timer = self.loop.call_later(self.interest_interval, self._tick)
        if wait:
            try:
                await asyncio.wait_for(asyncio.shield(self._ready), wait)
            except asyncio.TimeoutError:
                log.warning("cluster: no NATS server of %s answered within %.1f s; "
                            "connecting in the background", self.urls(), wait)

    def urls(self):
        return ",".join("nats://{}:{}".format(h, p) for h, p, _, _ in self.servers)

    async def _run(self):
        delay = self.reconnect_wait
        order = list(self.servers)
        random.shuffle(order)
        i = 0
        while not self.closed:
            host, port, user, password = order[i % len(order)]
            i += 1
            lost = None
            try:
                lost = await self._connect(host, port, user, password)
                delay = self.reconnect_wait
                await lost
            except (OSError, asyncio.TimeoutError, FastflowError) as exc:
                self.last_error = "{}:{}: {}".format(host, port, exc)
                if i % len(order) == 0:
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, self.reconnect_wait_max)
                continue
            except asyncio.CancelledError:
                return

    async def _connect(self, host, port, user, password):
        loop = self.loop
        self.parser = NatsParser(None, self.out, 64 << 20, 1 << 16, client=True,
                                 routes=self.routes)
        self.out.clear()
        self._cstate = loop.create_future()
        transport, proto = await asyncio.wait_for(
            loop.create_connection(lambda: _Protocol(self), host, port), self.connect_timeout)
        self.proto = proto
        try:
            await asyncio.wait_for(asyncio.shield(self._cstate), self.connect_timeout)
        except BaseException:
            transport.abort()
            raise
        lost = self._cstate = loop.create_future()
        self.server = "{}:{}".format(host, port)
        self.n_connects += 1
        if self.n_connects > 1:
            self.reconnects += 1
        self._pongs_missed = 0
        # every subscription again, then this node's interest to the others
        for a in self.accounts.values():
            for key, sid in a.sids.items():
                subject, queue, _ = a.backbone_sub(key)
                self._write_sub(subject, queue, sid)
        for sid, (subject, queue, _) in self.raw.items():
            self._write_sub(subject, queue, sid)
        self.connected = True
        log.info("cluster: node %s on the backbone through %s", self.node, self.server)
        self._gossip_full()
        self.publish(GOSSIP + "sync", b'{"node":"*"}')
        for cb in list(self._on_connect):
            try:
                cb()
            except Exception:   # noqa: BLE001 - a service's problem is logged, not ours
                log.exception("cluster: an on_connect callback failed")
        if not self._ready.done():
            self._ready.set_result(None)
        return lost

    def _handshake(self, info, proto):
        """The server's INFO: CONNECT and a PING (its PONG completes it)."""
        try:
            self.server_info = json.loads(info)
        except ValueError:
            self.server_info = {}
        mp = self.server_info.get("max_payload") if isinstance(self.server_info, dict) else None
        self.max_payload = mp if isinstance(mp, int) and mp > 0 else 1 << 20
        for a in self.accounts.values():
            self._limits(a.plain)
            for t in a.groups.values():
                self._limits(t)
        # (echo false: this connection's own publishes never come back to it)
        opts = {"verbose": False, "pedantic": False, "echo": False, "headers": True,
                "no_responders": True,
                "lang": "python/fastflow", "version": _version.__version__,
                "protocol": 1, "name": "fastflow " + self.node}
        if self.token:
            opts["auth_token"] = self.token
        if self.user or self.password:
            opts["user"] = self.user
            opts["pass"] = self.password
        proto.transport.write(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")

    def _data(self, proto, data):
        if proto is not self.proto:
            return
        self.in_bytes += len(data)
        while True:
            try:
                entries = self.parser.feed(data)
            except FastflowError as exc:
                log.error("cluster: protocol error from %s: %s", self.server, exc)
                self.last_error = str(exc)
                proto.transport.abort()
                return
            if not entries:
                break
            self._entries(proto, entries)
            if proto is not self.proto or not self.parser.buffered:
                break
            data = b""                  # (the parser stopped there: the MSGs after it)
        self._kick()

    def _entries(self, proto, entries):
        for e in entries:
            kind = e[0]
            if kind == "msg":
                _, subject, sid, reply, headers, payload = e
                sidb = sid.encode()
                r = self.raw.get(sidb)
                if r is not None:
                    self.in_msgs += 1
                    try:
                        r[2](Msg(subject, reply, headers, payload))
                    except Exception:   # noqa: BLE001
                        log.exception("cluster: a subscriber of %s failed", subject)
                    continue
                route = self.routes.get(sidb)
                if route is not None:
                    # (the parser routes a node's MSGs itself; nodes send no HMSG)
                    route.bad += 1
            elif kind == "bad":             # (counted in its route)
                self._bad_logged += 1
                if self._bad_logged <= 10 or self._bad_logged % 10000 == 0:
                    log.warning("cluster: an event from the backbone refused (%d so far): %s",
                                self._bad_logged, e[1])
            elif kind == "ping":
                self.out.write(b"PONG\r\n")
            elif kind == "pong":
                self._pongs_missed = 0
                if self._cstate is not None and not self._cstate.done() and not self.connected:
                    self._cstate.set_result(None)
                elif self._pings:
                    f = self._pings.pop(0)
                    if f is not None and not f.done():
                        f.set_result(None)
            elif kind == "info":
                if not self.connected and self._cstate is not None and not self._cstate.done():
                    self._handshake(e[1], proto)
            elif kind == "-err":
                self.last_error = e[1]
                log.error("cluster: %s says -ERR %s", self.server, e[1])
                if not self.connected and self._cstate is not None and not self._cstate.done():
                    self._cstate.set_exception(FastflowError("-ERR " + e[1]))

    def _lost(self, proto, exc):
        if proto is not self.proto:
            return
        was = self.connected
        self.connected = False
        self.proto = None
        self.out.clear()
        if was and not self.closed:
            log.warning("cluster: lost %s%s", self.server,
                        ": {}".format(exc) if exc else "")
        # what the other nodes wanted may change while this one is away: it
        # is all learnt again after the reconnection
        self._forget_all()
        for f in self._pings:
            if f is not None and not f.done():
                f.set_exception(FastflowError("the cluster link was lost"))
        self._pings = []
        for f in list(self._requests.values()):
            if not f.done():
                f.set_exception(FastflowError("the cluster link was lost"))
        if self._cstate is not None and not self._cstate.done():
            self._cstate.set_exception(FastflowError("connection lost"))
        self.server = None

    def _kick(self):
        if self._flush_soon is None and self.loop is not None:
            self._flush_soon = self.loop.call_soon(self._flush)

    def _flush(self):
        self._flush_soon = None
        p = self.proto
        if p is None or p.transport is None or not len(self.out) or self.out.behind:
            return                      # (paused: it waits here, within max_pending)
        p.transport.write(self.out.take())
        if self.out.overflow:
            # the backbone could not take it all: what did not fit was
            # dropped (counted in ``dropped``); the link goes on
            self.out.overflow = False
            log.warning("cluster: the backbone's output passed %d bytes: %d messages dropped "
                        "so far", self.out.max_pending, self.out.dropped)

    async def close(self):
        """Leave the backbone (the other nodes forget this one at once)."""
        if self.closed:
            return
        if self.connected:
            self._version += 1
            self._publish_gossip({"node": self.node, "v": self._version, "full": True,
                                  "add": [], "bye": True})
            self._flush()
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()
        for a in list(self.accounts):
            self.detach(a)

    # -- monitoring --------------------------------------------------------------------

    def stats(self):
        out_msgs = out_bytes = 0
        remote = local = 0
        bad = self.bad_in + self.in_closed[1]
        in_routed = self.in_closed[0]
        too_large = 0
        for a in self.accounts.values():
            m, b, big = a.forwarded()
            out_msgs += m
            out_bytes += b
            too_large += big
            remote += len(a.fwd)
            local += len(a.local)
        for r in self.routes.values():
            in_routed += r.msgs
            bad += r.bad
        return {
            "node": self.node,
            "urls": ["nats://{}:{}".format(h, p) for h, p, _, _ in self.servers],
            "connected": self.connected,
            "server": self.server,
            "server_id": self.server_info.get("server_id") if self.connected else None,
            "server_name": self.server_info.get("server_name") if self.connected else None,
            "connects": self.n_connects,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "nodes": len(self.nodes),
            "peers": sorted(self.nodes),
            "out_msgs": out_msgs,
            "out_bytes": out_bytes,
            "in_msgs": in_routed,
            "in_bytes": self.in_bytes,
            "in_refused": bad,
            "remote_interest": remote,
            "local_interest": local,
            "pending_bytes": len(self.out),
            "dropped": self.out.dropped,
            "too_large": too_large,
            "too_long": self.too_long,
            "gossip_in": self.gossip_in,
            "gossip_out": self.gossip_out,
        }

