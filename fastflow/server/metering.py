"""Metering (docs/accounts.md "Metering"): who published and received what.

The counting is the core's, on the publish path (``Router.n_published`` /
``bytes_published`` and their kin, each target's ``delivered_bytes``, each
``ImportTarget``'s ``forwarded_bytes``, each connection's
``OutBuf.pub_bytes``); this module adds them up per account, per user and
per import, keeps the totals in the data directory (``metering.json``,
written atomically every interval and at stop, read at start) so that a
restart does not reset a bill, and publishes each account's usage as a
CloudEvent on ``$SYS.account.<name>.usage`` in the system account.

Bytes are payload bytes (the events' data), as nats-server counts an
account's; events are counted once per delivery.
"""

import json
import logging
import os
import time

from fastflow.accounts import import_key

__all__ = ("USAGE_TYPE", "Meter")

log = logging.getLogger("fastflow.server")

USAGE_TYPE = "io.fastflow.account.usage"
_VERSION = 1
_FILE = "metering.json"
USERS_MAX = 100000                      # users with a record of their own; past it, the rest
                                        # are added up under "*" (a bounded file and payload)


def _add(into, d):
    for k, v in d.items():
        if isinstance(v, int) and not isinstance(v, bool):
            into[k] = into.get(k, 0) + v
    return into


def _counters(d):
    """The int counters of a loaded record (anything else is dropped)."""
    if not isinstance(d, dict):
        return {}
    return {k: v for k, v in d.items()
            if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0}


class Meter:
    """The usage of a server's accounts, users and imports: the totals of
    earlier runs (``base``, from ``metering.json``) plus this run's."""

    def __init__(self, server, data_dir=None, interval=60.0):
        self.server = server
        self.path = os.path.join(data_dir, _FILE) if data_dir else None
        self.interval = interval
        self.base = {"accounts": {}, "users": {}, "imports": {}}
        self.closed_users = {}          # "account/user" -> counters of closed connections
        self.since = time.time()        # when the totals began (the first run's start)
        self.last = None                # loop time of the last report
        self.n_reports = 0
        self.save_errors = 0

    # -- the file ----------------------------------------------------------------------

    def load(self):
        """Read the totals of earlier runs.  A damaged file is kept aside
        (``metering.json.bad-<time>``) and the totals start again."""
        if self.path is None or not os.path.exists(self.path):
            return
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read())
            if not isinstance(doc, dict) or doc.get("version") != _VERSION:
                raise ValueError("not a version {} metering file".format(_VERSION))
            for key in ("accounts", "users", "imports"):
                got = doc.get(key, {})
                if not isinstance(got, dict):
                    raise ValueError("{!r} is not an object".format(key))
                self.base[key] = {k: _counters(v) for k, v in got.items() if isinstance(k, str)}
            since = doc.get("since")
            if isinstance(since, (int, float)) and not isinstance(since, bool):
                self.since = float(since)
        except (OSError, ValueError) as exc:
            aside = "{}.bad-{}".format(self.path, int(time.time()))
            log.error("metering: %s cannot be read (%s); kept as %s, the totals start at 0",
                      self.path, exc, aside)
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            self.base = {"accounts": {}, "users": {}, "imports": {}}

    def save(self):
        """Write the totals (a new file renamed over the old one, synced)."""
        if self.path is None:
            return
        doc = dict(self.totals(), version=_VERSION, since=self.since, saved=time.time())
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dfd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            self.save_errors += 1
            log.error("metering: cannot write %s: %s", self.path, exc)

    # -- the totals --------------------------------------------------------------------

    def closed(self, conn):
        """A connection went: keep what it did under its user."""
        key = _user_key(conn)
        d = self.closed_users.get(key)
        if d is None:
            if len(self.closed_users) >= USERS_MAX:
                key = "{}/*".format(conn.account.name)
            d = self.closed_users.setdefault(key, {})
        _add(d, conn.usage())
        d["connections"] = d.get("connections", 0) + 1

    def users(self):
        """This run's usage per "account/user" (closed connections and live ones)."""
        out = {k: dict(v) for k, v in self.closed_users.items()}
        for conn in list(self.server.conns.values()):
            if conn.principal is None:
                continue
            _add(out.setdefault(_user_key(conn), {}), conn.usage())
        return out

    def totals(self):
        """``{"accounts", "users", "imports"}``: every total, earlier runs included."""
        accts, imports = {}, {}
        for acct in self.server.accounts:
            accts[acct.name] = _add(dict(self.base["accounts"].get(acct.name, {})), acct.usage())
            for k, v in acct.import_usage().items():
                imports[k] = _add(dict(self.base["imports"].get(k, {})), v)
        for k, v in self.base["accounts"].items():
            accts.setdefault(k, dict(v))        # (an account no longer configured)
        for k, v in self.base["imports"].items():
            imports.setdefault(k, dict(v))
        users = {k: dict(v) for k, v in self.base["users"].items()}
        for k, v in self.users().items():
            _add(users.setdefault(k, {}), v)
        return {"accounts": accts, "users": users, "imports": imports}

    def account(self, name, totals=None):
        """One account's usage document: its totals, its users', its imports'."""
        t = totals if totals is not None else self.totals()
        pre = name + "/"
        acct = self.server.accounts.get(name)
        imports = {}
        if acct is not None:
            keys = {import_key(name, imp) for imp in acct.imports}
            imports = {k: v for k, v in t["imports"].items() if k in keys}
        return {"account": name, "since": self.since, "time": time.time(),
                "usage": t["accounts"].get(name, {}),
                "users": {k[len(pre):]: v for k, v in t["users"].items() if k.startswith(pre)},
                "imports": imports}

    # -- reports ---------------------------------------------------------------------------

    def tick(self, now):
        """The server's housekeeping: every ``interval``, each account's
        usage on ``$SYS.account.<name>.usage`` and the file written."""
        if not self.interval:
            return
        if self.last is None:
            self.last = now
            return
        if now - self.last < self.interval:
            return
        self.last = now
        self.report()

    def report(self):
        totals = self.totals()
        sysflow = self.server.accounts.system.flow
        for acct in self.server.accounts:
            doc = self.account(acct.name, totals)
            try:
                sysflow.publish("$SYS.account.{}.usage".format(acct.name),
                                json.dumps(doc, separators=(",", ":")).encode(),
                                type=USAGE_TYPE, datacontenttype="application/json")
            except Exception as exc:    # e.g. a stream on $SYS.> on a full disk
                log.warning("metering: the usage of %s not published: %s", acct.name, exc)
        self.n_reports += 1
        self.save()


def _user_key(conn):
    p = conn.principal
    user = conn.user if conn.user is not None else (p.name if p is not None and p.name
                                                    else "anonymous")
    return "{}/{}".format(conn.account.name, user)
