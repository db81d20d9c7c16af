"""Authentication and permissions of the server.

- Passwords (and, optionally, tokens) are stored as scrypt hashes
  (``hash_password``: ``$scrypt$ln=14,r=8,p=1$<salt>$<hash>``, base64 without
  padding, a random 16-byte salt); ``verify_password`` compares in constant
  time.  ``fastflow passwd`` (``hash_password_cli``) prints a hash.
- ``Permissions``: publish and subscribe allow/deny lists of subject
  patterns, enforced with ``fastflow.Matcher`` (deny wins).  The publish
  matchers go to the connection's ``FrameParser`` (``pub_allow`` /
  ``pub_deny``), so PUB frames are checked in C.
- ``Authenticator``: no auth, tokens, or users; it turns a CONNECT request
  into a ``Principal`` (a name and its permissions) or raises ``AuthError``.
"""

import asyncio
import base64
import getpass
import hashlib
import hmac
import os
import sys
import time

from fastflow._impl import Matcher, validate_pattern, validate_subject
from fastflow.errors import FastflowError, SubjectError
from fastflow.server.config import STREAM_PERMS, ConfigError, parse_duration

__all__ = ("AuthError", "Authenticator", "LoginThrottle", "Permissions", "Principal",
           "ResponsePermits", "hash_password", "hash_password_cli", "verify_password")

# scrypt cost: 2**14 x 8 x 1 uses 16 MiB and ~50 ms (OWASP's minimum is 2**17 x 8 x 1
# for interactive logins; this is a server that verifies once per connection)
_LN = 14
_R = 8
_P = 1
_DKLEN = 32
_PREFIX = "$scrypt$"

# allow_responses
RESPONSE_MAX = 1                        # responses per request (nats-server's default)
RESPONSE_EXPIRES = 120.0                # seconds a response may take (nats-server's default)
RESPONSE_PERMITS_MAX = 16384            # permits one connection holds


def _b64(b):
    return base64.b64encode(b).decode("ascii").rstrip("=")


def _unb64(s):
    return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)


def _secret_bytes(secret, what="password"):
    """The UTF-8 bytes of a password or token; ValueError for one with a NUL
    (scrypt's HMAC pads a short key with zero bytes, so ``pw`` and
    ``pw\\0`` would derive the same key) or a lone surrogate."""
    if isinstance(secret, str):
        try:
            secret = secret.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the {} is not valid UTF-8 (a lone surrogate)".format(
                what)) from None
    if b"\0" in secret:
        raise ValueError("a {} cannot contain a NUL character".format(what))
    return bytes(secret)


def hash_password(password, *, ln=_LN, r=_R, p=_P):
    """A scrypt hash of ``password`` with a random salt, as one string:
    ``$scrypt$ln=14,r=8,p=1$<salt>$<hash>``.  ValueError for a password
    with a NUL character or a lone surrogate."""
    password = _secret_bytes(password)
    salt = os.urandom(16)
    dk = hashlib.scrypt(password, salt=salt, n=1 << ln, r=r, p=p, dklen=_DKLEN,
                        maxmem=(1 << ln) * r * 256)
    return "{}ln={},r={},p={}${}${}".format(_PREFIX, ln, r, p, _b64(salt), _b64(dk))


def _parse_hash(stored):
    if not isinstance(stored, str) or not stored.startswith(_PREFIX):
        raise ValueError("not a scrypt hash")
    params, salt, dk = stored[len(_PREFIX):].split("$")
    kv = dict(item.split("=", 1) for item in params.split(","))
    ln, r, p = int(kv["ln"]), int(kv["r"]), int(kv["p"])
    if not (1 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")
    return ln, r, p, _unb64(salt), _unb64(dk)


def is_password_hash(stored):
    try:
        _parse_hash(stored)
        return True
    except (ValueError, KeyError, TypeError):
        return False


def verify_password(password, stored):
    """Whether ``password`` matches ``stored`` (a ``hash_password`` string);
    False for a malformed hash, and for a password with a NUL character or
    a lone surrogate (never derived as the password without them).
    Constant-time comparison of the whole derived key."""
    try:
        ln, r, p, salt, dk = _parse_hash(stored)
    except (ValueError, KeyError, TypeError):
        return False
    try:
        password = _secret_bytes(password)
    except ValueError:                  # (a NUL would match the password without it)
        return False
    got = hashlib.scrypt(password, salt=salt, n=1 << ln, r=r, p=p, dklen=len(dk),
                         maxmem=(1 << ln) * r * 256)
    return hmac.compare_digest(got, dk)


def hash_password_cli(argv=None):
    """``fastflow passwd``: read a password (prompted twice on a terminal,
    or one line on standard input) and print its hash for the config file's
    ``password`` (or ``token``).  Returns the exit status."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="fastflow passwd",
        description="Print a scrypt hash of a password, for the 'password' of a user (or a "
                    "'token') in the server's config file.")
    parser.add_argument("--stdin", action="store_true",
                        help="read the password from the first line of standard input")
    args = parser.parse_args(argv)
    try:
        if args.stdin or not sys.stdin.isatty():
            pw = sys.stdin.readline().rstrip("\r\n")
        else:
            pw = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != pw:
                print("fastflow passwd: the passwords differ", file=sys.stderr)
                return 1
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return 1
    if not pw:
        print("fastflow passwd: empty password", file=sys.stderr)
        return 1
    try:
        print(hash_password(pw))
    except ValueError as exc:
        print("fastflow passwd: {}".format(exc), file=sys.stderr)
        return 1
    return 0


# -- permissions --------------------------------------------------------------------

# tokens standing for the wildcards of a subscription pattern when it is tested
# against allow patterns: an invisible separator no configured pattern uses
_FRESH = "\u2063"


def _tokens(pattern):
    return pattern.split(".")


def _overlap(p, d):
    """Whether patterns ``p`` and ``d`` (token lists) match a common subject
    (with the '$' rule: a wildcard first token never matches '$...')."""
    i = 0
    while True:
        if i == len(p) or i == len(d):
            return i == len(p) and i == len(d)
        a, b = p[i], d[i]
        if i == 0 and ((a in ("*", ">") and b[:1] == "$") or (b in ("*", ">") and a[:1] == "$")):
            return False
        if a == ">" or b == ">":
            return True
        if a != "*" and b != "*" and a != b:
            return False
        i += 1


def _pattern_list(v, where):
    if v is None:
        return None
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, (list, tuple)):
        raise ConfigError("{}: expected a list of subject patterns, got {!r}".format(where, v))
    out = []
    for p in v:
        try:
            validate_pattern(p)
        except (SubjectError, TypeError) as exc:
            raise ConfigError("{}: {}".format(where, exc)) from None
        if _FRESH in p:
            raise ConfigError("{}: pattern {!r} contains U+2063".format(where, p))
        out.append(p)
    return out


def _matcher(patterns):
    if patterns is None:
        return None
    m = Matcher(cache_size=1024)
    for i, p in enumerate(patterns):
        m.add(p, i)
    return m


class Permissions:
    """What a user (or token) may do.

    ``publish`` / ``subscribe``: ``allow`` and ``deny`` lists of subject
    patterns (no ``allow``: everything not denied; deny wins).  A
    subscription is allowed when its pattern lies inside one allow pattern
    and can match no subject of a deny pattern.  ``queue_allow`` /
    ``queue_deny`` (patterns matched against the queue group's name) limit
    the queue groups a subscription may join.  ``allow_responses``: true,
    or a table ``{max, expires}``: may publish on the reply subject of a
    request the connection received, ``max`` times (default 1) within
    ``expires`` (default 2 minutes), as nats-server (``ResponsePermits``).
    ``streams``: ``"manage"`` (also add, delete and
    purge streams, and operate every consumer, of the streams on whose
    subjects the user may publish and subscribe), ``"read"`` (stream info,
    replay, consumers of its own; the default of a permissions table) or
    ``"none"``; reading a stream (info, replay, consumers) also needs
    subscribe permission for its subjects (or the filter).  No permissions
    at all (``Permissions()``) may do everything.
    """

    __slots__ = ("pub_allow_list", "pub_deny_list", "sub_allow_list", "sub_deny_list",
                 "queue_allow_list", "queue_deny_list", "allow_responses", "resp_max",
                 "resp_expires", "streams",
                 "pub_allow", "pub_deny", "sub_allow", "sub_deny", "queue_allow", "queue_deny")

    def __init__(self, publish_allow=None, publish_deny=None, subscribe_allow=None,
                 subscribe_deny=None, queue_allow=None, queue_deny=None, allow_responses=False,
                 streams="manage", where="permissions"):
        self.pub_allow_list = _pattern_list(publish_allow, where + ".publish.allow")
        self.pub_deny_list = _pattern_list(publish_deny, where + ".publish.deny") or None
        self.sub_allow_list = _pattern_list(subscribe_allow, where + ".subscribe.allow")
        self.sub_deny_list = _pattern_list(subscribe_deny, where + ".subscribe.deny") or None
        self.queue_allow_list = _pattern_list(queue_allow, where + ".subscribe.queue_allow")
        self.queue_deny_list = _pattern_list(queue_deny, where + ".subscribe.queue_deny") or None
        self.resp_max, self.resp_expires = RESPONSE_MAX, RESPONSE_EXPIRES
        if isinstance(allow_responses, dict):
            w = where + ".allow_responses"
            unknown = set(allow_responses) - {"max", "expires"}
            if unknown:
                raise ConfigError("{}: unknown keys {} (known: max, expires)".format(
                    w, sorted(unknown)))
            mx = allow_responses.get("max", RESPONSE_MAX)
            if type(mx) is not int or mx < 1:
                raise ConfigError("{}.max: expected an integer >= 1, got {!r}".format(w, mx))
            exp = parse_duration(allow_responses.get("expires", RESPONSE_EXPIRES),
                                 w + ".expires")
            if exp <= 0:
                raise ConfigError("{}.expires: must be > 0, got {!r}".format(w, exp))
            self.resp_max, self.resp_expires = mx, exp
            allow_responses = True
        elif not isinstance(allow_responses, bool):
            raise ConfigError("{}.allow_responses: expected true, false or a table with max "
                              "and expires, got {!r}".format(where, allow_responses))
        self.allow_responses = allow_responses
        if streams not in STREAM_PERMS:
            raise ConfigError("{}.streams: expected one of {}, got {!r}".format(
                where, ", ".join(STREAM_PERMS), streams))
        self.streams = streams
        self.pub_allow = _matcher(self.pub_allow_list)
        self.pub_deny = _matcher(self.pub_deny_list)
        self.sub_allow = _matcher(self.sub_allow_list)
        self.sub_deny = _matcher(self.sub_deny_list)
        self.queue_allow = _matcher(self.queue_allow_list)
        self.queue_deny = _matcher(self.queue_deny_list)

    @classmethod
    def from_dict(cls, d, where="permissions"):
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ConfigError("{}: expected a table, got {!r}".format(where, d))
        unknown = set(d) - {"publish", "subscribe", "allow_responses", "streams"}
        if unknown:
            raise ConfigError("{}: unknown keys {} (known: publish, subscribe, allow_responses, "
                              "streams)".format(where, sorted(unknown)))
        pub = d.get("publish", {})
        sub = d.get("subscribe", {})
        if isinstance(pub, (list, str)):
            pub = {"allow": pub}
        if isinstance(sub, (list, str)):
            sub = {"allow": sub}
        for name, t, keys in (("publish", pub, {"allow", "deny"}),
                              ("subscribe", sub, {"allow", "deny", "queue_allow", "queue_deny"})):
            if not isinstance(t, dict) or set(t) - keys:
                raise ConfigError("{}.{}: expected a list of patterns or a table with {}, got {!r}"
                                  .format(where, name, ", ".join(sorted(keys)), t))
        return cls(pub.get("allow"), pub.get("deny"), sub.get("allow"), sub.get("deny"),
                   sub.get("queue_allow"), sub.get("queue_deny"),
                   d.get("allow_responses", False), d.get("streams", "read"), where)

    @property
    def unrestricted(self):
        return (self.pub_allow is None and self.pub_deny is None and self.sub_allow is None
                and self.sub_deny is None and self.queue_allow is None
                and self.queue_deny is None and self.streams == "manage")

    def can_publish(self, subject):
        """Python-side twin of the parser's check (PUB with ACK, PUB_BATCH).
        ``subject`` must be valid (SubjectError otherwise)."""
        if self.pub_allow is not None and not self.pub_allow.match(subject):
            return False
        return self.pub_deny is None or not self.pub_deny.match(subject)

    def subscribe_denied(self, pattern, queue=None):
        """Why ``pattern`` (and ``queue``) may not be subscribed, or None.
        ``pattern`` must be valid."""
        if self.sub_allow is not None and not self._inside_allow(pattern):
            return "permission denied: subscribe to '{}'".format(pattern)
        if self.sub_deny_list is not None:
            toks = _tokens(pattern)
            for d in self.sub_deny_list:
                if _overlap(toks, _tokens(d)):
                    return ("permission denied: subscribe to '{}' (it overlaps the denied "
                            "'{}')".format(pattern, d))
        if queue:
            try:
                validate_subject(queue)
                ok = ((self.queue_allow is None or self.queue_allow.match(queue))
                      and (self.queue_deny is None or not self.queue_deny.match(queue)))
            except SubjectError:
                ok = self.queue_allow is None and self.queue_deny is None
            if not ok:
                return "permission denied: queue group '{}' on '{}'".format(queue, pattern)
        return None

    def _inside_allow(self, pattern):
        """Whether one allow pattern contains every subject ``pattern``
        matches: the matcher is asked with the pattern's wildcards replaced
        by fresh tokens ('>' as one and as two tokens)."""
        toks = _tokens(pattern)
        n = 0
        base = []
        for t in toks:
            if t == "*" or t == ">":
                n += 1
                base.append("{}{}".format(_FRESH, n))
            else:
                base.append(t)
        probes = [".".join(base)]
        if toks[-1] == ">":
            probes.append(probes[0] + "." + _FRESH + "0")
        ok = None
        for probe in probes:
            got = set(self.sub_allow.match(probe))
            ok = got if ok is None else ok & got
            if not ok:
                return False
        return True

    def can_read_stream(self, patterns):
        """Reading a stream (replay, consumer) whose subjects (or filter) are
        ``patterns``: None if allowed, else why not."""
        if self.streams == "none":
            return "permission denied: stream requests"
        for p in patterns:
            why = self.subscribe_denied(p)
            if why is not None:
                return why
        return None

    # -- streams: who may manage, read and consume which stream ---------------------

    def stream_manage_denied(self, subjects):
        """Managing a stream (add, delete, purge; any consumer of it) whose
        subject patterns are ``subjects``: None if allowed, else why not.
        Needs ``streams = "manage"`` and, for every pattern, publish and
        subscribe rights on every subject it matches (so a stream can never
        capture, refuse or expose events its manager may not touch)."""
        if self.streams != "manage":
            return "permission denied: managing streams (streams = '{}')".format(self.streams)
        for p in subjects:
            why = self.publish_pattern_denied(p)
            if why is None:
                why = self.subscribe_denied(p)
            if why is not None:
                return why
        return None

    def publish_pattern_denied(self, pattern):
        """Why not every subject of ``pattern`` may be published, or None."""
        if self.pub_allow_list is not None and not _pattern_inside(
                _matcher(self.pub_allow_list), pattern):
            return "permission denied: publish to '{}'".format(pattern)
        if self.pub_deny_list is not None:
            toks = _tokens(pattern)
            for d in self.pub_deny_list:
                if _overlap(toks, _tokens(d)):
                    return ("permission denied: publish to '{}' (it overlaps the denied "
                            "'{}')".format(pattern, d))
        return None

    def may_read_stream(self, patterns):
        """``can_read_stream`` as a bool (info, lists)."""
        return self.unrestricted or self.can_read_stream(patterns) is None

    def describe(self):
        d = {"streams": self.streams}
        if self.pub_allow_list is not None or self.pub_deny_list is not None:
            d["publish"] = {"allow": self.pub_allow_list, "deny": self.pub_deny_list}
        if self.sub_allow_list is not None or self.sub_deny_list is not None:
            d["subscribe"] = {"allow": self.sub_allow_list, "deny": self.sub_deny_list}
        if self.queue_allow_list is not None or self.queue_deny_list is not None:
            d["queues"] = {"allow": self.queue_allow_list, "deny": self.queue_deny_list}
        if self.allow_responses:
            d["allow_responses"] = {"max": self.resp_max, "expires": self.resp_expires}
        return d

    def response_permits(self):
        """A ``ResponsePermits`` for one connection of this user, or None
        when it needs none (no ``allow_responses``, or publishing is not
        restricted)."""
        if not self.allow_responses or (self.pub_allow is None and self.pub_deny is None):
            return None
        return ResponsePermits(self.resp_max, self.resp_expires)


ALL = Permissions()


def _pattern_inside(matcher, pattern):
    """Whether one pattern of ``matcher`` contains every subject
    ``pattern`` matches (``Permissions._inside_allow`` for any matcher)."""
    toks = _tokens(pattern)
    base = [_FRESH + str(i) if t in ("*", ">") else t for i, t in enumerate(toks, 1)]
    probes = [".".join(base)]
    if toks[-1] == ">":
        probes.append(probes[0] + "." + _FRESH + "0")
    ok = None
    for probe in probes:
        got = set(matcher.match(probe))
        ok = got if ok is None else ok & got
        if not ok:
            return False
    return True
# -- response permissions (allow_responses) -----------------------------------------------



class ResponsePermits:
    """The reply subjects one connection may publish on although its
    publish permissions refuse them: those of the requests delivered to it
    (on its own subscriptions), each ``max`` times within ``expires``
    seconds of its delivery; then the permit is gone (nats-server's
    ``allow_responses``).

    The router appends the reply subject (bytes) of every request it
    delivers to ``pending`` (the ``replies`` list of the connection's
    ``WireTarget``s, itself bounded); they become permits when the
    connection publishes (``__call__``, the parser's ``resp_check``) or at
    its next tick.  At most ``limit`` permits are held: past it the expired
    ones go, then the oldest (a request still unanswered among more than
    ``limit`` newer ones loses its permit).  A request received again
    renews its permit."""

    __slots__ = ("max", "expires", "limit", "pending", "permits", "clock", "granted", "used",
                 "evicted")

    def __init__(self, max_msgs=RESPONSE_MAX, expires=RESPONSE_EXPIRES,
                 limit=RESPONSE_PERMITS_MAX, clock=time.monotonic):
        self.max = max_msgs
        self.expires = expires
        self.limit = limit
        self.clock = clock
        self.pending = []               # filled by the router (WireTarget.replies)
        self.permits = {}               # reply subject -> [responses left, expiry time];
                                        # in the order they expire
        self.granted = 0
        self.used = 0
        self.evicted = 0

    def __len__(self):
        return len(self.permits)

    def take(self):
        """Turn the pending reply subjects into permits."""
        pend = self.pending
        if not pend:
            return
        now = self.clock()
        exp = now + self.expires
        d = self.permits
        for b in pend:
            key = b.decode("utf-8", "replace")
            d.pop(key, None)
            d[key] = [self.max, exp]
        self.granted += len(pend)
        pend.clear()
        if len(d) > self.limit:
            for key in list(d):
                if len(d) <= self.limit and d[key][1] > now:
                    break
                del d[key]
                self.evicted += 1

    def __call__(self, subject, use=True):
        """Whether ``subject`` may be published as a response; ``use``:
        this publish spends one of its permit's responses."""
        self.take()
        e = self.permits.get(subject)
        if e is None:
            return False
        if e[1] <= self.clock():
            del self.permits[subject]
            return False
        if use:
            self.used += 1
            e[0] -= 1
            if e[0] <= 0:
                del self.permits[subject]
        return True

    def prune(self):
        """Forget the expired permits (the connection's tick)."""
        self.take()
        d = self.permits
        if not d:
            return
        now = self.clock()
        for key in list(d):
            if d[key][1] > now:
                break
            del d[key]


# -- failed logins -------------------------------------------------------------------------

class LoginThrottle:
    """A per-address back-off after failed logins.

    After ``free`` failures from one address, each further CONNECT from it
    is checked only after a delay that starts at ``base`` seconds and
    doubles with every failure, up to ``cap``; the CONNECTs that come
    meanwhile queue behind one another (one check per delay, however many
    connections), and one that would wait longer than ``cap`` is refused at
    once, unchecked.  A successful login clears its address; so does
    ``forget`` seconds without a failure.  Other addresses are not slowed.
    At most ``max_sources`` addresses are remembered (then the one that
    failed least recently is forgotten)."""

    __slots__ = ("free", "base", "cap", "forget", "max_sources", "sources", "clock",
                 "delayed", "refused")

    def __init__(self, free=5, base=0.1, cap=2.0, forget=600.0, max_sources=16384,
                 clock=time.monotonic):
        self.free = free
        self.base = base
        self.cap = cap
        self.forget = forget
        self.max_sources = max_sources
        self.clock = clock
        self.sources = {}               # address -> [failures, time the next check may run],
                                        # least recently failed first
        self.delayed = 0                # CONNECTs checked after a wait
        self.refused = 0                # CONNECTs refused unchecked

    def _entry(self, src, now):
        e = self.sources.get(src)
        if e is not None and now - e[1] > self.forget:
            del self.sources[src]
            return None
        return e

    def _delay(self, failures):
        return min(self.cap, self.base * (1 << min(failures - self.free, 30)))

    def reserve(self, src):
        """Seconds a CONNECT from ``src`` waits before its check (0: none),
        or None: refuse it at once."""
        if self.free <= 0 and self.base <= 0:
            return 0.0
        now = self.clock()
        e = self._entry(src, now)
        if e is None or e[0] < self.free:
            return 0.0
        at = max(now, e[1])
        if at - now > self.cap:
            self.refused += 1
            return None
        e[1] = at + self._delay(e[0])   # the next CONNECT from src waits for this one
        if at > now:
            self.delayed += 1
        return at - now

    def failed(self, src):
        now = self.clock()
        d = self.sources
        e = self._entry(src, now)
        if e is None:
            if len(d) >= self.max_sources:
                del d[next(iter(d))]
            e = [0, now]
        else:
            del d[src]                  # (to the end: least recently failed first)
        d[src] = e
        e[0] += 1
        if e[0] >= self.free:
            e[1] = max(e[1], now + self._delay(e[0]))

    def succeeded(self, src):
        self.sources.pop(src, None)


class Principal:
    """An authenticated client: its ``name`` (user name, token name, or
    None without auth), its ``permissions`` and its ``account`` (a name)."""

    __slots__ = ("name", "permissions", "kind", "account", "admin")

    def __init__(self, name, permissions, kind, account="$G", admin=False):
        self.name = name
        self.permissions = permissions
        self.kind = kind                # "none", "token", "user"
        self.account = account
        self.admin = admin              # may use the admin API (/admin on the HTTP door)


class AuthError(FastflowError):
    """CONNECT refused (the connection gets ERR 401 and is closed)."""


class Authenticator:
    """Checks CONNECT credentials against the configured tokens and users."""

    def __init__(self, config, log=None):
        self.default = Permissions.from_dict(config.default_permissions,
                                             "auth.default_permissions")
        self.tokens = []                # (stored token or hash, Principal)
        self.users = {}                 # name -> (stored hash, Principal)
        plain_users = []
        if config.token:
            self.tokens.append((config.token, Principal("token", self.default, "token")))
        for i, t in enumerate(config.tokens):
            where = "auth.tokens[{}]".format(i)
            perms = (Permissions.from_dict(t["permissions"], where + ".permissions")
                     if "permissions" in t else self.default)
            self.tokens.append((t["token"], Principal(t.get("name", "token{}".format(i)), perms,
                                                      "token", t.get("account", "$G"),
                                                      bool(t.get("admin")))))
        for i, u in enumerate(config.users):
            where = "auth.users[{}]".format(i)
            perms = (Permissions.from_dict(u["permissions"], where + ".permissions")
                     if "permissions" in u else self.default)
            stored = u["password"]
            if not is_password_hash(stored):
                plain_users.append(u["user"])
                try:
                    stored = hash_password(stored)
                except ValueError as exc:
                    raise ConfigError("{}.password: {}".format(where, exc)) from None
            self.users[u["user"]] = (stored, Principal(u["user"], perms, "user",
                                                       u.get("account", "$G"),
                                                       bool(u.get("admin"))))
        if plain_users and log is not None:
            log.warning("auth: the password of %s is not hashed; store the output of "
                        "`fastflow passwd` instead", ", ".join(map(repr, plain_users)))
        self.anonymous = Principal(None, self.default, "none")
        if self.required:
            _DUMMY_HASH()               # made now, not within the first unknown user's check
        self._ok_cache = {}             # (kind, name, sha256 of the secret) -> Principal

    @property
    def required(self):
        return bool(self.tokens or self.users)

    def describe(self):
        if not self.required:
            return "none"
        parts = []
        if self.tokens:
            parts.append("{} token{}".format(len(self.tokens), "s" if len(self.tokens) > 1 else ""))
        if self.users:
            parts.append("{} user{}".format(len(self.users), "s" if len(self.users) > 1 else ""))
        return " + ".join(parts)

    @staticmethod
    def refusal(connect):
        """Why the credentials of ``connect`` cannot be checked (an
        AuthError, refused without running scrypt), or None."""
        for k in ("user", "password", "token"):
            v = connect.get(k)
            if v is None:
                continue
            if not isinstance(v, str):
                return AuthError("authentication failed: {!r} must be a string".format(k))
            try:
                _secret_bytes(v, k)
            except ValueError as exc:
                return AuthError("authentication failed: {}".format(exc))
        return None

    def needs_kdf(self, connect):
        """Whether checking ``connect`` runs scrypt (then run ``check`` in a
        thread: it releases the GIL and takes ~50 ms)."""
        if not self.required or self.refusal(connect) is not None:
            return False
        key = self._cache_key(connect)
        if key is not None and key in self._ok_cache:
            return False
        if connect.get("user") is not None:
            return True
        return any(is_password_hash(t) for t, _ in self.tokens)

    def _cache_key(self, connect):
        user, pw, token = connect.get("user"), connect.get("password"), connect.get("token")
        if isinstance(user, str) and isinstance(pw, str):
            return ("user", user, hashlib.sha256(pw.encode("utf-8", "surrogatepass")).digest())
        if isinstance(token, str):
            return ("token", None, hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest())
        return None

    def check(self, connect):
        """The Principal of a CONNECT request (a dict), or AuthError."""
        if not self.required:
            return self.anonymous
        why = self.refusal(connect)
        if why is not None:
            raise why
        key = self._cache_key(connect)
        if key is not None:
            p = self._ok_cache.get(key)
            if p is not None:
                return p
        user, pw, token = connect.get("user"), connect.get("password"), connect.get("token")
        principal = None
        if user is not None:
            if not isinstance(user, str) or not isinstance(pw, str):
                raise AuthError("authentication failed: 'user' and 'password' must be strings")
            entry = self.users.get(user)
            # unknown user: verify against a dummy hash anyway (same timing)
            stored = entry[0] if entry is not None else _DUMMY_HASH()
            if verify_password(pw, stored) and entry is not None:
                principal = entry[1]
        elif token is not None:
            if not isinstance(token, str):
                raise AuthError("authentication failed: 'token' must be a string")
            tb = token.encode("utf-8", "surrogatepass")
            for stored, p in self.tokens:
                if is_password_hash(stored):
                    ok = verify_password(tb, stored)
                else:
                    ok = hmac.compare_digest(tb, stored.encode("utf-8", "surrogatepass"))
                if ok:
                    principal = p
                    break
        else:
            raise AuthError("authentication required: CONNECT with 'token', or 'user' and "
                            "'password'")
        if principal is None:
            raise AuthError("authentication failed")
        if key is not None:
            if len(self._ok_cache) >= 4096:
                self._ok_cache.clear()
            self._ok_cache[key] = principal
        return principal

    async def authenticate(self, connect, loop=None):
        """``check``, in a worker thread when it runs scrypt."""
        if not self.needs_kdf(connect):
            return self.check(connect)
        loop = loop or asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.check, connect)


_dummy = []


def _DUMMY_HASH():
    if not _dummy:
        _dummy.append(hash_password(os.urandom(16).hex()))
    return _dummy[0]
