"""Hypothesis: accounts, exports and imports (fastflow/accounts,
docs/accounts.md) against a small pure-Python model written here (it uses
neither fastflow's matcher nor its pattern checks).

Random configurations (2-4 accounts; stream and service exports, public or
restricted to some accounts; imports, mostly valid ones derived from the
exports, with or without a prefix, some invalid), random subscriptions in
random accounts, random publishes (some with a reply subject, answered by
responders), then who received what is compared with the model:

* the engine (``check_accounts`` + ``Accounts(...).wire()`` on ``Flow``s,
  no network): in-process subscriptions (``Flow.subscribe``), network
  targets (``NativeTarget``, which see reply subjects) and streams;
* one server (``fastflow.server.Server``) with users with random publish
  and subscribe permissions, and native, NATS and HTTP clients.

The model's semantics:

* every account has its own subjects; a publish in an account reaches the
  subscriptions and streams of that account whose pattern matches it;
* a stream import of account I from account E (pattern ``pat``, prefix
  ``pre``): whatever E gets on a subject ``s`` matching ``pat`` is
  republished in I on ``pre.s`` (``s`` without a prefix), without its reply
  subject;
* a service import of I from E: whatever I gets on ``pre.s`` (``s`` matching
  ``pat``) is republished in E on ``s``, its reply subject replaced by a new
  ``_R_.<tag of the import>.<token>``; what E then gets on that subject goes
  back into I on the original reply subject (``single``: only the first
  time; ``stream``: every time);
* a republished event is an ordinary event of the importer (its own
  subscriptions, streams and imports see it, so chains work), but at most 8
  imports nest: the 9th is not made (cycles end);
* responders answer every request they get twice (``re1:<data>`` then
  ``re2:<data>``), after the publish;
* (servers) a user's publish, subscribe and answer are refused when its
  permissions deny them: nothing is delivered.
"""

import asyncio
import base64
import contextlib
import itertools
import urllib.error
import urllib.request
from collections import Counter
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import fastflow
from fastflow import Flow
from fastflow._impl import Event, FrameParser, NativeTarget, OutBuf
from fastflow.accounts import AccountConfigError, Accounts, check_accounts
from fastflow.server.config import ConfigError, ServerConfig

from helpers import wait_until
from peers import free_port, nats_door_available


WORDS = ("x", "y", "p")                 # the subjects' tokens ("p": also a prefix's)
NAMES = ("$G", "a", "b", "c")
PREFIXES = ("p", "x", "p.q")
MAX_DEPTH = 8                           # nested imports at which an event stops
BUDGET = 3000                           # deliveries the model follows per publish (more: skipped)


# -- the model: patterns -----------------------------------------------------------------------


def _toks(s):
    return tuple(s.split(".")) if isinstance(s, str) else s


def matches(pattern, subject):
    """Whether the pattern matches the subject (tuples of tokens or dotted strings)."""
    p, s = _toks(pattern), _toks(subject)
    if s[0][:1] == "$" and p[0] in ("*", ">"):
        return False
    for i, t in enumerate(p):
        if t == ">":
            return len(s) > i
        if i >= len(s) or (t != "*" and t != s[i]):
            return False
    return len(s) == len(p)


def _witnesses(*patterns):
    """Every subject that can tell the patterns apart: tokens from theirs and
    one fresh token, up to one token longer than the longest."""
    lits = sorted({t for p in patterns for t in p.split(".") if t not in ("*", ">")} | {"~"})
    n = max(len(p.split(".")) for p in patterns) + 1
    for k in range(1, n + 1):
        yield from itertools.product(lits, repeat=k)


@lru_cache(maxsize=None)
def within(inner, outer):
    """Every subject ``inner`` matches is matched by ``outer`` (by enumeration)."""
    return all(matches(outer, s) for s in _witnesses(inner, outer) if matches(inner, s))


@lru_cache(maxsize=None)
def overlap(a, b):
    """Some subject is matched by both patterns (by enumeration)."""
    return any(matches(a, s) and matches(b, s) for s in _witnesses(a, b))


# -- the model: configurations ----------------------------------------------------------------


class Imp:
    """An import, by its place: ``id`` = (importer, index)."""

    def __init__(self, importer, index, d):
        self.id = (importer, index)
        self.importer = importer
        self.kind = "stream" if "stream" in d else "service"
        self.pattern = d[self.kind]
        self.exporter = d["account"]
        self.prefix = d.get("prefix")
        self.single = None              # (service) the export's response: single or not

    @property
    def local(self):
        return self.pattern if self.prefix is None else self.prefix + "." + self.pattern

    @property
    def tag(self):
        return "T:{}:{}".format(*self.id)


def config_problem(table):
    """Why the accounts table is invalid (the model's reading), or None; sets
    nothing."""
    for name, d in table.items():
        for i, imp in enumerate(d.get("imports", [])):
            kind = "stream" if "stream" in imp else "service"
            src = imp["account"]
            if src == name:
                return "{} imports from itself".format(name)
            if src not in table and src not in ("$G", "$SYS"):
                return "{}.imports[{}]: no account {}".format(name, i, src)
            ok = [e for e in table.get(src, {}).get("exports", [])
                  if kind in e and within(imp[kind], e[kind])
                  and ("accounts" not in e or name in e["accounts"])]
            if not ok:
                return "{}.imports[{}]: nothing exported".format(name, i)
    return None


def model_imports(table):
    imps = []
    for name, d in table.items():
        for i, di in enumerate(d.get("imports", [])):
            imp = Imp(name, i, di)
            if imp.kind == "service":
                # the first export that covers it and allows the importer
                e = [e for e in table[imp.exporter]["exports"]
                     if "service" in e and within(imp.pattern, e["service"])
                     and ("accounts" not in e or name in e["accounts"])][0]
                imp.single = e.get("response", "single") == "single"
            imps.append(imp)
    return imps


class TooBig(Exception):
    pass


class Ambiguous(Exception):
    """A single-response permit reached twice within one publish: which
    arrival takes it depends on the router's order of targets."""


class Model:
    """Who receives what.  Subjects are tuples of tokens; the exporter-side
    reply subject of a service import is ``("_R_", imp.tag, "TOK#<n>")``."""

    def __init__(self, table, subs, streams):
        self.imps = model_imports(table)
        self.subs = subs                # [(account, pattern, kind)]; kind "sub", "wire", "resp"
        self.streams = streams          # [(account, name, [patterns])]
        self.permits = {}               # n -> [imp, reply]
        self.n = itertools.count()
        self.got = Counter()            # (sub index, subject, data, reply)
        self.stored = Counter()         # (account, stream name, subject, data)

    def publish(self, acct, subject, data, reply=None, may_answer=None, dedup=False):
        """One publish and its answers: the deliveries (a Counter), or TooBig.
        ``may_answer(sub index, reply)``: may that responder answer there."""
        self.budget = BUDGET
        got, stored, requests = Counter(), Counter(), []
        self.hits = set()
        self._deliver(acct, _toks(subject), data, None if reply is None else _toks(reply), 0,
                      got, stored, requests, set() if dedup else None)
        for i, r, d in requests:
            for a in (b"re1:" + d, b"re2:" + d):
                if may_answer is None or may_answer(i, norm(r)):
                    self.hits = set()
                    self._deliver(self.subs[i][0], r, a, None, 0, got, stored, [], None)
        self.got.update(got)
        self.stored.update(stored)
        return got, stored

    def _deliver(self, acct, subject, data, reply, depth, got, stored, requests, seen):
        self.budget -= 1
        if self.budget < 0:
            raise TooBig()
        for i, (a, pattern, kind) in enumerate(self.subs):
            if a == acct and matches(pattern, subject):
                got[(i, norm(subject), data, norm(reply) if kind != "sub" else None)] += 1
                if kind == "resp" and reply is not None:
                    requests.append((i, reply, data))
        for a, name, patterns in self.streams:
            if a == acct and any(matches(p, subject) for p in patterns):
                if seen is not None:    # a producer's id: stored once per stream
                    if (a, name) in seen:
                        continue
                    seen.add((a, name))
                stored[(a, name, norm(subject), data)] += 1
        for imp in self.imps:
            if imp.kind == "stream" and imp.exporter == acct and matches(imp.pattern, subject):
                if depth < MAX_DEPTH:
                    new = subject if imp.prefix is None else _toks(imp.prefix) + subject
                    self._deliver(imp.importer, new, data, None, depth + 1, got, stored,
                                  requests, seen)
            elif imp.kind == "service" and imp.importer == acct and matches(imp.local,
                                                                           subject):
                if depth < MAX_DEPTH:
                    new = subject if imp.prefix is None else subject[len(_toks(imp.prefix)):]
                    r = None
                    if reply is not None:
                        n = next(self.n)
                        self.permits[n] = [imp, reply]
                        r = ("_R_", imp.tag, "TOK#{}".format(n))
                    self._deliver(imp.exporter, new, data, r, depth + 1, got, stored,
                                  requests, seen)
            if imp.kind == "service" and imp.exporter == acct and len(subject) == 3 \
                    and subject[:2] == ("_R_", imp.tag):
                # the import's way back
                if depth < MAX_DEPTH:
                    n = int(subject[2][4:])
                    p = self.permits.get(n)
                    if imp.single:
                        if n in self.hits:      # (a second arrival of a live permit)
                            raise Ambiguous()
                        if p is not None:
                            self.hits.add(n)
                    if p is not None:
                        if imp.single:
                            del self.permits[n]
                        self._deliver(imp.importer, p[1], data, None, depth + 1, got, stored,
                                      requests, seen)


def norm(subject):
    """A subject as compared: its token of an exporter-side reply as 'TOK'."""
    if subject is None:
        return None
    return ".".join("TOK" if t.startswith("TOK#") else t for t in subject)


def reach(table):
    """Account -> the accounts its events can reach: importers of its
    streams, exporters of the services it imports (and back)."""
    edges = {}
    for name, d in table.items():
        for imp in d.get("imports", []):
            src = imp["account"]
            if "stream" in imp:
                edges.setdefault(src, set()).add(name)
            else:
                edges.setdefault(name, set()).add(src)
                edges.setdefault(src, set()).add(name)
    out = {}
    for a in list(table) + ["$SYS"]:
        seen, todo = {a}, [a]
        while todo:
            for b in edges.get(todo.pop(), ()):
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        out[a] = seen
    return out


# -- strategies --------------------------------------------------------------------------------


@st.composite
def patterns(draw, literal_first=False):
    toks = draw(st.lists(st.sampled_from(WORDS + ("*",)), min_size=1, max_size=3))
    if literal_first and toks[0] == "*":
        toks[0] = draw(st.sampled_from(WORDS))
    if draw(st.integers(0, 2)) == 0:
        if len(toks) > 1 or not literal_first:
            toks[-1] = ">"
    return ".".join(toks)


subjects = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(".".join)


@st.composite
def instance(draw, pattern):
    """A subject the pattern matches."""
    out = []
    for t in pattern.split("."):
        if t == "*":
            t = draw(st.sampled_from(WORDS))
        if t == ">":
            out.extend(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=2)))
            continue
        out.append(t)
    return ".".join(out)


def publishes(table):
    """(account, subject, reply or None): mostly subjects that an import or an
    export takes."""
    names = list(table)
    aim = []
    for n, d in table.items():
        for i in d["imports"]:
            if "stream" in i:
                aim.append((i["account"], i["stream"]))
            else:
                aim.append((n, i["service"] if "prefix" not in i
                            else i["prefix"] + "." + i["service"]))
    anywhere = st.tuples(st.sampled_from(names), subjects)
    if aim:
        anywhere = st.one_of(anywhere, *[st.sampled_from(aim).flatmap(
            lambda ap: st.tuples(st.just(ap[0]), instance(ap[1])))] * 3)
    return st.tuples(anywhere, st.one_of(st.none(), subjects)).map(
        lambda t: (t[0][0], t[0][1], t[1]))


sub_patterns = st.one_of(st.just(">"), st.sampled_from(("p.>", "x.>", "*.*", "p.q.>")),
                         patterns())


@st.composite
def narrower(draw, pattern):
    """A pattern within ``pattern``: some wildcards made literal, a '>' made longer."""
    out = []
    for t in pattern.split("."):
        if t == "*" and draw(st.booleans()):
            t = draw(st.sampled_from(WORDS))
        if t == ">":
            tail = draw(st.lists(st.sampled_from(WORDS + ("*",)), min_size=0, max_size=2))
            if not tail or draw(st.booleans()):
                tail.append(">")
            out.extend(tail)
            continue
        out.append(t)
    return ".".join(out)


@st.composite
def accounts_tables(draw):
    names = draw(st.lists(st.sampled_from(NAMES), min_size=2, max_size=4, unique=True))
    table = {n: {"exports": [], "imports": []} for n in names}
    for n in names:
        for _ in range(draw(st.integers(0 if n == "$G" else 1, 3))):
            kind = draw(st.sampled_from(("stream", "service")))
            # (mostly a literal first token: few exporter-side reply subjects match)
            e = {kind: draw(patterns(literal_first=draw(st.integers(0, 4)) > 0))}
            if draw(st.integers(0, 3)) == 0:
                e["accounts"] = draw(st.lists(st.sampled_from(names + ["zz"]), min_size=1,
                                              max_size=3, unique=True))
            if kind == "service" and draw(st.booleans()):
                e["response"] = draw(st.sampled_from(("single", "stream")))
            table[n]["exports"].append(e)
    if draw(st.integers(0, 3)) == 0:
        # a ring: each imports the next one's everything (events go round
        # until the depth limit)
        ring = names[:draw(st.integers(2, len(names)))]
        for n, m in zip(ring, ring[1:] + ring[:1]):
            table[m]["exports"].append({"stream": draw(st.sampled_from((">", "x.>")))})
            imp = {"stream": table[m]["exports"][-1]["stream"], "account": m}
            if draw(st.booleans()):
                imp["prefix"] = "x"
            if imp not in table[n]["imports"]:
                table[n]["imports"].append(imp)
    # (one configuration in 5 has an import that may be invalid)
    wild = draw(st.integers(0, 4)) == 0
    for n in names:
        for _ in range(draw(st.integers(1, 3))):
            offers = [(m, e) for m in names if m != n for e in table[m]["exports"]
                      if n in e.get("accounts", [n])]
            if wild and draw(st.booleans()):
                wild = False
                kind = draw(st.sampled_from(("stream", "service")))
                imp = {kind: draw(patterns()),
                       "account": draw(st.sampled_from(names + ["zz"]))}
            elif offers:
                m, e = draw(st.sampled_from(offers))
                kind = "stream" if "stream" in e else "service"
                imp = {kind: draw(narrower(e[kind])), "account": m}
            else:
                continue
            prefix = draw(st.sampled_from((None,) + PREFIXES))
            if prefix is not None:
                imp["prefix"] = prefix
            if imp not in table[n]["imports"]:  # (the same import twice is wired once)
                table[n]["imports"].append(imp)
    return table


# -- the engine --------------------------------------------------------------------------------


def wired_tags(accts, table):
    """The exporter-side reply tags of the service imports, as the model names them."""
    tags = {}
    for acct in accts:
        for imp, _t, _h, permits in acct.wired:
            if permits is not None:
                i = acct.imports.index(imp)
                tags[permits.tag] = "T:{}:{}".format(acct.name, i)
    return tags


def normalize(subject, tags):
    out, prev_tag = [], False
    for t in subject.split("."):
        if prev_tag:
            out.append("TOK")
            prev_tag = False
        elif t in tags:
            out.append(tags[t])
            prev_tag = True
        else:
            out.append(t)
    return ".".join(out)


def _msgs(ob):
    p = FrameParser(max_payload=1 << 30, max_control=1 << 30)
    p.batch_msgs = True
    out = []
    for it in p.feed(ob.take()):
        assert it[0] == "msgs", it
        mb = it[1]
        for i in range(len(mb)):
            out.append((mb.subjects[i], mb.replies[i], mb.event(i).data))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_engine_routes_as_the_model_says(data):
    draw = data.draw
    table = draw(accounts_tables(), "accounts")
    problem = config_problem(table)
    if problem is not None:
        event("invalid config")
        with pytest.raises(AccountConfigError):
            check_accounts(table, "$SYS")
        with pytest.raises(ConfigError):
            ServerConfig(accounts=table)
        return
    ServerConfig(accounts=table)
    names = list(table)
    event("imports: {}".format(min(sum(len(d["imports"]) for d in table.values()), 4)))
    importers = [n for n in names if table[n]["imports"]] or names
    where = st.one_of(st.sampled_from(names + ["$SYS"]), st.sampled_from(importers))
    subs = draw(st.lists(st.tuples(where, sub_patterns,
                                   st.sampled_from(("sub", "wire", "resp"))),
                         min_size=1, max_size=8), "subscriptions")
    exporters = [i["account"] for d in table.values() for i in d["imports"] if "service" in i]
    if exporters:
        subs += draw(st.lists(st.tuples(st.sampled_from(exporters), st.just(">"),
                                        st.just("resp")), max_size=2), "responders")
    streams = draw(st.lists(st.tuples(st.sampled_from(names),
                                      st.lists(patterns(), min_size=1, max_size=2)),
                            max_size=2), "streams")
    streams = [(a, "S{}".format(i), p) for i, (a, p) in enumerate(streams)]
    pubs = draw(st.lists(publishes(table), min_size=1, max_size=8), "publishes")

    model = Model(table, subs, streams)
    todo = []
    for n, (acct, subject, reply) in enumerate(pubs):
        payload = "{}:{}".format(acct, n).encode()
        try:
            model.publish(acct, subject, payload, reply)
        except TooBig:
            event("a publish skipped (too many deliveries)")
            continue
        except Ambiguous:
            event("ambiguous permit")
            assume(False)
        todo.append((acct, subject, reply, payload))

    specs = check_accounts(table, "$SYS")
    default = Flow()
    accts = Accounts(specs, default, lambda name: Flow(name="fastflow/" + name), "$SYS")
    try:
        for acct, name, pats in streams:
            accts[acct].flow.add_stream(name, pats)
        accts.wire()
        tags = wired_tags(accts, table)
        got = Counter()
        wires = []
        for i, (acct, pattern, kind) in enumerate(subs):
            flow = accts[acct].flow
            if kind == "sub":
                flow.subscribe(pattern, lambda ev, i=i: got.update(
                    [(i, normalize(ev.routing_subject, tags), ev.data, None)]))
            else:
                t = NativeTarget(OutBuf(0), i + 1)
                flow.add(pattern, t)
                wires.append((i, t))

        def drain():
            requests = []
            for i, t in wires:
                for subject, reply, d in _msgs(t.outbuf):
                    got[(i, normalize(subject, tags),
                         d, None if reply is None else normalize(reply, tags))] += 1
                    if reply is not None and subs[i][2] == "resp":
                        requests.append((subs[i][0], reply, d))
            return requests

        for acct, subject, reply, payload in todo:
            flow = accts[acct].flow
            if reply is None:
                flow.publish(subject, payload)
            else:
                flow.publish_record(subject, Event(subject, payload).encode(), reply=reply)
            for a, r, d in drain():
                accts[a].flow.publish(r, b"re1:" + d)
                accts[a].flow.publish(r, b"re2:" + d)
            assert drain() == []
        stored = Counter()
        for acct, name, _p in streams:
            for ev in accts[acct].flow.stream(name).replay("first"):
                stored[(acct, name, normalize(ev.routing_subject, tags), ev.data)] += 1
    finally:
        accts.close()
        default.close()

    crossed = [k for k in got if k[2].split(b":")[-2].decode() != subs[k[0]][0]]
    event("deliveries across accounts: {}".format(min(len(crossed), 5)))
    event("answers across accounts: {}".format(
        min(sum(1 for k in crossed if k[2].startswith(b"re")), 3)))
    event("deep: {}".format(any(k[1].count(".") > 6 for k in got)))
    event("exporter-side replies seen: {}".format(any("_R_" in k[1] + str(k[3]) for k in got)))
    assert _diff(got, model.got) == ([], [])
    assert _diff(stored, model.stored) == ([], [])
    # nothing reaches an account that is not (transitively) joined to the publisher's
    can = reach(table)
    for (i, _s, d, _r) in got:
        origin = d.split(b":")[-2].decode()
        assert subs[i][0] in can[origin], (subs[i], d)


def _diff(got, want):
    """(what only the engine had, what only the model had), sorted."""
    return (sorted((got - want).items(), key=repr), sorted((want - got).items(), key=repr))


# -- the doors of a server ---------------------------------------------------------------------


def can_publish(perms, subject):
    if perms is None:
        return True
    pub = perms.get("publish", {})
    if "allow" in pub and not any(matches(p, subject) for p in pub["allow"]):
        return False
    return not any(matches(p, subject) for p in pub.get("deny", []))


def can_subscribe(perms, pattern):
    if perms is None:
        return True
    sub = perms.get("subscribe", {})
    if "allow" in sub and not any(within(pattern, p) for p in sub["allow"]):
        return False
    return not any(overlap(pattern, p) for p in sub.get("deny", []))


@st.composite
def permissions(draw):
    if draw(st.integers(0, 2)) == 0:
        return None
    perms = {}
    for what in ("publish", "subscribe"):
        k = draw(st.sampled_from((None, "allow", "deny")))
        if k is not None:
            perms[what] = {k: draw(st.lists(sub_patterns, min_size=1, max_size=2))}
    return perms


def _post(port, user, password, subject, data, n):
    req = urllib.request.Request(
        "http://127.0.0.1:{}/events/{}".format(port, subject), data=data, method="POST",
        headers={"ce-id": "h{}".format(n), "ce-source": "/model", "ce-type": "t",
                 "ce-specversion": "1.0", "Authorization": "Basic " + base64.b64encode(
                     "{}:{}".format(user, password).encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


DOORS = ("native", "nats", "http")


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_doors_route_as_the_model_says(data):
    draw = data.draw
    table = draw(accounts_tables().filter(lambda t: config_problem(t) is None), "accounts")
    names = list(table)
    nats_ok = nats_door_available() is None and fastflow.COMPILED
    doors = DOORS if nats_ok else ("native", "http")
    perms = {n: draw(permissions(), "permissions of " + n) for n in names}
    users = {n: "u{}".format(i) for i, n in enumerate(names)}
    importers = [n for n in names if table[n]["imports"]] or names
    where = st.one_of(st.sampled_from(names), st.sampled_from(importers))
    sub_doors = tuple(d for d in doors if d != "http")
    subs = draw(st.lists(st.tuples(where, sub_patterns, st.sampled_from(("wire", "resp")),
                                   st.sampled_from(sub_doors)),
                         min_size=1, max_size=6), "subscriptions")
    streams = draw(st.lists(st.tuples(st.sampled_from(names), st.lists(sub_patterns,
                                                                        min_size=1, max_size=2)),
                            max_size=2), "streams")
    streams = [(a, "S{}".format(i), p) for i, (a, p) in enumerate(streams)]
    pubs = draw(st.lists(st.tuples(publishes(table), st.sampled_from(doors)),
                         min_size=1, max_size=6), "publishes")

    allowed = [can_subscribe(perms[a], p) for a, p, _k, _d in subs]
    model = Model(table, [(a, p, k) if ok else (a, "none.such.~", k)
                          for (a, p, k, _d), ok in zip(subs, allowed)], streams)
    todo, denied = [], Counter()
    for n, ((acct, subject, reply), door) in enumerate(pubs):
        if door == "http":
            reply = None
        payload = "{}:{}".format(acct, n).encode()
        if not can_publish(perms[acct], subject):
            denied[door] += 1
            todo.append((acct, subject, reply, payload, door, False))
            continue
        try:
            model.publish(acct, subject, payload, reply, dedup=door == "http",
                          may_answer=lambda i, r: can_publish(perms[subs[i][0]], r))
        except (TooBig, Ambiguous):
            continue
        todo.append((acct, subject, reply, payload, door, True))
    event("denied subscriptions: {}".format(allowed.count(False)))
    event("denied publishes: {}".format(sum(denied.values())))

    async def run():
        from fastflow.client import PermissionDeniedError, connect
        from fastflow.server import Server

        http = free_port()
        settings_ = dict(port=0, monitor_port=0, http_port=http, drain_timeout=2.0,
                         accounts=table,
                         users=[{"user": users[n], "password": "pw", "account": n,
                                 **({"permissions": perms[n]} if perms[n] else {})}
                                for n in names]
                         + [{"user": "admin" + users[n], "password": "pw", "account": n}
                            for n in names])
        if nats_ok:
            settings_["nats_port"] = free_port()
        srv = Server(ServerConfig(**settings_))
        await srv.start()
        url = "fastflow://127.0.0.1:{}".format(srv.port)
        got = Counter()
        errors = {n: [] for n in names}
        closers = []
        try:
            tags = wired_tags(srv.accounts, table)
            native, nats_conns = {}, {}
            for n in names:
                c = native[n] = await connect(url, user=users[n], password="pw",
                                              error_callback=errors[n].append)
                closers.append(c.close)
                admin = await connect(url, user="admin" + users[n], password="pw")
                closers.append(admin.close)
                native["admin" + n] = admin
                if nats_ok:
                    import nats

                    nc = nats_conns[n] = await nats.connect(
                        "nats://127.0.0.1:{}".format(settings_["nats_port"]), user=users[n],
                        password="pw", allow_reconnect=False, error_cb=_ignore)
                    closers.append(nc.close)
            for acct, name, pats in streams:
                await native["admin" + acct].add_stream(name, pats)

            def seen(i, subject, reply, d):
                got[(i, normalize(subject, tags), d,
                     normalize(reply, tags) if reply else None)] += 1

            for i, (acct, pattern, kind, door) in enumerate(subs):
                if door == "native":
                    c = native[acct]

                    def cb(ev, reply, i=i, c=c, kind=kind):
                        seen(i, ev.routing_subject, reply, ev.data)
                        if kind == "resp" and reply:
                            c.publish(reply, b"re1:" + ev.data)
                            c.publish(reply, b"re2:" + ev.data)

                    c.subscribe(pattern, cb, with_reply=True)
                else:
                    nc = nats_conns[acct]

                    async def ncb(msg, i=i, nc=nc, kind=kind):
                        seen(i, msg.subject, msg.reply, msg.data)
                        if kind == "resp" and msg.reply:
                            await nc.publish(msg.reply, b"re1:" + msg.data)
                            await nc.publish(msg.reply, b"re2:" + msg.data)

                    await nc.subscribe(pattern, cb=ncb)
            for c in native.values():
                await c.flush()
            for nc in nats_conns.values():
                await nc.flush()
            for n, (acct, subject, reply, payload, door, ok) in enumerate(todo):
                if door == "native":
                    native[acct].publish(subject, payload, reply=reply)
                elif door == "nats":
                    await nats_conns[acct].publish(subject, payload, reply=reply or "")
                else:
                    status = await asyncio.to_thread(_post, http, users[acct], "pw", subject,
                                                     payload, n)
                    assert status == (202 if ok else 403) or (ok and status in (200, 204)), \
                        status
            want = sum(model.got.values())
            await wait_until(lambda: sum(got.values()) >= want, 10, "the deliveries")
            await asyncio.sleep(0.1)
            for c in native.values():
                await c.flush()
            await asyncio.sleep(0.05)
            stored = Counter()
            for acct, name, _p in streams:
                async for ev in native["admin" + acct].replay(name, "first"):
                    stored[(acct, name, normalize(ev.routing_subject, tags), ev.data)] += 1
        finally:
            for close in closers:
                with contextlib.suppress(Exception):
                    await close()
            await asyncio.wait_for(srv.stop(), 20)
        denials = {n: sum(isinstance(e, PermissionDeniedError) for e in errors[n])
                   for n in names}
        return got, stored, denials

    got, stored, denials = asyncio.run(run())
    assert _diff(got, model.got) == ([], [])
    assert _diff(stored, model.stored) == ([], [])
    # the native clients heard of their refused subscriptions and publishes
    for n in names:
        if perms[n] is None:
            assert denials[n] == 0
    for (acct, _p, _k, door), ok in zip(subs, allowed):
        if not ok and door == "native":
            assert denials[acct] > 0


async def _ignore(exc):
    pass
