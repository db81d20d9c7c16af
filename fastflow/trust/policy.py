"""The trust policy of a flow (an account's engine): which keys may sign
the events published on which subjects, and whether a signature is
required there (docs/provenance.md).

A policy is a list of rules, each a set of subject patterns, the key ids
it accepts (none listed: every key of the policy) and ``require``.  The
first rule (in order) with a pattern matching a publish's subject decides:

* a signed event must verify against one of the rule's keys (the
  extension's steps: the DSSE signature, the payload type, the digest of
  the core attributes, data and signed extensions);
* an unsigned one is refused when ``require`` is set, else it passes.

Subjects no rule matches are not checked.  The check runs in the router,
before the subject is matched, for every door and for in-process
publishes; a refusal raises SignatureError (each door answers it in its own
words), is counted by reason and advised on ``$SYS.advisory.trust_refused``.
The record a publisher sent is what is stored and forwarded: nothing is
re-encoded, so the signature keeps verifying downstream.
"""

import time

from fastflow._impl import Event, Matcher
from fastflow.errors import SignatureError, SubjectError
from fastflow.trust.events import _check
from fastflow.trust.keys import KeySet, PublicKey, SigningKey, load_key_file

__all__ = ("TrustPolicy", "TrustRule")

ADVISORIES_PER_SECOND = 100


class TrustRule:
    """``subjects`` (patterns), ``keys`` (key ids; empty: every key of the
    policy), ``require`` (an unsigned event is refused)."""

    __slots__ = ("subjects", "keys", "require")

    def __init__(self, subjects, keys=(), require=True):
        if isinstance(subjects, str):
            subjects = [subjects]
        if not subjects:
            raise ValueError("a trust rule needs at least one subject pattern")
        self.subjects = list(subjects)
        self.keys = list(keys)
        self.require = bool(require)

    def __repr__(self):
        return "TrustRule({!r}, keys={!r}, require={})".format(self.subjects, self.keys,
                                                              self.require)


class TrustPolicy:
    """Rules over a KeySet; ``install(flow)`` makes the flow's router apply
    it.  Counters: ``checked``, ``passed``, ``unsigned_passed``,
    ``refused`` (by reason)."""

    def __init__(self, rules, keys=()):
        self.keys = keys if isinstance(keys, KeySet) else KeySet(keys)
        self.rules = [r if isinstance(r, TrustRule) else TrustRule(**r) for r in rules]
        self.matcher = Matcher()
        self._keysets = []              # per rule: the keys it accepts (the policy's own)
        for i, r in enumerate(self.rules):
            if r.keys:
                ks = KeySet()
                for kid in r.keys:
                    k = self.keys.get(kid)
                    if k is None:
                        raise ValueError("trust rule {} names key {!r}, which is not one of "
                                         "the policy's keys ({})".format(
                                             i, kid, ", ".join(self.keys.ids()) or "none"))
                    ks.add(k)
                self._keysets.append(ks)
            else:
                self._keysets.append(self.keys)
            for p in r.subjects:
                self.matcher.add(p, i)
        self.checked = 0
        self.passed = 0
        self.unsigned_passed = 0
        self.refused = dict.fromkeys(SignatureError.REASONS, 0)
        self.flow = None
        self.source = None              # the config it was made from (None: made in code)
        self._adv_second = 0
        self._adv_count = 0
        self.advisories_suppressed = 0

    @classmethod
    def from_config(cls, d, where="trust"):
        """A policy from its config table: ``keys`` (``{key id: PEM file path
        or PEM text}``, public or private: the public half is used) and
        ``rules`` (``[{subjects, keys, require}]``).  ValueError naming
        what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("{}: expected a table".format(where))
        unknown = sorted(set(d) - {"keys", "rules"})
        if unknown:
            raise ValueError("{}: unknown key{} {} (known: 'keys', 'rules')".format(
                where, "s" if len(unknown) > 1 else "", ", ".join(map(repr, unknown))))
        keys = d.get("keys", {})
        if not isinstance(keys, dict):
            raise ValueError("{}.keys: expected a table of key id = PEM file".format(where))
        ks = KeySet()
        for kid, v in keys.items():
            if not isinstance(v, str):
                raise ValueError("{}.keys.{}: expected a PEM file path or PEM text".format(
                    where, kid))
            try:
                if "-----BEGIN" in v:
                    key = (SigningKey.from_pem(v, kid) if "PRIVATE KEY" in v
                           else PublicKey.from_pem(v, kid))
                else:
                    key = load_key_file(v, kid)
            except (ValueError, OSError) as exc:
                raise ValueError("{}.keys.{}: {}".format(where, kid, exc)) from None
            ks.add(key, kid)
        rules = d.get("rules", [])
        if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
            raise ValueError("{}.rules: expected an array of tables ([[{}.rules]])".format(
                where, where))
        out = []
        for i, r in enumerate(rules):
            w = "{}.rules[{}]".format(where, i)
            unknown = sorted(set(r) - {"subjects", "keys", "require"})
            if unknown:
                raise ValueError("{}: unknown key{} {} (known: 'subjects', 'keys', "
                                 "'require')".format(w, "s" if len(unknown) > 1 else "",
                                                     ", ".join(map(repr, unknown))))
            subs = r.get("subjects")
            if isinstance(subs, str):
                subs = [subs]
            if not isinstance(subs, list) or not subs or \
                    not all(isinstance(x, str) for x in subs):
                raise ValueError("{}.subjects: expected a pattern or an array of them".format(w))
            rk = r.get("keys", [])
            if not isinstance(rk, list) or not all(isinstance(x, str) for x in rk):
                raise ValueError("{}.keys: expected an array of key ids".format(w))
            req = r.get("require", True)
            if not isinstance(req, bool):
                raise ValueError("{}.require: expected true or false".format(w))
            out.append(TrustRule(subs, rk, req))
        try:
            policy = cls(out, ks)
        except (ValueError, SubjectError) as exc:
            raise ValueError("{}: {}".format(where, exc)) from None
        policy.source = repr(d)
        return policy

    # -- the router's hook -------------------------------------------------------------

    def install(self, flow):
        """Apply the policy to ``flow``'s publishes (``flow.trust = policy``)."""
        self.flow = flow
        flow.trust_check = self.check_event
        flow.trust_on = self.matcher

    @staticmethod
    def uninstall(flow):
        flow.trust_on = None
        flow.trust_check = None

    def check_event(self, subject, what, hits=None):
        """Apply the policy to a publish on ``subject`` of ``what`` (an Event,
        a record, or None: an event with the defaults); raises SignatureError
        to refuse it.  ``hits``: the policy's matcher result for ``subject``
        when the caller has it (the router: it matched to decide to call)."""
        if hits is None:
            hits = self.matcher.match(subject)
        if not hits:
            return
        i = min(hits)
        rule = self.rules[i]
        self.checked += 1
        ev = Event.decode(subject, what) if isinstance(what, bytes) else what
        try:
            attrs = ev.attributes() if ev is not None else None
            if attrs is None or attrs.get("dssematerial") in (None, ""):
                if rule.require:
                    raise SignatureError("unsigned", "publishes to {!r} must be signed".format(
                        subject))
                self.unsigned_passed += 1
                return
            _check(attrs, ev.data, self._keysets[i])
        except SignatureError as exc:
            self.refused[exc.reason] = self.refused.get(exc.reason, 0) + 1
            self._advise(subject, ev, exc)
            raise
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            # (what the checks above did not foresee is still a refusal, never
            # a door's internal error)
            err = SignatureError("malformed", "{}: {}".format(type(exc).__name__,
                                                             str(exc)[:100]))
            self.refused["malformed"] += 1
            self._advise(subject, ev, err)
            raise err from None
        self.passed += 1

    def _advise(self, subject, ev, exc):
        flow = self.flow
        if flow is None:
            return
        now = int(time.monotonic())
        if now != self._adv_second:
            self._adv_second = now
            self._adv_count = 0
        self._adv_count += 1
        if self._adv_count > ADVISORIES_PER_SECOND:
            self.advisories_suppressed += 1
            return
        body = {"subject": subject, "reason": exc.reason, "detail": exc.detail}
        if ev is not None:
            body["id"] = ev.id
            body["source"] = ev.source
        try:
            flow.advise("trust_refused", body)
        except Exception:       # (an advisory never turns into the publisher's error)
            pass

    def stats(self):
        return {"rules": len(self.rules), "keys": self.keys.ids(), "checked": self.checked,
                "passed": self.passed, "unsigned_passed": self.unsigned_passed,
                "refused": dict(self.refused),
                "refused_total": sum(self.refused.values()),
                "advisories_suppressed": self.advisories_suppressed}
