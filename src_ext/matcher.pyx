# The subject matcher (included by core.pyx).
#
# Layout, all in C arrays indexed by uint32 ids (no Python object per node):
#   nodes   the trie (16 bytes each); node 0 is the root; flags say whether
#           a node has a '*' or a '>' child
#   edges   one open-addressing table (linear probing over any size via
#           fastrange, backward-shift deletion) keyed by (parent node,
#           token); a literal edge points at its token's bytes in the arena,
#           so a lookup is one probe and one compare
#   subs    subscriptions: value, node, queue id, links of the node's
#           circular list; handle = generation << 32 | slot
#   cache   4-way set-associative result cache keyed by the subject's bytes:
#           a hit costs one hash, one bucket line and one block; misses are
#           cached as empty results.  A literal pattern drops its one entry;
#           a wildcard pattern bumps a generation counter (its first token's,
#           or the global one for a leading wildcard), so every change costs
#           O(1) whatever the cache holds; an entry whose generations are not
#           current is stale: never served, freed when met or evicted
#
# A match walks the trie like nats-server's sublist (matchLevel): at each
# level the '>' child's subscribers match, the '*' child recurses and the
# literal child continues the loop.

cimport cython
from libc.stdlib cimport malloc, calloc, realloc, free, qsort
from libc.string cimport memcmp, memcpy, memmove, memset
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_XDECREF
from cpython.list cimport PyList_New, PyList_SET_ITEM, PyList_GET_SIZE, PyList_GET_ITEM
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.long cimport PyLong_Check
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_SIZE, PySequence_Fast_ITEMS


cdef extern from *:
    """
    static int ff_cmp_u64(const void *a, const void *b) {
        unsigned long long x = *(const unsigned long long *)a;
        unsigned long long y = *(const unsigned long long *)b;
        return (x > y) - (x < y);
    }
    """
    int ff_cmp_u64(const void *a, const void *b) noexcept nogil


cdef inline int64_t *_blk_res(CacheBlock *b) noexcept:
    return <int64_t *>(b + 1)


cdef inline char *_blk_subject(CacheBlock *b) noexcept:
    return <char *>(<int64_t *>(b + 1) + b.nres)


@cython.final
cdef class MatchBatch:
    """The result of ``Matcher.match_batch``: matched handles in CSR layout.

    ``offsets`` has ``len(batch) + 1`` entries; the handles matched by
    subject ``i`` are ``handles[offsets[i]:offsets[i + 1]]``.  Both are
    ``Int64Array`` buffers (zero-copy into memoryview or numpy).
    ``batch[i]`` looks the values up (handles removed since are skipped).
    """

    def __len__(self):
        return self.offsets.n - 1

    def __getitem__(self, Py_ssize_t i):
        cdef Py_ssize_t n = self.offsets.n - 1, k
        cdef int32_t sid
        cdef int64_t h
        cdef Sub *s
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError('batch index {} out of range for length {}'.format(i, n))
        out = []
        for k in range(self.offsets.data[i], self.offsets.data[i + 1]):
            h = self.handles.data[k]
            sid = <int32_t><uint32_t>h
            if <uint32_t>h < <uint64_t>self.matcher.subs_used:
                s = &self.matcher.subs[sid]
                if s.value != NULL and s.gen == <uint32_t>(h >> 32):
                    out.append(<object>s.value)
        return out

    def lists(self):
        """All results as a list of lists of values."""
        return [self[i] for i in range(self.offsets.n - 1)]

    @property
    def total(self):
        """Number of handles matched over the whole batch."""
        return self.handles.n


@cython.final
cdef class Matcher:
    """Matches subjects against subscription patterns (NATS syntax).

    ``Matcher(cache_size=65536, cache_max_bytes=64 MiB)``

    * ``add(pattern, value, queue=None) -> handle``: subscribe ``value``;
      ``*`` matches one token, ``>`` (last) one or more.  Values added with
      the same ``queue`` name share each matching subject: one of them is
      returned per match, round-robin.
    * ``remove(handle)``; ``remove_many(handles) -> int`` (the known ones,
      with one cache invalidation for a large batch);
      ``match(subject) -> list of values``;
      ``match_batch(subjects) -> MatchBatch`` (handles, in C end to end).
    * A subject whose first token starts with ``$`` is not matched by a
      pattern whose first token is a wildcard.
    * Results are cached per subject in a 4-way set-associative cache of
      ``cache_size`` entries (0 disables it), bounded in bytes by
      ``cache_max_bytes`` (reaching it empties the cache).
    """

    # trie

    def __cinit__(self, Py_ssize_t cache_size=DEFAULT_CACHE_SIZE,
                  Py_ssize_t cache_max_bytes=DEFAULT_CACHE_MAX_BYTES):
        cdef Py_ssize_t slots = 0
        if cache_size < 0:
            raise ValueError('cache_size must be >= 0, got {}'.format(cache_size))
        if cache_max_bytes < 0:
            raise ValueError('cache_max_bytes must be >= 0, got {}'.format(cache_max_bytes))
        if cache_size > (1 << 24):
            raise ValueError('cache_size must be <= {}, got {}'.format(1 << 24, cache_size))
        self.qids = {}
        self.qnames = []
        self.qfree = []
        # the root node
        _grow(<void **>&self.nodes, &self.nodes_cap, 1, sizeof(Node), 256, True)
        self.nodes[0].parent = -1
        self.nodes[0].thash = 0
        self.nodes[0].subs = -1
        self.nodes[0].nref = 0
        self.nodes_used = 1
        self.nodes_live = 1
        self.nodes_free = -1
        self.edges = <Edge *>ff_talloc(256 * sizeof(Edge))
        if self.edges == NULL:
            raise MemoryError()
        memset(self.edges, 0xff, 256 * sizeof(Edge))
        self.edges_cap = 256
        self.subs_free = -1
        if cache_size > 0:
            slots = CACHE_WAYS
            while slots < cache_size:
                slots <<= 1
            # buckets aligned on cache lines: a lookup touches one line
            self.cache = <CacheEntry *>ff_talloc(slots * sizeof(CacheEntry))
            if self.cache == NULL:
                raise MemoryError()
            memset(self.cache, 0, slots * sizeof(CacheEntry))
            self.cache_mask = slots // CACHE_WAYS - 1
            self.fgen = <uint32_t *>calloc(CACHE_FIRST_SLOTS, sizeof(uint32_t))
            self.fcnt = <uint32_t *>calloc(CACHE_FIRST_SLOTS, sizeof(uint32_t))
            if self.fgen == NULL or self.fcnt == NULL:
                raise MemoryError()
        self.cache_slots = slots
        self.cache_max_bytes = cache_max_bytes

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.cache != NULL:
            for i in range(self.cache_slots):
                free(self.cache[i].blk)
            ff_tfree(self.cache)
        free(self.fgen)
        free(self.fcnt)
        if self.subs != NULL:
            for i in range(self.subs_used):
                Py_XDECREF(self.subs[i].value)
                self.subs[i].value = NULL
        ff_tfree(self.subs)
        ff_tfree(self.nodes)
        ff_tfree(self.arena)
        ff_tfree(self.edges)
        free(self.qrefs)
        free(self.qrr)
        free(self.found.data)
        free(self.result.data)

    # -- nodes -------------------------------------------------------------

    cdef int32_t _node_new(self, int32_t parent, uint32_t thash) except -1:
        # capacity is reserved by add() before any mutation
        cdef int32_t nid
        cdef Node *nd
        if self.nodes_free >= 0:
            nid = self.nodes_free
            self.nodes_free = self.nodes[nid].parent
        else:
            nid = <int32_t>self.nodes_used
            self.nodes_used += 1
        nd = &self.nodes[nid]
        nd.parent = parent
        nd.thash = thash
        nd.subs = -1
        nd.nref = 0
        self.nodes[parent].nref += 1
        self.nodes_live += 1
        return nid

    cdef void _node_free(self, int32_t nid) noexcept:
        self.nodes[nid].nref = NODE_FREE
        self.nodes[nid].parent = self.nodes_free
        self.nodes_free = nid
        self.nodes_live -= 1

    # -- edges ---------------------------------------------------------------
    #
    # Linear probing over a table of any size: the home slot is the
    # "fastrange" of a 32-bit key (key * size >> 32), so the table grows by
    # half rather than doubling; deletion shifts entries back (no tombstones).
    # A literal edge points at its token in the arena; a wildcard edge has
    # AOFF_PWC / AOFF_FWC instead and a fixed hash.

    cdef inline Py_ssize_t _home(self, uint32_t parent, uint32_t thash) noexcept:
        cdef uint32_t key = thash ^ (parent * <uint32_t>0x9e3779b1u)
        return <Py_ssize_t>((<uint64_t>key * <uint64_t>self.edges_cap) >> 32)

    cdef inline uint32_t _edge_hash(self, Edge *e) noexcept:
        cdef uint16_t n
        if e.aoff == AOFF_PWC:
            return HASH_PWC
        if e.aoff == AOFF_FWC:
            return HASH_FWC
        memcpy(&n, self.arena + e.aoff, 2)
        return <uint32_t>ff_hash(self.arena + e.aoff + 2, n, _SEED)

    cdef inline int32_t _edge_find(self, int32_t parent, const char *p, uint32_t n,
                            uint32_t h) noexcept:
        cdef Py_ssize_t i = self._home(<uint32_t>parent, h)
        cdef Edge *e
        cdef const char *a
        cdef uint16_t len
        while True:
            e = &self.edges[i]
            if e.parent == <uint32_t>parent and e.aoff < AOFF_WILD:
                a = self.arena + e.aoff
                memcpy(&len, a, 2)
                if len == n and ff_eq(a + 2, p, n):
                    return <int32_t>e.child
            elif e.parent == FF_EMPTY:
                return -1
            i += 1
            if i == self.edges_cap:
                i = 0

    cdef inline int32_t _wild_find(self, int32_t parent, uint32_t kind) noexcept:
        cdef Py_ssize_t i = self._home(<uint32_t>parent,
                                       HASH_PWC if kind == AOFF_PWC else HASH_FWC)
        cdef Edge *e
        while True:
            e = &self.edges[i]
            if e.parent == <uint32_t>parent and e.aoff == kind:
                return <int32_t>e.child
            if e.parent == FF_EMPTY:
                return -1
            i += 1
            if i == self.edges_cap:
                i = 0

    cdef Py_ssize_t _edge_slot_of(self, int32_t child) noexcept:
        """The slot of the edge that leads to ``child``."""
        cdef Node *nd = &self.nodes[child]
        cdef Py_ssize_t i = self._home(<uint32_t>nd.parent, nd.thash)
        while self.edges[i].child != <uint32_t>child or self.edges[i].parent == FF_EMPTY:
            i += 1
            if i == self.edges_cap:
                i = 0
        return i

    cdef void _edge_insert(self, uint32_t parent, uint32_t child, uint32_t aoff,
                           uint32_t thash) noexcept:
        # capacity is reserved by add() before any mutation
        cdef Py_ssize_t i = self._home(parent, thash)
        while self.edges[i].parent != FF_EMPTY:
            i += 1
            if i == self.edges_cap:
                i = 0
        self.edges[i].parent = parent
        self.edges[i].child = child
        self.edges[i].aoff = aoff
        self.edges_live += 1

    cdef void _edge_delete(self, Py_ssize_t i) noexcept:
        cdef Py_ssize_t j = i, k, cap = self.edges_cap
        cdef Edge *e
        while True:
            j += 1
            if j == cap:
                j = 0
            e = &self.edges[j]
            if e.parent == FF_EMPTY:
                break
            k = self._home(e.parent, self._edge_hash(e))
            # move e back to the hole at i unless its home lies in (i, j]
            if ((j - k + cap) % cap) >= ((j - i + cap) % cap):
                self.edges[i] = e[0]
                i = j
        self.edges[i].parent = FF_EMPTY
        self.edges[i].child = FF_EMPTY
        self.edges_live -= 1

    cdef int _edges_reserve(self, Py_ssize_t extra) except -1:
        """Keep the load at or under 3/4 once ``extra`` edges are added."""
        cdef Py_ssize_t old = self.edges_cap, cap = old, i, j
        cdef Edge *old_edges = self.edges
        cdef Edge *e
        if (self.edges_live + extra) * 4 <= old * 3:
            return 0
        while (self.edges_live + extra) * 4 > cap * 3:
            cap += cap // 2
        if cap >= 0xffffffff:
            raise MemoryError('Matcher: edge table full')
        e = <Edge *>ff_talloc(cap * sizeof(Edge))
        if e == NULL:
            raise MemoryError()
        memset(e, 0xff, cap * sizeof(Edge))
        self.edges = e
        self.edges_cap = cap
        for i in range(old):
            if old_edges[i].parent != FF_EMPTY:
                j = self._home(old_edges[i].parent, self._edge_hash(&old_edges[i]))
                while e[j].parent != FF_EMPTY:
                    j += 1
                    if j == cap:
                        j = 0
                e[j] = old_edges[i]
        ff_tfree(old_edges)
        return 0

    cdef void _arena_compact(self) noexcept:
        cdef char *a = <char *>ff_talloc(self.arena_cap)
        cdef Py_ssize_t used = 0, i
        cdef uint16_t n
        cdef Edge *e
        if a == NULL:
            return  # keep the holes; try again on a later removal
        for i in range(self.edges_cap):
            e = &self.edges[i]
            if e.parent != FF_EMPTY and e.aoff < AOFF_WILD:
                memcpy(&n, self.arena + e.aoff, 2)
                memcpy(a + used, self.arena + e.aoff, n + 2)
                e.aoff = <uint32_t>used
                used += n + 2
        ff_tfree(self.arena)
        self.arena = a
        self.arena_used = used
        self.arena_holes = 0

    # -- queue groups --------------------------------------------------------

    cdef int32_t _qid(self, object queue) except -2:
        cdef int32_t qid
        cdef Py_ssize_t cap
        if queue is None:
            return -1
        if not isinstance(queue, str):
            raise TypeError('queue must be str or None, not {}'.format(type(queue).__name__))
        if not queue or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7f for c in queue):
            raise ValueError(
                'invalid queue group {!r}: must be non-empty, without whitespace or '
                'control characters'.format(queue))
        qid = self.qids.get(queue, -1)
        if qid >= 0:
            self.qrefs[qid] += 1
            return qid
        if self.qfree:
            qid = self.qfree.pop()
            self.qnames[qid] = queue
        else:
            qid = len(self.qnames)
            if qid >= self.qcap:
                cap = self.qcap
                _grow(<void **>&self.qrefs, &cap, qid + 1, sizeof(uint32_t), 16)
                cap = self.qcap
                _grow(<void **>&self.qrr, &cap, qid + 1, sizeof(uint32_t), 16)
                self.qcap = cap
            self.qnames.append(queue)
        self.qids[queue] = qid
        self.qrefs[qid] = 1
        self.qrr[qid] = 0
        return qid

    # -- subscriptions -------------------------------------------------------

    def add(self, pattern, value, queue=None):
        """Subscribe ``value`` to ``pattern``; returns an int handle."""
        cdef const char *p
        cdef Py_ssize_t n
        cdef Parsed ps
        cdef int i
        cdef int32_t node = 0, child, sid, qid, head, tail
        cdef Tok *t
        cdef uint16_t len
        cdef uint32_t bit, kind
        cdef Sub *s
        cdef PTok pt[MAX_TOKENS]
        as_utf8(pattern, &p, &n, True)
        parse_subject(p, n, &ps, True, pattern)
        # Reserve every capacity first: once the trie is touched nothing
        # below can fail, so a MemoryError leaves the matcher as it was.
        _grow(<void **>&self.nodes, &self.nodes_cap, self.nodes_used + ps.ntok,
              sizeof(Node), 256, True)
        _grow(<void **>&self.arena, &self.arena_cap, self.arena_used + n + 2 * ps.ntok,
              1, 4096, True)
        _grow(<void **>&self.subs, &self.subs_cap, self.subs_used + 1, sizeof(Sub), 256, True)
        self._edges_reserve(ps.ntok)
        qid = self._qid(queue)

        for i in range(ps.ntok):
            t = &ps.toks[i]
            pt[i].p = ps.p + t.off
            pt[i].len = t.len
            pt[i].kind = t.kind
            if t.kind == TK_LITERAL:
                child = self._edge_find(node, ps.p + t.off, t.len, t.hash)
                if child < 0:
                    child = self._node_new(node, t.hash)
                    len = <uint16_t>t.len
                    memcpy(self.arena + self.arena_used, &len, 2)
                    memcpy(self.arena + self.arena_used + 2, ps.p + t.off, t.len)
                    self._edge_insert(<uint32_t>node, <uint32_t>child,
                                      <uint32_t>self.arena_used, t.hash)
                    self.arena_used += t.len + 2
            else:
                if t.kind == TK_PWC:
                    bit, kind = NODE_HAS_PWC, AOFF_PWC
                else:
                    bit, kind = NODE_HAS_FWC, AOFF_FWC
                if self.nodes[node].nref & bit:
                    child = self._wild_find(node, kind)
                else:
                    child = self._node_new(node, HASH_PWC if kind == AOFF_PWC else HASH_FWC)
                    self._edge_insert(<uint32_t>node, <uint32_t>child, kind,
                                      self.nodes[child].thash)
                    self.nodes[node].nref |= bit
            node = child

        if self.subs_free >= 0:
            sid = self.subs_free
            self.subs_free = self.subs[sid].next
        else:
            sid = <int32_t>self.subs_used
            self.subs_used += 1
            self.subs[sid].gen = 0
        s = &self.subs[sid]
        s.gen += 1
        s.node = node
        s.queue = qid
        Py_INCREF(value)
        s.value = <PyObject *>value
        head = self.nodes[node].subs
        if head < 0:
            s.next = sid
            s.prev = sid
            self.nodes[node].subs = sid
        else:
            tail = self.subs[head].prev
            s.prev = tail
            s.next = head
            self.subs[tail].next = sid
            self.subs[head].prev = sid
        self.nodes[node].nref += 1
        self.subs_live += 1
        self.n_inserts += 1
        self._cache_invalidate(pt, ps.ntok)
        if FASTFLOW_DEBUG and self.subs_live < 2000:
            self._check()
        return (<int64_t>s.gen << 32) | sid

    cdef int32_t _slot_of(self, object handle) except -1:
        cdef int64_t h
        cdef int32_t sid
        if not PyLong_Check(handle):
            raise KeyError('unknown subscription handle {!r}'.format(handle))
        try:
            h = handle
        except OverflowError:
            raise KeyError('unknown subscription handle {!r}'.format(handle)) from None
        if h < 0 or <uint32_t>h >= <uint64_t>self.subs_used:
            raise KeyError('unknown subscription handle {!r}'.format(handle))
        sid = <int32_t><uint32_t>h
        if self.subs[sid].value == NULL or self.subs[sid].gen != <uint32_t>(h >> 32):
            raise KeyError('unknown subscription handle {!r}'.format(handle))
        return sid

    cdef int _pattern_of(self, int32_t node, PTok *pt) noexcept:
        """Rebuild the pattern of ``node`` from the edges above it; returns
        the number of tokens (pointers into the arena)."""
        cdef int ntok = 0, i
        cdef int32_t up = node
        cdef Edge *e
        cdef uint16_t len
        while up > 0:
            ntok += 1
            up = self.nodes[up].parent
        i = ntok
        up = node
        while up > 0:
            i -= 1
            e = &self.edges[self._edge_slot_of(up)]
            if e.aoff == AOFF_PWC:
                pt[i].kind = TK_PWC
            elif e.aoff == AOFF_FWC:
                pt[i].kind = TK_FWC
            else:
                memcpy(&len, self.arena + e.aoff, 2)
                pt[i].kind = TK_LITERAL
                pt[i].p = self.arena + e.aoff + 2
                pt[i].len = len
            up = self.nodes[up].parent
        return ntok

    def remove(self, handle):
        """Remove the subscription ``handle`` (KeyError if unknown or removed)."""
        cdef int32_t sid = self._slot_of(handle)
        cdef PyObject *value = self._remove_sid(sid, True)
        if FASTFLOW_DEBUG and self.subs_live < 2000:
            self._check()
        # last: dropping the value may run arbitrary Python code
        Py_DECREF(<object>value)

    def remove_many(self, handles):
        """Remove every subscription of ``handles`` that is still live
        (unknown or removed handles are skipped); returns how many were
        removed.  From BULK_REMOVE_FLUSH handles on, the result cache is
        invalidated once for the whole batch instead of once per pattern."""
        cdef list values = []
        cdef int32_t sid
        cdef bint each
        cdef Py_ssize_t n = 0
        cdef PyObject *v
        handles = list(handles)
        each = len(handles) < BULK_REMOVE_FLUSH
        if not each:
            self._cache_flush()
        for handle in handles:
            try:
                sid = self._slot_of(handle)
            except KeyError:
                continue
            v = self._remove_sid(sid, each)
            values.append(<object>v)
            Py_DECREF(<object>v)        # the list holds it now
            n += 1
        if FASTFLOW_DEBUG and self.subs_live < 2000:
            self._check()
        del values                      # last: may run arbitrary Python code
        return n

    cdef PyObject *_remove_sid(self, int32_t sid, bint invalidate) noexcept:
        """Unlink subscription ``sid``; returns its value, whose reference
        the caller now owns."""
        cdef Sub *s = &self.subs[sid]
        cdef int32_t node = s.node, parent, qid = s.queue
        cdef Node *nd
        cdef PyObject *value = s.value
        cdef PTok pt[MAX_TOKENS]
        cdef Py_ssize_t slot
        cdef Edge *e
        cdef uint16_t len
        if invalidate and self.cache_valid:
            self._cache_invalidate(pt, self._pattern_of(node, pt))
        # unlink from the node's list
        nd = &self.nodes[node]
        if s.next == sid:
            nd.subs = -1
        else:
            self.subs[s.prev].next = s.next
            self.subs[s.next].prev = s.prev
            if nd.subs == sid:
                nd.subs = s.next
        s.value = NULL
        s.next = self.subs_free
        self.subs_free = sid
        self.subs_live -= 1
        nd.nref -= 1
        # prune empty nodes upwards
        while node > 0 and (self.nodes[node].nref & NODE_COUNT) == 0:
            parent = self.nodes[node].parent
            slot = self._edge_slot_of(node)
            e = &self.edges[slot]
            if e.aoff == AOFF_PWC:
                self.nodes[parent].nref &= ~NODE_HAS_PWC
            elif e.aoff == AOFF_FWC:
                self.nodes[parent].nref &= ~NODE_HAS_FWC
            else:
                memcpy(&len, self.arena + e.aoff, 2)
                self.arena_holes += len + 2
            self._edge_delete(slot)
            self._node_free(node)
            self.nodes[parent].nref -= 1
            node = parent
        if self.arena_holes > 65536 and self.arena_holes * 2 > self.arena_used:
            self._arena_compact()
        if qid >= 0:
            self.qrefs[qid] -= 1
            if self.qrefs[qid] == 0:
                self._qid_free(qid)
        self.n_removes += 1
        return value

    cdef void _qid_free(self, int32_t qid) noexcept:
        # the name stays referenced by qnames until the slot is reused
        try:
            del self.qids[self.qnames[qid]]
            self.qnames[qid] = None
            self.qfree.append(qid)
        except BaseException:           # MemoryError only: the id leaks
            pass

    def __len__(self):
        return self.subs_live

    def __contains__(self, handle):
        try:
            self._slot_of(handle)
        except KeyError:
            return False
        return True

    # -- matching ------------------------------------------------------------

    cdef inline int _push_subs(self, int32_t node) except -1:
        cdef int32_t head = self.nodes[node].subs, sid
        if head >= 0:
            sid = head
            while True:
                _i32_push(&self.found, sid)
                sid = self.subs[sid].next
                if sid == head:
                    break
        return 0

    cdef int _collect(self, int32_t node, Parsed *ps, int level) except -1:
        cdef uint32_t nref
        cdef int32_t child
        cdef Tok *t
        cdef bint private = ps.p[0] == b'$'
        while level < ps.ntok:
            nref = self.nodes[node].nref
            if nref & NODE_WILD and (level or not private):
                if nref & NODE_HAS_FWC:
                    self._push_subs(self._wild_find(node, AOFF_FWC))
                if nref & NODE_HAS_PWC:
                    self._collect(self._wild_find(node, AOFF_PWC), ps, level + 1)
            t = &ps.toks[level]
            node = self._edge_find(node, ps.p + t.off, t.len, t.hash)
            if node < 0:
                return 0
            level += 1
        self._push_subs(node)
        return 0

    cdef int _build_result(self) except -1:
        """found (sub ids) -> result (handles): nplain, ngroups, plain...,
        then per group: qid, n, members..."""
        cdef Py_ssize_t i, nq = 0, nf = self.found.n, j, start
        cdef int32_t sid, qid
        cdef uint64_t *keys
        cdef I64Vec *r = &self.result
        cdef int32_t *f = self.found.data
        r.n = 0
        _i64_reserve(r, nf + 2)
        r.data[0] = 0
        r.data[1] = 0
        r.n = 2
        for i in range(nf):
            sid = f[i]
            if self.subs[sid].queue < 0:
                r.data[r.n] = (<int64_t>self.subs[sid].gen << 32) | sid
                r.n += 1
            else:
                nq += 1
        r.data[0] = r.n - 2
        if nq == 0:
            return 0
        # group queue members by queue id, keeping traversal order in a group
        keys = <uint64_t *>malloc(nq * sizeof(uint64_t))
        if keys == NULL:
            raise MemoryError()
        j = 0
        for i in range(nf):
            qid = self.subs[f[i]].queue
            if qid >= 0:
                keys[j] = (<uint64_t>qid << 32) | <uint64_t>i
                j += 1
        if nq > 1:
            qsort(keys, nq, sizeof(uint64_t), ff_cmp_u64)
        i = 0
        try:
            while i < nq:
                qid = <int32_t>(keys[i] >> 32)
                _i64_push(r, qid)
                start = r.n
                _i64_push(r, 0)
                while i < nq and <int32_t>(keys[i] >> 32) == qid:
                    sid = f[<uint32_t>keys[i]]
                    _i64_push(r, (<int64_t>self.subs[sid].gen << 32) | sid)
                    i += 1
                r.data[start] = r.n - start - 1
                r.data[1] += 1
        finally:
            free(keys)
        return 0

    cdef int _match_res(self, object subject, const char *p, Py_ssize_t n,
                        uint64_t h, const int64_t **res) except -1:
        """Point ``res`` at the result for subject ``p[:n]`` (``h`` is its
        hash when the cache is on): a cached one, or a fresh one in
        self.result, then cached.  Valid until the next call."""
        cdef CacheEntry *e
        cdef CacheBlock *blk
        cdef Parsed ps
        cdef size_t size
        cdef int k
        self.n_matches += 1
        if self.cache_slots:
            e = self._cache_find(h, p, n)
            if e != NULL:
                self.n_hits += 1
                res[0] = _blk_res(e.blk)
                return 0
        self.n_misses += 1
        parse_subject(p, n, &ps, False, subject)
        self.found.n = 0
        self._collect(0, &ps, 0)
        self._build_result()
        res[0] = self.result.data
        if not self.cache_slots:
            return 0
        if self.result.n > CACHE_MAX_RESULT:
            self.n_cache_uncacheable += 1
            return 0
        size = sizeof(CacheBlock) + self.result.n * sizeof(int64_t) + n
        if self.cache_bytes + <Py_ssize_t>size > self.cache_max_bytes:
            self.cache_clear()
            self.n_cache_flushes += 1
            if <Py_ssize_t>size > self.cache_max_bytes:
                self.n_cache_uncacheable += 1
                return 0
        blk = <CacheBlock *>malloc(size)
        if blk == NULL:
            return 0  # not caching is always correct
        blk.len = <uint32_t>n
        blk.nres = <uint32_t>self.result.n
        memcpy(_blk_res(blk), self.result.data, self.result.n * sizeof(int64_t))
        memcpy(_blk_subject(blk), p, n)
        # new entries go to the front of their bucket; a full bucket loses a
        # stale entry, else its last (hits move entries forward, _cache_find)
        blk.ggen = self.cgen
        blk.fslot = ps.toks[0].hash & (CACHE_FIRST_SLOTS - 1)
        blk.fgen = self.fgen[blk.fslot]
        blk.pad = 0
        e = &self.cache[(h & self.cache_mask) * CACHE_WAYS]
        k = 0
        while k < CACHE_WAYS - 1 and e[k].blk != NULL:
            k += 1
        if e[k].blk != NULL:
            # a full bucket: a stale entry goes first, else the last one
            k = 0
            while k < CACHE_WAYS - 1 and self._blk_valid(e[k].blk):
                k += 1
            if self._blk_valid(e[k].blk):
                self.n_cache_evictions += 1
            self._cache_free_entry(&e[k])
        if k:
            memmove(&e[1], &e[0], k * sizeof(CacheEntry))
        e.blk = blk
        e.hash = h & HASH_MASK
        self.cache_count += 1
        self.cache_valid += 1
        self.fcnt[blk.fslot] += 1
        self.cache_bytes += size
        self.n_cache_inserts += 1
        return 0

    cdef object _values(self, const int64_t *res):
        cdef Py_ssize_t nplain = res[0], ngroups = res[1], i, j, cnt
        cdef int32_t qid
        cdef object out = PyList_New(nplain + ngroups)
        cdef PyObject *v
        for i in range(nplain):
            v = self.subs[<uint32_t>res[2 + i]].value
            Py_INCREF(<object>v)
            PyList_SET_ITEM(out, i, <object>v)
        j = 2 + nplain
        for i in range(ngroups):
            qid = <int32_t>res[j]
            cnt = res[j + 1]
            v = self.subs[<uint32_t>res[j + 2 + self.qrr[qid] % <uint32_t>cnt]].value
            self.qrr[qid] += 1
            Py_INCREF(<object>v)
            PyList_SET_ITEM(out, nplain + i, <object>v)
            j += 2 + cnt
        return out

    cdef int _handles(self, const int64_t *res, Int64Array out) except -1:
        cdef Py_ssize_t nplain = res[0], ngroups = res[1], i, j, cnt
        cdef int32_t qid
        if out.n + nplain + ngroups > out.cap:
            out.reserve(nplain + ngroups)
        memcpy(out.data + out.n, res + 2, nplain * sizeof(int64_t))
        out.n += nplain
        j = 2 + nplain
        for i in range(ngroups):
            qid = <int32_t>res[j]
            cnt = res[j + 1]
            out.data[out.n] = res[j + 2 + self.qrr[qid] % <uint32_t>cnt]
            out.n += 1
            self.qrr[qid] += 1
            j += 2 + cnt
        return 0

    @cython.always_allow_keywords(False)  # METH_O: the cheapest call
    def match(self, subject):
        """Values subscribed to ``subject``: every plain subscriber, and one
        member of each queue group."""
        cdef const char *p
        cdef Py_ssize_t n
        cdef const int64_t *res
        as_utf8(subject, &p, &n, False)
        self._match_res(subject, p, n, ff_hash(p, n, _SEED) if self.cache_slots else 0, &res)
        return self._values(res)

    def match_handles(self, subject):
        """Like ``match`` but returns the handles."""
        cdef const char *p
        cdef Py_ssize_t n
        cdef const int64_t *res
        cdef Int64Array out = Int64Array.new(8)
        as_utf8(subject, &p, &n, False)
        self._match_res(subject, p, n, ff_hash(p, n, _SEED) if self.cache_slots else 0, &res)
        self._handles(res, out)
        return out.tolist()

    def match_batch(self, subjects):
        """Match a list or tuple of subjects in one call, in C end to end.

        Returns a ``MatchBatch`` whose ``offsets`` and ``handles`` buffers hold
        the matched handles of every subject (CSR layout).  An invalid
        subject raises ``SubjectError`` naming it and its index.

        With the cache on, the loop is software-pipelined: subject ``i + 16``
        is prefetched, subject ``i + 8`` is hashed and its cache bucket
        prefetched, and the cached block of subject ``i + 4`` is prefetched,
        so that the memory latency of a large, skewed subject set overlaps
        the work on the current one.
        """
        cdef Py_ssize_t count, i, k, n
        cdef const char *p
        cdef const int64_t *res
        cdef PyObject **items
        cdef object s
        cdef MatchBatch batch
        cdef Int64Array offsets, handles
        cdef BatchSlot ring[BATCH_RING]
        cdef BatchSlot *slot
        cdef CacheEntry *b
        cdef CacheEntry *e
        cdef bint cached = self.cache_slots != 0
        if type(subjects) is not list and type(subjects) is not tuple:
            subjects = list(subjects)
        seq = PySequence_Fast(subjects, 'subjects must be a sequence')
        count = PySequence_Fast_GET_SIZE(seq)
        items = PySequence_Fast_ITEMS(seq)
        batch = MatchBatch.__new__(MatchBatch)
        batch.matcher = self
        offsets = batch.offsets = Int64Array.new(count + 1)
        handles = batch.handles = Int64Array.new(count + count // 2 + 16)
        offsets.data[0] = 0
        offsets.n = 1
        for i in range(-BATCH_AHEAD_OBJ, count):
            if cached:
                k = i + BATCH_AHEAD_OBJ
                if k < count:
                    ff_prefetch(<const char *>items[k])
                    ff_prefetch(<const char *>items[k] + 64)
                k = i + BATCH_AHEAD_HASH
                if 0 <= k < count:
                    slot = &ring[k & (BATCH_RING - 1)]
                    if _as_utf8_fast(<object>items[k], &slot.p, &slot.n):
                        slot.h = ff_hash(slot.p, slot.n, _SEED)
                        slot.ok = True
                        ff_prefetch(<const char *>&self.cache[(slot.h & self.cache_mask) * CACHE_WAYS])
                    else:
                        slot.ok = False
                k = i + BATCH_AHEAD_BLOCK
                if 0 <= k < count:
                    slot = &ring[k & (BATCH_RING - 1)]
                    if slot.ok:
                        b = &self.cache[(slot.h & self.cache_mask) * CACHE_WAYS]
                        if ((b[0].hash ^ slot.h) & HASH_MASK) == 0:
                            ff_prefetch(<const char *>b[0].blk)
                        elif ((b[1].hash ^ slot.h) & HASH_MASK) == 0:
                            ff_prefetch(<const char *>b[1].blk)
            if i < 0:
                continue
            slot = &ring[i & (BATCH_RING - 1)]
            if cached and slot.ok:
                # the hit path, inline: one bucket, one block, one copy
                e = self._cache_find(slot.h, slot.p, slot.n)
                if e != NULL:
                    self.n_matches += 1
                    self.n_hits += 1
                    res = _blk_res(e.blk)
                    if res[1] == 0:
                        k = res[0]
                        if handles.n + k > handles.cap:
                            handles.reserve(k)
                        memcpy(handles.data + handles.n, res + 2, k * sizeof(int64_t))
                        handles.n += k
                    else:
                        self._handles(res, handles)
                    offsets.data[i + 1] = handles.n
                    continue
                p = slot.p
                n = slot.n
            else:
                as_utf8(<object>items[i], &p, &n, False)
                slot.h = ff_hash(p, n, _SEED) if cached else 0
            try:
                self._match_res(<object>items[i], p, n, slot.h, &res)
            except SubjectError as exc:
                raise SubjectError('{} (subjects[{}])'.format(exc, i)) from None
            self._handles(res, handles)
            offsets.data[i + 1] = handles.n
        offsets.n = count + 1
        return batch

    # -- the result cache ----------------------------------------------------

    cdef inline CacheEntry *_cache_find(self, uint64_t h, const char *p,
                                        Py_ssize_t n) noexcept:
        cdef CacheEntry *b = &self.cache[(h & self.cache_mask) * CACHE_WAYS]
        cdef CacheEntry tmp
        cdef int k
        for k in range(CACHE_WAYS):
            if ((b[k].hash ^ h) & HASH_MASK) == 0 and b[k].blk != NULL and b[k].blk.len == n \
                    and ff_eq(_blk_subject(b[k].blk), p, n):
                if not self._blk_valid(b[k].blk):
                    self._cache_free_entry(&b[k])   # stale: a pattern changed since
                    return NULL
                if k:
                    # transpose towards the front: hot subjects settle first
                    tmp = b[k - 1]
                    b[k - 1] = b[k]
                    b[k] = tmp
                    k -= 1
                return &b[k]
        return NULL

    cdef inline bint _blk_valid(self, CacheBlock *b) noexcept:
        return b.ggen == self.cgen and b.fgen == self.fgen[b.fslot]

    cdef void _cache_free_entry(self, CacheEntry *e) noexcept:
        if self._blk_valid(e.blk):
            self.cache_valid -= 1
            self.fcnt[e.blk.fslot] -= 1
        self.cache_bytes -= sizeof(CacheBlock) + e.blk.nres * sizeof(int64_t) + e.blk.len
        self.cache_count -= 1
        free(e.blk)
        e.blk = NULL
        e.hash = 0

    def cache_clear(self):
        """Drop every cached result (and free the stale ones)."""
        self._cache_clear_all()

    cdef void _cache_clear_all(self) noexcept:
        cdef Py_ssize_t i
        for i in range(self.cache_slots):
            if self.cache[i].blk != NULL:
                self._cache_free_entry(&self.cache[i])

    cdef void _cache_invalidate(self, PTok *pt, int ntok) noexcept:
        """Drop the cached results of subjects that pattern ``pt`` matches."""
        cdef Py_ssize_t i, len, k, pos, end
        cdef int j
        cdef bint literal = True, ok
        cdef char buf[MAX_SUBJECT_LEN]
        cdef CacheEntry *e
        cdef const char *s
        cdef uint64_t tag
        if self.cache_valid == 0:
            return
        for j in range(ntok):
            if pt[j].kind != TK_LITERAL:
                literal = False
                break
        if literal:
            len = 0
            for j in range(ntok):
                if j:
                    buf[len] = b'.'
                    len += 1
                memcpy(buf + len, pt[j].p, pt[j].len)
                len += pt[j].len
            e = self._cache_find(ff_hash(buf, len, _SEED), buf, len)
            if e != NULL:
                self._cache_free_entry(e)
                self.n_cache_invalidations += 1
            return
        if pt[0].kind != TK_LITERAL:
            # a leading wildcard can touch any subject
            self._cache_flush()
            return
        # every subject starting with the pattern's first token goes stale
        self._cache_bump_first(<uint32_t>ff_hash(pt[0].p, pt[0].len, _SEED)
                               & (CACHE_FIRST_SLOTS - 1))

    cdef void _cache_bump_first(self, uint32_t fslot) noexcept:
        """Make every entry of first-token slot ``fslot`` stale, in O(1)."""
        cdef uint32_t n = self.fcnt[fslot]
        if n == 0:
            return
        if self.fgen[fslot] == 0xffffffffu:
            # a wrapping counter could revive entries 2**32 bumps old
            self._cache_clear_all()
            self.fgen[fslot] = 0
        else:
            self.fgen[fslot] += 1
            self.fcnt[fslot] = 0
            self.cache_valid -= n
        self.n_cache_invalidations += n

    cdef void _cache_flush(self) noexcept:
        """Make every entry stale, in O(CACHE_FIRST_SLOTS) whatever the cache
        holds (the blocks are freed as they are met or evicted)."""
        if self.cache_valid == 0:
            return
        self.n_cache_flushes += 1
        if self.cgen == 0xffffffffu:
            self._cache_clear_all()
            self.cgen = 0
            return
        self.cgen += 1
        self.cache_valid = 0
        memset(self.fcnt, 0, CACHE_FIRST_SLOTS * sizeof(uint32_t))

    # -- introspection -------------------------------------------------------

    @property
    def cache_size(self):
        return self.cache_slots

    def memory_bytes(self):
        """Bytes allocated in C by the matcher (tables, arena, cache)."""
        return (self.nodes_cap * sizeof(Node) + self.arena_cap
                + self.edges_cap * sizeof(Edge) + self.subs_cap * sizeof(Sub)
                + 2 * self.qcap * sizeof(uint32_t)
                + self.cache_slots * sizeof(CacheEntry) + self.cache_bytes
                + (2 * CACHE_FIRST_SLOTS * sizeof(uint32_t) if self.cache_slots else 0)
                + self.found.cap * sizeof(int32_t) + self.result.cap * sizeof(int64_t))

    def stats(self):
        """Counters and sizes, as one dict."""
        return {
            'subscriptions': self.subs_live,
            'nodes': self.nodes_live,
            'edges': self.edges_live,
            'arena_bytes': self.arena_used - self.arena_holes,
            'queue_groups': len(self.qids),
            'matches': self.n_matches,
            'inserts': self.n_inserts,
            'removes': self.n_removes,
            'cache_size': self.cache_slots,
            'cache_entries': self.cache_valid,
            'cache_stale': self.cache_count - self.cache_valid,
            'cache_bytes': self.cache_bytes,
            'cache_hits': self.n_hits,
            'cache_misses': self.n_misses,
            'cache_inserts': self.n_cache_inserts,
            'cache_evictions': self.n_cache_evictions,
            'cache_invalidations': self.n_cache_invalidations,
            'cache_flushes': self.n_cache_flushes,
            'cache_uncacheable': self.n_cache_uncacheable,
            'memory_bytes': self.memory_bytes(),
        }

    def _check(self):
        """Check every internal invariant; raise FastflowError naming the first
        broken one.  O(size of the matcher): for tests and debug builds."""
        cdef Py_ssize_t i, k
        cdef int32_t sid, head, cnt, child
        cdef Node *nd
        cdef Edge *e
        cdef CacheEntry *ce
        cdef Parsed ps
        cdef uint16_t len
        cdef uint64_t h
        nref = [0] * self.nodes_used
        wild = [0] * self.nodes_used
        live_nodes = 0
        for i in range(self.nodes_used):
            nd = &self.nodes[i]
            if nd.nref == NODE_FREE:
                continue
            live_nodes += 1
            if i and nd.parent < 0:
                raise FastflowError('Matcher._check: node {} has no parent'.format(i))
            head = nd.subs
            if head >= 0:
                sid = head
                cnt = 0
                while True:
                    if self.subs[sid].value == NULL or self.subs[sid].node != i:
                        raise FastflowError('Matcher._check: node {} lists sub {} '
                                            'of another node'.format(i, sid))
                    if self.subs[self.subs[sid].next].prev != sid:
                        raise FastflowError('Matcher._check: broken sub list at {}'.format(sid))
                    nref[i] += 1
                    cnt += 1
                    if cnt > self.subs_used:
                        raise FastflowError('Matcher._check: sub list of node {} loops'.format(i))
                    sid = self.subs[sid].next
                    if sid == head:
                        break
        if live_nodes != self.nodes_live:
            raise FastflowError('Matcher._check: {} live nodes, counter says {}'.format(
                live_nodes, self.nodes_live))
        nedges = 0
        holes = self.arena_used
        for i in range(self.edges_cap):
            e = &self.edges[i]
            if e.parent == FF_EMPTY:
                continue
            nedges += 1
            child = <int32_t>e.child
            if self.nodes[child].parent != <int32_t>e.parent:
                raise FastflowError('Matcher._check: edge {} -> {} disagrees with the '
                                    'child node'.format(e.parent, e.child))
            if self.nodes[child].thash != self._edge_hash(e):
                raise FastflowError('Matcher._check: edge {} -> {} hash mismatch'.format(
                    e.parent, e.child))
            if e.aoff == AOFF_PWC:
                wild[e.parent] |= NODE_HAS_PWC
                found = self._wild_find(e.parent, AOFF_PWC)
            elif e.aoff == AOFF_FWC:
                wild[e.parent] |= NODE_HAS_FWC
                found = self._wild_find(e.parent, AOFF_FWC)
            else:
                memcpy(&len, self.arena + e.aoff, 2)
                holes -= len + 2
                found = self._edge_find(e.parent, self.arena + e.aoff + 2, len,
                                        self._edge_hash(e))
            if found != child:
                raise FastflowError('Matcher._check: edge {} -> {} unreachable by '
                                    'probing'.format(e.parent, e.child))
            if self._edge_slot_of(child) != i:
                raise FastflowError('Matcher._check: edge of node {} not found '
                                    'from the node'.format(child))
            nref[e.parent] += 1
        if nedges != self.edges_live:
            raise FastflowError('Matcher._check: {} edges, counter says {}'.format(
                nedges, self.edges_live))
        if holes != self.arena_holes:
            raise FastflowError('Matcher._check: arena holes {}, counter says {}'.format(
                holes, self.arena_holes))
        for i in range(self.nodes_used):
            nd = &self.nodes[i]
            if nd.nref == NODE_FREE:
                continue
            if (nd.nref & NODE_COUNT) != nref[i]:
                raise FastflowError('Matcher._check: node {} nref {} but has {} '
                                    'children and subscriptions'.format(
                                        i, nd.nref & NODE_COUNT, nref[i]))
            if (nd.nref & NODE_WILD) != wild[i]:
                raise FastflowError('Matcher._check: node {} wildcard flags {:x}, its '
                                    'edges say {:x}'.format(i, nd.nref & NODE_WILD, wild[i]))
            if i and nref[i] == 0:
                raise FastflowError('Matcher._check: empty node {} was not pruned'.format(i))
        live_subs = 0
        for i in range(self.subs_used):
            if self.subs[i].value != NULL:
                live_subs += 1
        if live_subs != self.subs_live:
            raise FastflowError('Matcher._check: {} live subscriptions, counter says '
                                '{}'.format(live_subs, self.subs_live))
        # every valid cached result equals a fresh computation
        cached = 0
        valid = 0
        fcnt = {}
        for i in range(self.cache_slots):
            ce = &self.cache[i]
            if ce.blk == NULL:
                continue
            cached += 1
            subject = _blk_subject(ce.blk)[:ce.blk.len]
            h = ff_hash(_blk_subject(ce.blk), ce.blk.len, _SEED)
            parse_subject(_blk_subject(ce.blk), ce.blk.len, &ps, False, subject)
            if ce.hash != (h & HASH_MASK) or \
                    <uint64_t>(h & self.cache_mask) != <uint64_t>(i // CACHE_WAYS) or \
                    ce.blk.fslot != (ps.toks[0].hash & (CACHE_FIRST_SLOTS - 1)):
                raise FastflowError('Matcher._check: cache entry {!r} in the wrong '
                                    'slot or mistagged'.format(subject))
            if not self._blk_valid(ce.blk):
                continue
            valid += 1
            fcnt[ce.blk.fslot] = fcnt.get(ce.blk.fslot, 0) + 1
            self.found.n = 0
            self._collect(0, &ps, 0)
            self._build_result()
            if self.result.n != ce.blk.nres or memcmp(self.result.data, _blk_res(ce.blk),
                                                      ce.blk.nres * sizeof(int64_t)) != 0:
                raise FastflowError('Matcher._check: stale cached result for '
                                    '{!r}'.format(subject))
        if cached != self.cache_count:
            raise FastflowError('Matcher._check: {} cache entries, counter says {}'.format(
                cached, self.cache_count))
        if valid != self.cache_valid:
            raise FastflowError('Matcher._check: {} valid cache entries, counter says '
                                '{}'.format(valid, self.cache_valid))
        for i in range(CACHE_FIRST_SLOTS if self.cache_slots else 0):
            if self.fcnt[i] != fcnt.get(i, 0):
                raise FastflowError('Matcher._check: first-token slot {} counts {} valid '
                                    'entries, holds {}'.format(i, self.fcnt[i], fcnt.get(i, 0)))
