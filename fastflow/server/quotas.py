"""Quotas (docs/accounts.md "Quotas"): what an account, or one of its
users, may hold and send.

- ``connections``, ``subscriptions`` (an account's, or a user's): counted
  as connections authenticate and subscriptions come and go; at the limit
  the new one is refused in the door's words (NATS: nats-server's
  ``maximum account active connections exceeded`` / ``maximum
  subscriptions exceeded``; MQTT: reason code 0x97; HTTP: 429 with
  Retry-After; native: ERR 429).
- ``msgs_per_second``, ``bytes_per_second`` (with ``burst`` seconds of
  each): an account's ingress, a ``RateLimit`` the router takes from for
  every publish of a connection (in C).  The stream doors pause reading
  the account's publishers until the bucket is paid back (their TCP
  window is the answer: nothing that was sent is lost); the HTTP door
  answers 429 with Retry-After and publishes nothing of that request.
- ``storage`` (bytes), ``streams``, ``consumers``: an account's streams;
  with a storage limit every stream needs a ``max_bytes`` and their sum
  stays within it (as JetStream's ``max_bytes_required``).

Every refusal is counted per account and kind (``/accountz``) and
advised on ``$SYS.account.<name>.advisory.quota`` (at most once per
second per account and kind).
"""

import time

from fastflow.server.config import ConfigError, parse_duration, parse_size

__all__ = ("ACCOUNT_LIMITS", "USER_LIMITS", "Limits", "QuotaExceeded", "Quotas")

ACCOUNT_LIMITS = ("connections", "subscriptions", "msgs_per_second", "bytes_per_second",
                  "burst", "storage", "streams", "consumers")
USER_LIMITS = ("connections", "subscriptions")
_ADVISE_EVERY = 1.0


class QuotaExceeded(Exception):
    """A quota refuses: ``kind`` (connections, subscriptions, ...), the
    message the door says, ``retry_after`` seconds (HTTP)."""

    def __init__(self, kind, message, retry_after=1):
        Exception.__init__(self, message)
        self.kind = kind
        self.retry_after = retry_after


class Limits:
    """The limits of an account or a user (0: none)."""

    __slots__ = ACCOUNT_LIMITS

    def __init__(self):
        for k in ACCOUNT_LIMITS:
            setattr(self, k, 0)
        self.burst = 1.0

    @classmethod
    def from_dict(cls, d, where, keys=ACCOUNT_LIMITS):
        lim = cls()
        if d is None:
            return lim
        if not isinstance(d, dict):
            raise ConfigError("{}: expected a table of limits ({}), got {!r}".format(
                where, ", ".join(keys), d))
        unknown = sorted(set(d) - set(keys))
        if unknown:
            raise ConfigError("{}: unknown limit{} {} (known: {})".format(
                where, "s" if len(unknown) > 1 else "", ", ".join(map(repr, unknown)),
                ", ".join(keys)))
        for k, v in d.items():
            w = "{}.{}".format(where, k)
            if k in ("storage", "bytes_per_second"):
                v = parse_size(v, w)
            elif k == "burst":
                v = parse_duration(v, w)
                if v <= 0:
                    raise ConfigError("{}: must be > 0 seconds".format(w))
            elif k == "msgs_per_second":
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise ConfigError("{}: a number >= 0, got {!r}".format(w, v))
            elif isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError("{}: an integer >= 0 (0: no limit), got {!r}".format(w, v))
            setattr(lim, k, v)
        return lim

    @property
    def any(self):
        return any(getattr(self, k) for k in ACCOUNT_LIMITS if k != "burst")

    def to_dict(self):
        return {k: getattr(self, k) for k in ACCOUNT_LIMITS
                if getattr(self, k) and (k != "burst" or self.msgs_per_second
                                         or self.bytes_per_second)}


class Quotas:
    """A server's quota bookkeeping: the limits per account and user, the
    live counts, the refusals."""

    def __init__(self, server, config):
        self.server = server
        self.accounts = {}              # name -> Limits
        self.users = {}                 # (account, user name) -> Limits
        self.conns = {}                 # account -> live connections
        self.user_conns = {}            # (account, user) -> live connections
        self.subs = {}                  # account -> live subscriptions (non-MQTT)
        self.user_subs = {}             # (account, user) -> live subscriptions
        self.refused = {}               # (account, kind) -> refusals
        self.throttled = {}             # account -> [pauses, seconds]
        self._advised = {}              # (account, kind) -> time of the last advisory
        for name, spec in config.account_specs().items():
            self.accounts[name] = Limits.from_dict(spec.limits, "accounts.{}.limits".format(name))
        for kind, items in (("users", config.users), ("tokens", config.tokens)):
            for i, u in enumerate(items):
                if u.get("limits") is not None:
                    name = u.get("user") if kind == "users" else u.get("name",
                                                                       "token{}".format(i))
                    self.users[(u.get("account", "$G"), name)] = Limits.from_dict(
                        u["limits"], "auth.{}[{}].limits".format(kind, i), USER_LIMITS)

    def take_counts(self, old):
        """Carry the live counts of ``old`` (the quotas before a change)."""
        for k in ("conns", "user_conns", "subs", "user_subs", "refused", "throttled",
                  "_advised"):
            setattr(self, k, getattr(old, k))

    def install(self, accounts):
        """Give each account with an ingress limit its RateLimit."""
        from fastflow._impl import RateLimit

        for acct in accounts:
            lim = self.accounts.get(acct.name)
            ing = acct.flow.ingress
            if lim is not None and (lim.msgs_per_second or lim.bytes_per_second):
                if ing is None or (ing.msgs_rate, ing.bytes_rate, ing.burst) != (
                        float(lim.msgs_per_second), float(lim.bytes_per_second),
                        float(lim.burst)):
                    acct.flow.ingress = RateLimit(lim.msgs_per_second, lim.bytes_per_second,
                                                  lim.burst)
            elif ing is not None:
                acct.flow.ingress = None
            acct.limits = lim

    # -- refusals ----------------------------------------------------------------------

    def refuse(self, account, kind, message, user=None, retry_after=1):
        key = (account, kind)
        self.refused[key] = self.refused.get(key, 0) + 1
        now = time.monotonic()
        if now - self._advised.get(key, -_ADVISE_EVERY) >= _ADVISE_EVERY:
            self._advised[key] = now
            acct = self.server.accounts.get(account)
            if acct is not None and not acct.flow.closed:
                body = {"account": account, "kind": kind, "message": message,
                        "refused_total": self.refused[key]}
                if user is not None:
                    body["user"] = user
                try:
                    acct.flow.advise("quota", body)
                except Exception:       # (a full disk under a $SYS stream)
                    pass
        raise QuotaExceeded(kind, message, retry_after)

    # -- connections -------------------------------------------------------------------

    def join(self, account, user):
        """A connection authenticated as ``user`` of ``account``: counted,
        or QuotaExceeded."""
        lim = self.accounts.get(account)
        n = self.conns.get(account, 0)
        if lim is not None and lim.connections and n >= lim.connections:
            self.refuse(account, "connections", "maximum account active connections exceeded "
                        "(account {} has {} of {})".format(account, n, lim.connections), user)
        key = (account, user)
        ulim = self.users.get(key)
        un = self.user_conns.get(key, 0)
        if ulim is not None and ulim.connections and un >= ulim.connections:
            self.refuse(account, "connections", "maximum user active connections exceeded "
                        "(user {} has {} of {})".format(user, un, ulim.connections), user)
        self.conns[account] = n + 1
        self.user_conns[key] = un + 1

    def leave(self, account, user):
        self.conns[account] = self.conns.get(account, 1) - 1
        key = (account, user)
        self.user_conns[key] = self.user_conns.get(key, 1) - 1

    # -- subscriptions -----------------------------------------------------------------

    def may_subscribe(self, conn, n=1):
        """None, or why ``conn`` may not add ``n`` subscriptions (a message;
        counted and advised).  MQTT filters of the account's sessions count
        besides the others."""
        acct = conn.account
        lim = self.accounts.get(acct.name)
        user = conn.quota_key[1] if conn.quota_key is not None else None
        if lim is not None and lim.subscriptions:
            have = self.subs.get(acct.name, 0) + _mqtt_filters(acct)
            if have + n > lim.subscriptions:
                return self._no(acct.name, "maximum subscriptions exceeded (account {} has {} "
                                "of {})".format(acct.name, have, lim.subscriptions), user)
        ulim = self.users.get((acct.name, user))
        if ulim is not None and ulim.subscriptions:
            have = self.user_subs.get((acct.name, user), 0) + _mqtt_filters(acct, conn.user)
            if have + n > ulim.subscriptions:
                return self._no(acct.name, "maximum subscriptions exceeded (user {} has {} of "
                                "{})".format(user, have, ulim.subscriptions), user)
        return None

    def _no(self, account, message, user):
        try:
            self.refuse(account, "subscriptions", message, user)
        except QuotaExceeded:
            pass
        return message

    def subscribed(self, conn, n):
        """``n`` subscriptions of ``conn`` came (n > 0) or went (n < 0)."""
        a = conn.account.name
        self.subs[a] = self.subs.get(a, 0) + n
        key = (a, conn.quota_key[1] if conn.quota_key is not None else None)
        self.user_subs[key] = self.user_subs.get(key, 0) + n

    # -- streams -----------------------------------------------------------------------

    def may_add_stream(self, acct, name, retention, replacing=None):
        """QuotaExceeded if account ``acct`` may not have stream ``name``
        with ``retention`` (``replacing``: the stream it updates)."""
        lim = self.accounts.get(acct.name)
        if lim is None:
            return
        streams = {n: s for n, s in acct.flow.streams().items() if n not in _DOOR_STREAMS}
        if lim.streams and name not in streams and len(streams) >= lim.streams:
            self.refuse(acct.name, "streams", "maximum streams exceeded (account {} has {} of "
                        "{})".format(acct.name, len(streams), lim.streams))
        if lim.storage:
            mb = retention.max_bytes if retention is not None else 0
            if not mb:
                self.refuse(acct.name, "storage", "account {} has a storage limit ({} bytes): "
                            "a stream needs max_bytes".format(acct.name, lim.storage))
            used = sum(s.retention.max_bytes for n, s in streams.items() if n != name)
            if used + mb > lim.storage:
                self.refuse(acct.name, "storage", "maximum storage exceeded (account {} has "
                            "{} of {} bytes reserved by its streams; {} asks {})".format(
                                acct.name, used, lim.storage, name, mb))

    def may_add_consumer(self, acct, stream, name, shared=False):
        """QuotaExceeded unless ``acct`` may add consumer ``name`` to
        ``stream`` (``shared``: another account's, shared with it).  An
        account's consumers: those of its streams that are its own, and
        its own on streams shared with it."""
        lim = self.accounts.get(acct.name)
        if lim is None or not lim.consumers:
            return
        have = sum(1 for s in acct.flow.streams().values() for c in s.consumers().values()
                   if _owner_account(c.owner) in (acct.name, None))
        for src, sname, _imp in acct.shared.values():
            st = src.flow.streams().get(sname) if not src.flow.closed else None
            if st is not None:
                have += sum(1 for c in st.consumers().values()
                            if _owner_account(c.owner) == acct.name)
        if name not in stream.consumers() and have >= lim.consumers:
            self.refuse(acct.name, "consumers", "maximum consumers exceeded (account {} has {} "
                        "of {})".format(acct.name, have, lim.consumers))

    # -- ingress -----------------------------------------------------------------------

    def throttled_for(self, account, seconds):
        t = self.throttled.setdefault(account, [0, 0.0])
        t[0] += 1
        t[1] += seconds
        key = (account, "ingress")
        now = time.monotonic()
        if now - self._advised.get(key, -_ADVISE_EVERY) >= _ADVISE_EVERY:
            self._advised[key] = now
            acct = self.server.accounts.get(account)
            if acct is not None and not acct.flow.closed:
                try:
                    acct.flow.advise("quota", {"account": account, "kind": "ingress",
                                               "message": "ingress over the account's rate: "
                                               "its publishers paused", "paused": t[0],
                                               "paused_seconds": round(t[1], 3)})
                except Exception:
                    pass

    def info(self, account):
        lim = self.accounts.get(account)
        d = {"limits": lim.to_dict() if lim is not None else {},
             "connections": self.conns.get(account, 0),
             "subscriptions": self.subs.get(account, 0),
             "refused": {k: v for (a, k), v in self.refused.items() if a == account}}
        t = self.throttled.get(account)
        if t is not None:
            d["paused"], d["paused_seconds"] = t[0], round(t[1], 3)
        return d


def _mqtt_filters(acct, user=False):
    """The MQTT filters the account's sessions hold (``user``: that user's)."""
    ms = acct.mqtt_sessions
    if ms is None:
        return 0
    if user is False:
        return sum(len(s.subs) for s in ms.sessions.values())
    return sum(len(s.subs) for s in ms.sessions.values() if s.user == user)


def _owner_account(owner):
    """The account of a consumer's owner (``kind:name@account``; None: $G's
    or unknown)."""
    if not isinstance(owner, str) or "@" not in owner:
        return None
    return owner.rpartition("@")[2]


# the streams the MQTT door keeps its state in (not the account's to count)
_DOOR_STREAMS = ("mqtt_retained", "mqtt_sessions", "mqtt_queued")
