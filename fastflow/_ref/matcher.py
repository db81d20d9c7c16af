"""Subject matcher, pure-Python reference for src_ext/matcher.pyx.

A dict trie with the same semantics as the native one: NATS-style ``*``
and ``>``, the ``$`` rule, queue groups picked round-robin, one result per
matching handle.  It has no result cache (it is the oracle the cache is
checked against), but it keeps the same counters so both report alike.
"""

import sys
from array import array

from fastflow._ref.subjects import MAX_SUBJECT_LEN, MAX_TOKENS, tokenize
from fastflow.errors import FastflowError

__all__ = ("Matcher", "MatchBatch")

_PWC = b"*"
_FWC = b">"


class _Node:
    __slots__ = ("parent", "token", "children", "pwc", "fwc", "subs")

    def __init__(self, parent, token):
        self.parent = parent
        self.token = token
        self.children = {}
        self.pwc = None
        self.fwc = None
        self.subs = []  # handles, in insertion order

    def empty(self):
        return not (self.children or self.pwc or self.fwc or self.subs)


def _check_queue(queue):
    if queue is None:
        return None
    if not isinstance(queue, str):
        raise TypeError("queue must be str or None, not {}".format(type(queue).__name__))
    if not queue or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in queue):
        raise ValueError(
            "invalid queue group {!r}: must be non-empty, without whitespace or "
            "control characters".format(queue)
        )
    return queue


class MatchBatch:
    """Results of ``Matcher.match_batch``: handles in CSR layout.

    ``offsets[i]:offsets[i+1]`` indexes the handles matched by subject ``i``.
    """

    __slots__ = ("_matcher", "offsets", "handles")

    def __init__(self, matcher, offsets, handles):
        self._matcher = matcher
        self.offsets = offsets
        self.handles = handles

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, i):
        n = len(self.offsets) - 1
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("batch index out of range")
        get = self._matcher._value_or_missing
        out = []
        for h in self.handles[self.offsets[i] : self.offsets[i + 1]]:
            v = get(h)
            if v is not _MISSING:
                out.append(v)
        return out

    def lists(self):
        return [self[i] for i in range(len(self))]

    @property
    def total(self):
        return len(self.handles)


_MISSING = object()


class Matcher:
    """Reference matcher; see ``fastflow.Matcher`` for the documentation."""

    def __init__(self, cache_size=65536, cache_max_bytes=64 << 20):
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0, got {}".format(cache_size))
        self._root = _Node(None, None)
        self._subs = {}  # handle -> (value, node, queue)
        self._next = 1
        self._rr = {}  # queue -> round-robin counter
        self._qrefs = {}  # queue -> number of members (the counter goes with the last)
        self._cache_size = cache_size
        self._matches = 0
        self._inserts = 0
        self._removes = 0

    # -- subscriptions ------------------------------------------------------

    def add(self, pattern, value, queue=None):
        toks = tokenize(pattern, True)
        queue = _check_queue(queue)
        node = self._root
        for tok in toks:
            if tok == _PWC:
                if node.pwc is None:
                    node.pwc = _Node(node, tok)
                node = node.pwc
            elif tok == _FWC:
                if node.fwc is None:
                    node.fwc = _Node(node, tok)
                node = node.fwc
            else:
                child = node.children.get(tok)
                if child is None:
                    child = node.children[tok] = _Node(node, tok)
                node = child
        h = self._next
        self._next += 1
        node.subs.append(h)
        self._subs[h] = (value, node, queue)
        if queue is not None:
            self._qrefs[queue] = self._qrefs.get(queue, 0) + 1
        self._inserts += 1
        return h

    def remove(self, handle):
        try:
            value, node, queue = self._subs.pop(handle)
        except (KeyError, TypeError):
            raise KeyError("unknown subscription handle {!r}".format(handle)) from None
        node.subs.remove(handle)
        if queue is not None:
            self._qrefs[queue] -= 1
            if not self._qrefs[queue]:
                del self._qrefs[queue]
                self._rr.pop(queue, None)
        while node.parent is not None and node.empty():
            parent = node.parent
            if node is parent.pwc:
                parent.pwc = None
            elif node is parent.fwc:
                parent.fwc = None
            else:
                del parent.children[node.token]
            node = parent
        self._removes += 1

    def remove_many(self, handles):
        """Remove every live subscription of ``handles`` (others are
        skipped); returns how many were removed."""
        n = 0
        for h in list(handles):
            try:
                self.remove(h)
            except KeyError:
                continue
            n += 1
        return n

    def __len__(self):
        return len(self._subs)

    def __contains__(self, handle):
        return handle in self._subs

    def _value_or_missing(self, handle):
        s = self._subs.get(handle)
        return _MISSING if s is None else s[0]

    # -- matching -----------------------------------------------------------

    def _collect(self, toks, only=-1, remote=None):
        """The handles matching ``toks``: the plain ones, then one member
        per queue group (round robin; a member for which ``remote(h)``
        is true only when the group has no other); ``only`` -2: the plain
        ones only; a group's name: one member of it only, never a remote one."""
        found = []

        def level(node, i):
            n = len(toks)
            while i < n:
                private = i == 0 and toks[0][:1] == b"$"
                if node.fwc is not None and not private:
                    found.extend(node.fwc.subs)
                if node.pwc is not None and not private:
                    level(node.pwc, i + 1)
                node = node.children.get(toks[i])
                if node is None:
                    return
                i += 1
            found.extend(node.subs)

        level(self._root, 0)
        plain = []
        groups = {}
        for h in found:
            q = self._subs[h][2]
            if q is None:
                if only == -1 or only == -2:
                    plain.append(h)
            elif only != -2 and (only == -1 or q == only):
                groups.setdefault(q, []).append(h)
        for q, members in groups.items():
            k = self._rr.get(q, 0)
            self._rr[q] = k + 1
            n = len(members)
            h = members[k % n]
            if remote is not None and remote(h):
                for c in range(1, n):
                    if not remote(members[(k + c) % n]):
                        h = members[(k + c) % n]
                        break
                else:
                    if only != -1:
                        continue        # (no local member: none gets it)
            plain.append(h)
        self._matches += 1
        return plain

    def match_handles(self, subject):
        return self._collect(tokenize(subject, False))

    def match(self, subject):
        subs = self._subs
        return [subs[h][0] for h in self._collect(tokenize(subject, False))]

    def match_batch(self, subjects):
        offsets = array("q", [0])
        handles = array("q")
        for s in subjects:
            handles.extend(self._collect(tokenize(s, False)))
            offsets.append(len(handles))
        return MatchBatch(self, offsets, handles)

    # -- introspection ------------------------------------------------------

    def _nodes(self):
        stack = [self._root]
        while stack:
            n = stack.pop()
            yield n
            stack.extend(n.children.values())
            if n.pwc:
                stack.append(n.pwc)
            if n.fwc:
                stack.append(n.fwc)

    @property
    def cache_size(self):
        return self._cache_size

    def memory_bytes(self):
        """Approximate bytes held by the trie's Python objects."""
        total = sys.getsizeof(self._subs)
        for n in self._nodes():
            total += sys.getsizeof(n) + sys.getsizeof(n.children) + sys.getsizeof(n.subs)
            if n.token is not None:
                total += sys.getsizeof(n.token)
        return total

    def stats(self):
        nodes = list(self._nodes())
        return {
            "subscriptions": len(self._subs),
            "nodes": len(nodes),
            "edges": len(nodes) - 1,
            "arena_bytes": sum(len(n.token) for n in nodes if n.token not in (None, _PWC, _FWC)),
            "queue_groups": len(self._qrefs),
            "matches": self._matches,
            "inserts": self._inserts,
            "removes": self._removes,
            "cache_size": self._cache_size,
            "cache_entries": 0,
            "cache_stale": 0,
            "cache_bytes": 0,
            "cache_hits": 0,
            "cache_misses": self._matches,
            "cache_inserts": 0,
            "cache_evictions": 0,
            "cache_invalidations": 0,
            "cache_flushes": 0,
            "cache_uncacheable": 0,
            "memory_bytes": self.memory_bytes(),
        }

    def cache_clear(self):
        pass

    def _check(self):
        """Internal consistency check (raises FastflowError)."""
        for h, (_value, node, _queue) in self._subs.items():
            if h not in node.subs:
                raise FastflowError("_check: handle {} missing from its node".format(h))


MAX_SUBJECT_LEN = MAX_SUBJECT_LEN
MAX_TOKENS = MAX_TOKENS
