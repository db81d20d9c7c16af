"""Subscription filters (CloudEvents Subscriptions API 0.1, section 3.2.4)
and the index that keeps 10,000 subscriptions from costing 10,000 filter
evaluations per event.

A subscription's ``source``, ``types`` and ``filters`` compile into one
predicate over an event (``compile_filter``), plus the *keys* the index
can find it under: the conditions every event it takes must meet, that a
dictionary lookup can test (an exact or prefix value of ``type``,
``source`` or ``subject``; the routing subject's pattern through the
matcher).  ``FilterIndex`` keeps them in the core's
``SubscriptionIndex``, which reads a batch of stored records and looks
their attributes up in C; only the candidates (and the few subscriptions
nothing indexes) have their predicate evaluated, CESQL included.

Dialects: ``exact``, ``prefix``, ``suffix`` (a map of attribute name to
non-empty string; every entry must hold; case-sensitive), ``all``,
``any`` (a non-empty list of filters), ``not`` (one filter), and ``sql``
(a CESQL 1.0 expression; ``cesql`` is accepted as the same dialect, the
name Knative uses).  An attribute the event does not have fails
``exact``, ``prefix`` and ``suffix``; a CESQL expression that errors is
false (spec 3.2.4.1.2).
"""

import re

from fastflow import cesql
from fastflow._cesqlcode import attribute_value
from fastflow._impl import Matcher, SubscriptionIndex, validate_pattern
from fastflow.errors import CesqlParseError, SubjectError

__all__ = ("DIALECTS", "FilterError", "FilterIndex", "compile_filter", "attribute_text")

DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not", "sql", "cesql")
MAX_DEPTH = 16                  # nesting of all / any / not
MAX_NODES = 256                 # filter expressions in one subscription
MAX_SQL = 4096                  # characters of one CESQL expression
MAX_VALUE = 4096                # characters of one exact / prefix / suffix value
_NAME = re.compile(r"[a-z0-9]{1,64}\Z")
# the attributes the index can look up (the routing subject apart)
INDEXED = ("type", "source", "subject")


class FilterError(ValueError):
    """An invalid filter; ``field`` is the JSON path of the culprit
    (``filters[2].exact.type``), the message says what is wrong."""

    def __init__(self, field, message):
        super().__init__("{}: {}".format(field, message))
        self.field = field
        self.reason = message


# -- attribute values as text ------------------------------------------------------------


def attribute_text(ev, name):
    """The value of attribute ``name`` of ``ev`` (an Event) as the string
    the filters compare, or None when the event does not have it."""
    if name == "type":
        return ev.type
    if name == "source":
        return ev.source
    if name == "subject":
        return ev.subject
    if name == "id":
        return ev.id
    if name == "specversion":
        return "1.0"
    v = ev.get(name)
    if v is None or type(v) is str:
        return v
    if type(v) is bool:
        return "true" if v else "false"
    return str(attribute_value(v))


# -- compiling -------------------------------------------------------------------------------


class _Compiler:
    def __init__(self):
        self.nodes = 0

    def filters(self, items, where):
        """A list of filters, all of which must hold."""
        if not isinstance(items, list):
            raise FilterError(where, "expected a list of filter expressions, got {}".format(
                _kind(items)))
        preds = [self.one(f, "{}[{}]".format(where, i), 1) for i, f in enumerate(items)]
        return _all(preds)

    def one(self, f, where, depth):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FilterError(where, "more than {} filter expressions".format(MAX_NODES))
        if depth > MAX_DEPTH:
            raise FilterError(where, "filters nested more than {} deep".format(MAX_DEPTH))
        if not isinstance(f, dict):
            raise FilterError(where, "expected a filter expression (an object with one dialect "
                                     "name), got {}".format(_kind(f)))
        if len(f) != 1:
            raise FilterError(where, "a filter expression names exactly one dialect, got {}"
                              .format(sorted(f) if f else "none"))
        ((dialect, arg),) = f.items()
        at = "{}.{}".format(where, dialect)
        if dialect in ("exact", "prefix", "suffix"):
            return _attribute_filter(dialect, self.attributes(arg, at))
        if dialect in ("all", "any"):
            if not isinstance(arg, list) or not arg:
                raise FilterError(at, "expected a non-empty list of filter expressions, got {}"
                                  .format(_kind(arg) if not isinstance(arg, list) else "[]"))
            preds = [self.one(g, "{}[{}]".format(at, i), depth + 1) for i, g in enumerate(arg)]
            return _all(preds) if dialect == "all" else _any(preds)
        if dialect == "not":
            inner = self.one(arg, at, depth + 1)
            return lambda ev: not inner(ev)
        if dialect in ("sql", "cesql"):
            if not isinstance(arg, str) or not arg.strip():
                raise FilterError(at, "expected a CESQL expression (a non-empty string), got {}"
                                  .format(_kind(arg)))
            if len(arg) > MAX_SQL:
                raise FilterError(at, "a CESQL expression of over {} characters".format(MAX_SQL))
            try:
                expr = cesql.compile(arg)
            except CesqlParseError as exc:
                raise FilterError(at, "invalid CESQL expression: {}".format(exc)) from None
            return expr.matches
        raise FilterError(where, "unsupported filter dialect {!r} (supported: {})".format(
            dialect[:100], ", ".join(DIALECTS)))

    def attributes(self, arg, at):
        if not isinstance(arg, dict) or not arg:
            raise FilterError(at, "expected a non-empty map of attribute name to value, got {}"
                              .format(_kind(arg) if not isinstance(arg, dict) else "{}"))
        out = []
        for name, value in arg.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise FilterError(at, "invalid attribute name {!r}: CloudEvents attribute names "
                                      "are 1 to 64 lowercase letters and digits".format(name[:80]))
            if not isinstance(value, str) or not value:
                raise FilterError("{}.{}".format(at, name), "expected a non-empty string, got {}"
                                  .format(_kind(value) if value != "" else "an empty string"))
            if len(value) > MAX_VALUE:
                raise FilterError("{}.{}".format(at, name), "a value of over {} characters"
                                  .format(MAX_VALUE))
            out.append((name, value))
        return out


def _kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _true(ev):
    return True


def _all(preds):
    if not preds:
        return _true
    if len(preds) == 1:
        return preds[0]
    return lambda ev: all(p(ev) for p in preds)


def _any(preds):
    if len(preds) == 1:
        return preds[0]
    return lambda ev: any(p(ev) for p in preds)


def _attribute_filter(dialect, pairs):
    def test(ev):
        for name, value in pairs:
            v = attribute_text(ev, name)
            if v is None:
                return False
            if dialect == "exact":
                if v != value:
                    return False
            elif dialect == "prefix":
                if not v.startswith(value):
                    return False
            elif not v.endswith(value):
                return False
        return True
    return test


def _sql_groups(text):
    """Index keys a CESQL filter implies: from the operands of its top
    AND chain, ``<attr> = '<text>'`` (either side), ``<attr> IN ('a',
    'b')`` and ``<attr> LIKE '<text>%'`` for the indexed attributes (a
    filter is true only when the whole chain is true without an error,
    so each of these must hold).  A list of alternative-key lists."""
    try:
        root = cesql.compile(text)._root
    except Exception:
        return []
    out = []

    def attr(node):
        name = getattr(node, "name", None)
        return name if type(node).__name__ == "_Attribute" and name in INDEXED else None

    def text_of(node):
        if type(node).__name__ == "_Literal" and type(node.value) is str:
            return node.value
        return None

    def walk(node):
        kind = type(node).__name__
        if kind == "_Logic" and node.op == "AND":
            walk(node.left)
            walk(node.right)
        elif kind == "_Compare" and node.op == "=":
            for a, b in ((node.left, node.right), (node.right, node.left)):
                name, value = attr(a), text_of(b)
                if name and value:
                    out.append([("exact", name, value)])
                    return
        elif kind == "_In" and not node.negated:
            name = attr(node.operand)
            values = [text_of(i) for i in node.items]
            if name and values and all(values):
                out.append([("exact", name, v) for v in dict.fromkeys(values)])
        elif kind == "_Like" and not node.negated:
            name = attr(node.operand)
            p = node.pattern
            if name and len(p) > 1 and p.endswith("%") and not any(
                    c in p[:-1] for c in "%_\\"):
                out.append([("prefix", name, p[:-1])])
    walk(root)
    return out


def _keys(source, types, filters, routing):
    """The index keys of a subscription: a list of alternatives, one of
    which every event it takes meets (``("exact", attr, value)``,
    ``("prefix", attr, value)``, ``("routing", pattern)``), or None when
    nothing indexable is required."""
    groups = []
    if types:
        groups.append([("exact", "type", t) for t in types])
    if source is not None:
        groups.append([("exact", "source", source)])
    if routing is not None and routing != ">":
        groups.append([("routing", routing)])

    def walk(items):
        for f in items:
            if not isinstance(f, dict) or len(f) != 1:
                continue
            ((dialect, arg),) = f.items()
            if dialect in ("exact", "prefix"):
                for name, value in arg.items():
                    if name in INDEXED:
                        groups.append([(dialect, name, value)])
            elif dialect in ("sql", "cesql"):
                groups.extend(_sql_groups(arg))
            elif dialect == "all":
                walk(arg)
            elif dialect == "any":
                alts = []
                for g in arg:
                    if isinstance(g, dict) and len(g) == 1:
                        ((d2, a2),) = g.items()
                        if d2 in ("exact", "prefix") and len(a2) == 1:
                            ((n2, v2),) = a2.items()
                            if n2 in INDEXED:
                                alts.append((d2, n2, v2))
                                continue
                    alts = None
                    break
                if alts:
                    groups.append(alts)
    walk(filters or ())
    if not groups:
        return None
    # the best alternative set: exact before routing before prefix, then the fewest keys
    rank = {"exact": 0, "routing": 1, "prefix": 2}
    return min(groups, key=lambda g: (max(rank[k[0]] for k in g), len(g)))


def compile_filter(source=None, types=None, filters=None, routing=None, where="filters"):
    """``(predicate, keys)`` for a subscription's ``source`` (exact),
    ``types`` (any of), ``filters`` (all of) and routing-subject pattern
    (``routing``, checked by the index and again by the predicate):
    ``predicate(event)`` is the whole test; ``keys`` as ``_keys``.
    Raises FilterError naming the field at fault."""
    c = _Compiler()
    preds = []
    if routing is not None:
        try:
            validate_pattern(routing)
        except SubjectError as exc:
            raise FilterError("config.subject", str(exc)) from None
        if routing != ">":
            m = Matcher(cache_size=0)
            m.add(routing, True)
            preds.append(lambda ev: bool(m.match(ev.routing_subject)))
    if source is not None:
        preds.append(_attribute_filter("exact", [("source", source)]))
    if types:
        tset = frozenset(types)
        preds.append(lambda ev: ev.type in tset)
    if filters is not None:
        preds.append(c.filters(filters, where))
    keys = _keys(source, types, filters, routing)
    pred = _all(preds)
    if not preds:
        # no condition: every event is a candidate, and matches
        pred = _decided(pred)
    elif keys is not None and len(preds) == 1 and (
            filters is None or (len(filters) == 1 and len(next(iter(filters[0].values()))) == 1
                                and next(iter(filters[0])) in ("exact", "prefix"))):
        # one condition, the one the index looks up: a candidate matches
        pred = _decided(pred)
    return pred, keys


def _decided(pred):
    def decided(ev):
        return pred(ev)
    decided.index_decides = True
    return decided


# -- the index -------------------------------------------------------------------------------


class FilterIndex:
    """Subscriptions (any hashable value) by their index keys; an event's
    ``candidates`` are those whose keys it meets, plus the unindexed.

    The lookup is the core's ``SubscriptionIndex`` (``core``), which knows
    each value by a small int handle: ``values[handle]`` is the value.
    ``candidates_batch(batch)`` answers for a whole log ``Batch`` in C:
    ``(rows, handles)``, one pair (index in the batch, handle) per
    candidate of each event, in event order, as two lists."""

    def __init__(self):
        self.core = SubscriptionIndex()
        self.values = []                # handle -> value (None: a free handle)
        self._handles = {}              # value -> handle
        self._free = []                 # handles to use again

    def __len__(self):
        return len(self._handles)

    def add(self, value, keys):
        h = self._handles.get(value)
        new = h is None
        if new:
            h = self._free.pop() if self._free else len(self.values)
        try:
            self.core.add(h, keys)
        except BaseException:
            if new:
                self._free.append(h)
            raise
        if new:
            if h == len(self.values):
                self.values.append(value)
            else:
                self.values[h] = value
            self._handles[value] = h

    def remove(self, value):
        h = self._handles.pop(value, None)
        if h is None:
            return
        self.core.remove(h)
        self.values[h] = None
        self._free.append(h)

    def candidates(self, ev):
        """The subscriptions that may take ``ev`` (an Event; a set)."""
        values = self.values
        return {values[h] for h in self.core.candidates(ev.routing_subject, ev.encode())}

    def candidates_batch(self, batch):
        """``(rows, handles)`` of a log ``Batch`` (see the class)."""
        return self.core.candidates_batch(batch)

    def set_sink(self, value, subject, hop=False):
        """``value``'s events are published on ``subject`` of the router
        by ``route_batch`` itself (None: returned again); see
        ``SubscriptionIndex.set_sink``."""
        self.core.set_sink(self._handles[value], subject, hop)

    def sink_delivered(self, value):
        """Events ``route_batch`` delivered for ``value`` (0 if it is not here)."""
        h = self._handles.get(value)
        return 0 if h is None else self.core.sink_delivered(h)

    def route_batch(self, batch, router):
        """``(rows, handles, failed)``: ``candidates_batch`` with the sinks
        delivered by the index (see ``SubscriptionIndex.route_batch``)."""
        return self.core.route_batch(batch, router)
