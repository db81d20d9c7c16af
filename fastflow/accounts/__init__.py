"""Accounts: the tenants of one server, and the exports and imports that
join them (docs/accounts.md).

Every account has a subject space of its own: its own ``Flow`` (its
matcher, its streams and consumers, its retained messages and sessions),
so two accounts can use the same subject names without seeing each
other, and nothing of one reaches another except through an import of an
export:

- a **stream export** (``orders.>``) lets other accounts (all, or the
  ones it names) subscribe to those subjects; an account imports it,
  optionally under a local prefix (``partner.acme.orders.>``): an
  ``ImportTarget`` in the exporter's router republishes each matched
  record into the importer's router, its subject rewritten once, the
  record itself unchanged (reply subjects do not cross);
- a **service export** (``quotes.>``) lets other accounts send requests:
  the import's ``ImportTarget`` in the importer's router republishes a
  request into the exporter with its reply subject replaced by a
  one-time ``_R_.<import>.<token>`` subject; a publish on that subject in
  the exporter goes back to the requester's reply subject while the
  permit lasts (one response, or any number within the threshold:
  ``response = "single" | "stream"``).

A server without accounts has one, ``$G``, that is also the system
account.  With accounts, users and tokens name theirs (``$G`` if they do
not) and a system account (``$SYS`` by default) receives the advisories
of every account, on ``$SYS.account.<name>.advisory.<kind>``.
"""

import os
import re
import secrets
import time

from fastflow._impl import validate_pattern
from fastflow.errors import SubjectError

__all__ = ("DEFAULT_ACCOUNT", "SYSTEM_ACCOUNT", "Account", "Accounts", "AccountConfigError",
           "Export", "Import", "check_accounts", "pattern_within")

DEFAULT_ACCOUNT = "$G"                  # the account of users that name none (nats-server's)
SYSTEM_ACCOUNT = "$SYS"                 # the system account's default name
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_RESERVED = (DEFAULT_ACCOUNT, SYSTEM_ACCOUNT)
REPLY_PREFIX = "_R_"                    # the exporter-side reply subjects of service imports
RESPONSE_THRESHOLD = 120.0              # seconds a service response may take (nats-server's)
PERMITS_MAX = 65536                     # outstanding requests per service import; the oldest
                                        # permit goes at the limit


class AccountConfigError(ValueError):
    """An accounts configuration that cannot be served (a ConfigError is
    made of it by the server's config)."""


def account_name(name, where):
    if not isinstance(name, str) or not (_NAME.match(name) or name in _RESERVED):
        raise AccountConfigError("{}: an account name is 1-64 letters, digits, '_' or '-' "
                                 "(or $G, $SYS), got {!r}".format(where, name))
    return name


def _tokens(p):
    return p.split(".")


def pattern_within(inner, outer):
    """Whether every subject that pattern ``inner`` matches is matched by
    pattern ``outer`` (both valid patterns)."""
    a, b = _tokens(inner), _tokens(outer)
    for i, t in enumerate(b):
        if i == 0 and t in ("*", ">") and a[0][:1] == "$":
            return False                # (a wildcard first token never matches '$...')
        if t == ">":
            return len(a) > i
        if i >= len(a):
            return False
        s = a[i]
        if s == ">":
            return False                # inner goes on where outer stops
        if t != "*" and s != t:
            return False
    return len(a) == len(b)


def _pattern(v, where):
    if not isinstance(v, str):
        raise AccountConfigError("{}: expected a subject pattern, got {!r}".format(where, v))
    try:
        validate_pattern(v)
    except SubjectError as exc:
        raise AccountConfigError("{}: {}".format(where, exc)) from None
    return v


def _check_keys(d, allowed, where):
    if not isinstance(d, dict):
        raise AccountConfigError("{}: expected a table, got {!r}".format(where, d))
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise AccountConfigError("{}: unknown key{} {} (known: {})".format(
            where, "s" if len(unknown) > 1 else "", ", ".join(map(repr, unknown)),
            ", ".join(sorted(allowed))))


def _kind(d, where, what):
    kinds = [k for k in ("stream", "service", "share") if k in d]
    if len(kinds) != 1:
        raise AccountConfigError("{}: {} names one 'stream' or one 'service' subject pattern, "
                                 "or one 'share' (a stream's name)".format(where, what))
    return kinds[0]


def _share_name(v, where):
    if not isinstance(v, str) or not v or len(v) > 256 or any(c.isspace() or c in "./*>"
                                                              for c in v):
        raise AccountConfigError("{}: a stream name (no '.', '/', '*', '>' or white space), "
                                 "got {!r}".format(where, v))
    return v


class Export:
    """What an account offers: a ``stream`` (subjects to subscribe to) or
    a ``service`` (subjects to send requests to), to every account
    (``accounts`` None) or to the ones named."""

    __slots__ = ("kind", "subject", "accounts", "response", "threshold")

    def __init__(self, kind, subject, accounts=None, response="single",
                 threshold=RESPONSE_THRESHOLD):
        self.kind = kind
        self.subject = subject
        self.accounts = None if accounts is None else frozenset(accounts)
        self.response = response
        self.threshold = threshold

    @classmethod
    def from_dict(cls, d, where):
        _check_keys(d, ("stream", "service", "share", "accounts", "response",
                        "response_threshold"), where)
        kind = _kind(d, where, "an export")
        subject = _share_name(d[kind], where) if kind == "share" else \
            _pattern(d[kind], "{}.{}".format(where, kind))
        accounts = d.get("accounts")
        if accounts is not None:
            if not isinstance(accounts, list) or not accounts:
                raise AccountConfigError("{}.accounts: expected a non-empty list of account "
                                         "names".format(where))
            accounts = [account_name(a, "{}.accounts".format(where)) for a in accounts]
        response = d.get("response", "single")
        if kind != "service" and ("response" in d or "response_threshold" in d):
            raise AccountConfigError("{}: 'response' and 'response_threshold' are for service "
                                     "exports".format(where))
        if response not in ("single", "stream"):
            raise AccountConfigError("{}.response: 'single' or 'stream', got {!r}".format(
                where, response))
        threshold = d.get("response_threshold", RESPONSE_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
                or not 0 < threshold <= 86400:
            raise AccountConfigError("{}.response_threshold: seconds in (0, 86400], got {!r}"
                                     .format(where, threshold))
        return cls(kind, subject, accounts, response, float(threshold))

    def allows(self, account):
        return self.accounts is None or account in self.accounts

    def to_dict(self):
        d = {self.kind: self.subject}
        if self.accounts is not None:
            d["accounts"] = sorted(self.accounts)
        if self.kind == "service":
            d["response"] = self.response
            d["response_threshold"] = self.threshold
        return d


class Import:
    """What an account takes from another: its ``kind`` (stream or
    service), the exporter's ``account`` and ``subject`` pattern, and the
    local ``prefix`` it appears under (None: the same subjects)."""

    __slots__ = ("kind", "account", "subject", "prefix", "export", "name")

    def __init__(self, kind, account, subject, prefix=None, name=None):
        self.kind = kind
        self.account = account
        self.subject = subject          # (a share: the exporter's stream name)
        self.prefix = prefix
        self.name = name if name is not None else subject   # a share's local name
        self.export = None              # the Export it takes (set by check_accounts)

    @property
    def local(self):
        """The pattern of the imported subjects in the importing account
        (a share: the stream's local name)."""
        if self.kind == "share":
            return self.name
        return self.subject if self.prefix is None else self.prefix + "." + self.subject

    @classmethod
    def from_dict(cls, d, where):
        _check_keys(d, ("stream", "service", "share", "account", "prefix", "as"), where)
        kind = _kind(d, where, "an import")
        if kind == "share":
            if "prefix" in d:
                raise AccountConfigError("{}: a shared stream takes 'as' (its local name), "
                                         "not 'prefix'".format(where))
            subject = _share_name(d["share"], where)
            name = _share_name(d["as"], where) if "as" in d else subject
        else:
            if "as" in d:
                raise AccountConfigError("{}: 'as' names a shared stream ('share')".format(
                    where))
            subject = _pattern(d[kind], "{}.{}".format(where, kind))
            name = None
        if "account" not in d:
            raise AccountConfigError("{}: 'account' (the exporting account) is missing"
                                     .format(where))
        account = account_name(d["account"], "{}.account".format(where))
        prefix = d.get("prefix")
        if prefix is not None:
            if not isinstance(prefix, str) or not prefix:
                raise AccountConfigError("{}.prefix: expected subject tokens such as "
                                         "'partner.acme', got {!r}".format(where, prefix))
            try:
                validate_pattern(prefix)
            except SubjectError as exc:
                raise AccountConfigError("{}.prefix: {}".format(where, exc)) from None
            if any(t in ("*", ">") for t in prefix.split(".")):
                raise AccountConfigError("{}.prefix: no wildcards in a prefix, got {!r}".format(
                    where, prefix))
        return cls(kind, account, subject, prefix, name)

    def to_dict(self):
        d = {self.kind: self.subject, "account": self.account}
        if self.prefix is not None:
            d["prefix"] = self.prefix
        if self.kind == "share" and self.name != self.subject:
            d["as"] = self.name
        return d


class AccountSpec:
    """One account's configuration: exports, imports, streams, limits
    (a table the server's quotas read)."""

    __slots__ = ("name", "exports", "imports", "streams", "limits")

    def __init__(self, name, exports=(), imports=(), streams=(), limits=None):
        self.name = name
        self.exports = list(exports)
        self.imports = list(imports)
        self.streams = list(streams)
        self.limits = limits


def check_accounts(table, system=None, where="accounts"):
    """The AccountSpecs of the config's ``[accounts.<name>]`` tables (a
    dict), checked as a whole: every import names an account and takes
    what that account exports to it.  Returns ``{name: AccountSpec}`` with
    ``$G`` and the system account added."""
    if not isinstance(table, dict):
        raise AccountConfigError("{}: expected tables [accounts.<name>]".format(where))
    specs = {}
    for name, d in table.items():
        w = "{}.{}".format(where, name)
        account_name(name, w)
        if d is None:
            d = {}
        _check_keys(d, ("exports", "imports", "streams", "limits", "trust"), w)
        exports, imports = [], []
        for key, cls, out in (("exports", Export, exports), ("imports", Import, imports)):
            v = d.get(key, [])
            if not isinstance(v, list):
                raise AccountConfigError("{}.{}: expected an array of tables".format(w, key))
            for i, item in enumerate(v):
                out.append(cls.from_dict(item, "{}.{}[{}]".format(w, key, i)))
        streams = d.get("streams", [])
        if not isinstance(streams, list):
            raise AccountConfigError("{}.streams: expected an array of tables".format(w))
        specs[name] = AccountSpec(name, exports, imports, streams, d.get("limits"))
    specs.setdefault(DEFAULT_ACCOUNT, AccountSpec(DEFAULT_ACCOUNT))
    if system is not None:
        account_name(system, "system_account")
        specs.setdefault(system, AccountSpec(system))
    for spec in specs.values():
        for i, imp in enumerate(spec.imports):
            w = "{}.{}.imports[{}]".format(where, spec.name, i)
            if imp.account == spec.name:
                raise AccountConfigError("{}: an account cannot import from itself".format(w))
            src = specs.get(imp.account)
            if src is None:
                raise AccountConfigError("{}: no account {!r}".format(w, imp.account))
            found = [e for e in src.exports if e.kind == imp.kind and (
                e.subject == imp.subject if imp.kind == "share"
                else pattern_within(imp.subject, e.subject))]
            if not found:
                raise AccountConfigError("{}: account {!r} exports no {} covering {!r}".format(
                    w, imp.account, imp.kind, imp.subject))
            allowed = [e for e in found if e.allows(spec.name)]
            if not allowed:
                raise AccountConfigError("{}: account {!r} exports {} {!r} only to {}".format(
                    w, imp.account, imp.kind, found[0].subject,
                    ", ".join(sorted(found[0].accounts))))
            imp.export = allowed[0]
        names = [i.name for i in spec.imports if i.kind == "share"]
        if len(set(names)) != len(names):
            raise AccountConfigError("{}.{}: two shared streams imported under one name".format(
                where, spec.name))
    return specs


class _Permits:
    """The response permits of one service import: one-time reply
    subjects in the exporter mapped back to the requesters' reply
    subjects, each for the export's response threshold (``single``: one
    response)."""

    __slots__ = ("tag", "prefix", "single", "threshold", "permits", "requests", "responses",
                 "expired", "refused", "max")

    def __init__(self, export, max_permits=PERMITS_MAX):
        self.tag = secrets.token_hex(6)
        self.prefix = "{}.{}.".format(REPLY_PREFIX, self.tag).encode()
        self.single = export.response == "single"
        self.threshold = export.threshold
        self.permits = {}               # token (bytes) -> [reply, deadline]
        self.requests = 0
        self.responses = 0
        self.expired = 0
        self.refused = 0                # responses without a live permit
        self.max = max_permits

    @property
    def pattern(self):
        return self.prefix.decode() + "*"

    def request(self, reply):
        """A request with ``reply`` crosses: its reply subject in the exporter."""
        tok = secrets.token_urlsafe(12).encode()
        permits = self.permits
        if len(permits) >= self.max:
            del permits[next(iter(permits))]
            self.expired += 1
        permits[tok] = [reply, time.monotonic() + self.threshold]
        self.requests += 1
        return self.prefix + tok

    def response(self, subject):
        """A publish on a reply subject in the exporter: the requester's
        reply subject, or None (no live permit)."""
        tok = subject[len(self.prefix):]
        p = self.permits.get(tok)
        if p is None:
            self.refused += 1
            return None
        if time.monotonic() > p[1]:
            del self.permits[tok]
            self.expired += 1
            self.refused += 1
            return None
        if self.single:
            del self.permits[tok]
        self.responses += 1
        return p[0]

    def prune(self, now=None):
        now = time.monotonic() if now is None else now
        dead = [t for t, p in self.permits.items() if p[1] < now]
        for t in dead:
            del self.permits[t]
        self.expired += len(dead)


class Account:
    """One tenant: its ``flow`` and what it exports and imports.  The
    server hangs its per-account services on it (``mqtt_sessions``,
    ``subscriptions``, ``catalog``)."""

    def __init__(self, name, flow, spec, system=False, own_flow=True):
        self.name = name
        self.flow = flow
        self.exports = spec.exports
        self.imports = spec.imports
        self.streams = spec.streams
        self.system = system
        self.own_flow = own_flow
        self.mqtt_sessions = None
        self.subscriptions = None
        self.catalog = None
        self.wired = []                 # (Import, ImportTarget, reply route or None,
                                        # _Permits or None) of its imports
        self.shared = {}                # local name -> (exporting Account, stream name,
                                        # Import): streams shared with it (read-only)
        self.share_reads = {}           # import key -> [events, bytes] read from a share
        self.bridges_in = []            # ImportTargets publishing into its flow
        self.bridges_out = []           # ImportTargets registered in its flow
        self.limits = None              # the server's quotas.Limits
        self.retired_in = [0, 0]        # what imports that were removed had counted
        self.retired_out = [0, 0, 0, 0]
        self.retired_imports = {}
        self.n_replayed = 0             # stored events sent (replays, consumers)
        self.bytes_replayed = 0

    # -- metering ----------------------------------------------------------------------

    def replayed(self, n, nbytes, share=None):
        """``n`` stored events of ``nbytes`` payload bytes were read for a
        replay (the doors' LogReader); ``share``: from that shared stream's
        import (its key)."""
        self.n_replayed += n
        self.bytes_replayed += nbytes
        if share is not None:
            c = self.share_reads.setdefault(share, [0, 0])
            c[0] += n
            c[1] += nbytes

    def shared_stream(self, name):
        """(the exporter's Stream, import key) of the shared stream known
        here as ``name``, or (None, None)."""
        e = self.shared.get(name)
        if e is None:
            return None, None
        src, sname, imp = e
        st = src.flow.streams().get(sname) if not src.flow.closed else None
        return st, import_key(self.name, imp)

    def replayed_events(self, evs):
        """Events a consumer delivered from a stream."""
        if evs:
            self.n_replayed += len(evs)
            self.bytes_replayed += sum(len(e.data) for e in evs if e.data is not None)

    def usage(self):
        """This account's traffic since the engine started, from the core's
        counters: events and payload bytes its clients published (``in``)
        and received (``out``), what crossed from and to other accounts
        (``imported``, ``exported``), stored and replayed."""
        f = self.flow
        bi, bo = self.bridges_in, self.bridges_out
        ri, ro = self.retired_in, self.retired_out
        imp_n = sum(t.forwarded for t in bi) + ri[0]
        imp_b = sum(t.forwarded_bytes for t in bi) + ri[1]
        return {
            "in_msgs": f.n_published - imp_n, "in_bytes": f.bytes_published - imp_b,
            "out_msgs": f.n_delivered - sum(t.delivered for t in bo) - ro[0],
            "out_bytes": f.bytes_delivered - sum(t.delivered_bytes for t in bo) - ro[1],
            "imported_msgs": imp_n, "imported_bytes": imp_b,
            "exported_msgs": sum(t.forwarded for t in bo) + ro[2],
            "exported_bytes": sum(t.forwarded_bytes for t in bo) + ro[3],
            "stored_msgs": f.n_appended, "stored_bytes": f.bytes_appended,
            "replayed_msgs": self.n_replayed, "replayed_bytes": self.bytes_replayed,
        }

    def import_usage(self):
        """``{key: counters}`` per import of this account (what crossed
        from the exporter; a service's requests and responses)."""
        out = {k: dict(v) for k, v in self.retired_imports.items()}
        for _name, (_src, _s, imp) in self.shared.items():
            k = import_key(self.name, imp)
            n, b = self.share_reads.get(k, (0, 0))
            out[k] = {"msgs": n, "bytes": b}
        for imp, t, back, _permits in self.wired:
            d = {"msgs": t.forwarded, "bytes": t.forwarded_bytes}
            if back is not None:        # (a service: msgs/bytes are the requests)
                d["responses"] = back.forwarded
                d["response_bytes"] = back.forwarded_bytes
            k = import_key(self.name, imp)
            for kk, v in out.get(k, {}).items():
                d[kk] = d.get(kk, 0) + v
            out[k] = d
        return out

    @property
    def data_dir(self):
        return self.flow.data_dir

    def info(self):
        """This account's state for /accountz."""
        flow = self.flow
        imports = []
        for name, (_src, _s, imp) in sorted(self.shared.items()):
            d = imp.to_dict()
            d["key"] = import_key(self.name, imp)
            d["local"] = name
            imports.append(d)
        for imp, target, _back, permits in self.wired:
            d = imp.to_dict()
            d["key"] = import_key(self.name, imp)
            d["local"] = imp.local
            d["forwarded"] = target.forwarded
            d["forwarded_bytes"] = target.forwarded_bytes
            d["refused"] = target.refused
            d["looped"] = target.looped
            if permits is not None:
                d.update(requests=permits.requests, responses=permits.responses,
                         pending=len(permits.permits), expired=permits.expired,
                         responses_refused=permits.refused)
            imports.append(d)
        return {"name": self.name, "system": self.system,
                "exports": [e.to_dict() for e in self.exports],
                "imports": imports,
                "streams": sorted(flow.streams()),
                "subscriptions": len(flow.matcher),
                "published": flow.n_published, "delivered": flow.n_delivered}


class Accounts:
    """The accounts of a server, by name: ``default`` (``$G``) and
    ``system``; ``wire()`` joins them by their imports."""

    def __init__(self, specs, default_flow, make_flow, system_name=None):
        self.by_name = {}
        self.enabled = len(specs) > 1 or (system_name is not None
                                          and system_name != DEFAULT_ACCOUNT)
        for name, spec in specs.items():
            if name == DEFAULT_ACCOUNT:
                flow, own = default_flow, False
            else:
                flow, own = make_flow(name), True
            self.by_name[name] = Account(name, flow, spec, own_flow=own)
        self.default = self.by_name[DEFAULT_ACCOUNT]
        self.system = self.by_name[system_name] if system_name else self.default
        self.system.system = True
        for acct in self.by_name.values():
            if acct is not self.system:
                acct.flow.advisory_flow = self.system.flow
                acct.flow.advisory_prefix = "$SYS.account.{}.advisory.".format(acct.name)

    def __getitem__(self, name):
        return self.by_name[name]

    def __iter__(self):
        return iter(self.by_name.values())

    def __len__(self):
        return len(self.by_name)

    def get(self, name):
        return self.by_name.get(name)

    def wire(self):
        """Install every import: stream imports as ImportTargets in the
        exporter, service imports as ImportTargets in the importer (with
        their reply routes in the exporter), shared streams by name.  Run
        again after a change (``update``): an import that did not change
        keeps its targets (its counters, its pending responses), one that
        went is removed from the routers at once (its counts kept)."""
        from fastflow._impl import ImportTarget

        want = {}
        for acct in self.by_name.values():
            for imp in acct.imports:
                want[_wire_id(acct.name, imp)] = (acct, imp)
        for acct in self.by_name.values():
            keep = []
            for entry in acct.wired:
                imp = entry[0]
                if _wire_id(acct.name, imp) in want and imp.account in self.by_name:
                    keep.append(entry)
                else:
                    self._unwire(acct, entry)
            acct.wired = keep
            acct.shared = {}
        have = {_wire_id(a.name, e[0]) for a in self.by_name.values() for e in a.wired}
        for wid, (acct, imp) in want.items():
            src = self.by_name[imp.account]
            if imp.kind == "share":
                acct.shared[imp.name] = (src, imp.subject, imp)
                continue
            if wid in have:
                continue
            if imp.kind == "stream":
                prefix = b"" if imp.prefix is None else (imp.prefix + ".").encode()
                t = ImportTarget(acct.flow, 0, prefix)
                src.flow.add(imp.subject, t)
                acct.wired.append((imp, t, None, None))
                src.bridges_out.append(t)
                acct.bridges_in.append(t)
            else:
                permits = _Permits(imp.export)
                strip = 0 if imp.prefix is None else len(imp.prefix.encode()) + 1
                t = ImportTarget(src.flow, strip, b"", reply_map=permits.request)
                acct.flow.add(imp.local, t)
                back = ImportTarget(acct.flow, 0, b"", subject_map=permits.response)
                src.flow.add(permits.pattern, back)
                acct.wired.append((imp, t, back, permits))
                acct.bridges_out.append(t)
                src.bridges_in.append(t)
                src.bridges_out.append(back)
                acct.bridges_in.append(back)

    def _unwire(self, acct, entry):
        """Take an import's targets out of the routers; keep what they counted."""
        imp, t, back, _permits = entry
        for target in (t, back):
            if target is None:
                continue
            for a in self.by_name.values():
                if target in a.bridges_out:
                    a.bridges_out.remove(target)
                    a.retired_out[0] += target.delivered
                    a.retired_out[1] += target.delivered_bytes
                    a.retired_out[2] += target.forwarded
                    a.retired_out[3] += target.forwarded_bytes
                    if not a.flow.closed and target.handle in a.flow.matcher:
                        a.flow.remove(target.handle)
                if target in a.bridges_in:
                    a.bridges_in.remove(target)
                    a.retired_in[0] += target.forwarded
                    a.retired_in[1] += target.forwarded_bytes
        key = import_key(acct.name, imp)
        d = acct.retired_imports.setdefault(key, {})
        d["msgs"] = d.get("msgs", 0) + t.forwarded
        d["bytes"] = d.get("bytes", 0) + t.forwarded_bytes
        if back is not None:
            d["responses"] = d.get("responses", 0) + back.forwarded
            d["response_bytes"] = d.get("response_bytes", 0) + back.forwarded_bytes

    def update(self, specs, make_flow):
        """Apply a new configuration (``check_accounts`` output): accounts
        added (returned, their services to start), changed, removed
        (returned: their connections to close, their services to stop);
        then the imports wired again."""
        added, removed = [], []
        for name in list(self.by_name):
            if name not in specs:
                removed.append(self.by_name.pop(name))
        for name, spec in specs.items():
            acct = self.by_name.get(name)
            if acct is None:
                acct = self.by_name[name] = Account(name, make_flow(name), spec)
                acct.flow.advisory_flow = self.system.flow
                acct.flow.advisory_prefix = "$SYS.account.{}.advisory.".format(name)
                added.append(acct)
            else:
                acct.exports, acct.imports, acct.streams = spec.exports, spec.imports, \
                    spec.streams
        for acct in removed:
            for entry in acct.wired:
                self._unwire(acct, entry)
            acct.wired = []
            acct.shared = {}
            for a in self.by_name.values():      # its exports' targets in other accounts
                for entry in list(a.wired):
                    if entry[0].account == acct.name:
                        self._unwire(a, entry)
                        a.wired.remove(entry)
        self.enabled = True
        self.wire()
        return added, removed

    def prune(self):
        """Drop expired response permits (the server's housekeeping)."""
        now = time.monotonic()
        for acct in self.by_name.values():
            for _imp, _t, _back, permits in acct.wired:
                if permits is not None:
                    permits.prune(now)

    def close(self):
        for acct in self.by_name.values():
            if acct.own_flow and not acct.flow.closed:
                acct.flow.close()

    def info(self):
        return {name: acct.info() for name, acct in sorted(self.by_name.items())}


def _wire_id(importer, imp):
    """What makes two imports the same wiring: the importer, the import,
    the export it takes."""
    e = imp.export
    return (importer, import_key(importer, imp),
            None if e is None else repr(sorted(e.to_dict().items())))


def import_key(importer, imp):
    """The name of an import in the metering records: importer, kind,
    exporter, subject (and prefix)."""
    return "{}<{}:{}:{}{}".format(importer, imp.kind, imp.account, imp.subject,
                                  "" if imp.prefix is None else " as " + imp.prefix)


def account_data_dir(data_dir, name):
    """Where account ``name`` keeps its streams (``$G``: the data dir itself)."""
    if data_dir is None:
        return None
    if name == DEFAULT_ACCOUNT:
        return data_dir
    return os.path.join(data_dir, "accounts", name)
