# The subscription index (included by core.pyx after event.pyx): which
# subscriptions may take each event of a stream, for the subscription
# manager (fastflow/subscriptions/), read straight from the stored records.
#
# A subscription is a *handle* (a small int the caller assigns) and the
# *keys* one of which every event it takes meets (docs/subscriptions.md):
#   ("exact", attr, value)    the attribute is the value
#   ("prefix", attr, value)   the attribute starts with the value
#   ("routing", pattern)      the routing subject matches the pattern
# for attr in type, source, subject; or no keys (None): every event.
#
# Layout: the exact and prefix keys are one open-addressing table keyed by
# (tag, value bytes): tag = the attribute (SI_TYPE ...), plus SI_ATTRS for a prefix, each entry holding
# its handles.  A prefix lookup asks the table once per prefix length in
# use for the attribute (sorted, so it stops at the value's length): few
# lengths in practice, and each probe is one hash of a short string.  The
# routing patterns live in a Matcher whose values are the handles.  An
# event's candidates are deduplicated by a stamp per handle.
#
# Strings are compared as UTF-8 bytes: for valid UTF-8 (a stored record's
# strings are checked when stored) a byte prefix is a character prefix.

from fastflow import _attrs as _si_attrs

cdef tuple _SI_ATTR_NAMES = ('type', 'source', 'subject')


cdef inline Py_ssize_t _si_mp_skip(const uint8_t *b, Py_ssize_t i, Py_ssize_t n,
                                   int depth) noexcept:
    """Where the msgpack value at ``b[i]`` ends; -1 if it overruns
    ``b[:n]``, nests deeper than SI_MP_DEPTH or is no msgpack."""
    cdef uint8_t c
    cdef Py_ssize_t ln = -1, count = -1, k
    if i >= n or depth > SI_MP_DEPTH:
        return -1
    c = b[i]
    i += 1
    if c <= 0x7f or c >= 0xe0 or c == 0xc0 or c == 0xc2 or c == 0xc3:
        return i                        # fixint, negative fixint, nil, false, true
    if 0xa0 <= c <= 0xbf:
        ln = c & 0x1f
    elif 0x80 <= c <= 0x8f:
        count = 2 * (c & 0x0f)
    elif 0x90 <= c <= 0x9f:
        count = c & 0x0f
    elif c == 0xc4 or c == 0xd9:
        ln = _mp_size(b, &i, n, 1)
    elif c == 0xc5 or c == 0xda:
        ln = _mp_size(b, &i, n, 2)
    elif c == 0xc6 or c == 0xdb:
        ln = _mp_size(b, &i, n, 4)
    elif c == 0xcc or c == 0xd0:
        ln = 1
    elif c == 0xcd or c == 0xd1:
        ln = 2
    elif c == 0xca or c == 0xce or c == 0xd2:
        ln = 4
    elif c == 0xcb or c == 0xcf or c == 0xd3:
        ln = 8
    elif 0xd4 <= c <= 0xd8:             # fixext 1, 2, 4, 8, 16: a type byte and the data
        ln = 1 + (1 << (c - 0xd4))
    elif 0xc7 <= c <= 0xc9:             # ext 8, 16, 32
        ln = _mp_size(b, &i, n, 1 if c == 0xc7 else (2 if c == 0xc8 else 4))
        if ln >= 0:
            ln += 1
    elif c == 0xdc or c == 0xdd:
        count = _mp_size(b, &i, n, 2 if c == 0xdc else 4)
        if count < 0:
            return -1
    elif c == 0xde or c == 0xdf:
        count = _mp_size(b, &i, n, 2 if c == 0xde else 4)
        if count < 0:
            return -1
        count *= 2
    else:
        return -1                       # 0xc1: never used
    if count >= 0:
        for k in range(count):
            i = _si_mp_skip(b, i, n, depth + 1)
            if i < 0:
                return -1
        return i
    if ln < 0 or ln > n - i:
        return -1
    return i + ln


cdef Py_ssize_t _si_rest_subject(const char *p, Py_ssize_t n, const char **out) noexcept:
    """The length of the str value of ``subject`` in the msgpack map
    ``p[:n]`` (a record's rest), ``out[0]`` set to its UTF-8 bytes; of the
    last one if several, as a decoder keeps it.  -1: no subject, or not a
    str; -2: not read here (no map, or more than this reader skips): the
    caller decodes the block."""
    cdef const uint8_t *b = <const uint8_t *>p
    cdef Py_ssize_t i = 0, k, ln, count, j, found = -1
    cdef uint8_t c
    if n < 1:
        return -2
    c = b[0]
    if 0x80 <= c <= 0x8f:
        count = c & 0x0f
        i = 1
    elif c == 0xde or c == 0xdf:
        i = 1
        count = _mp_size(b, &i, n, 2 if c == 0xde else 4)
        if count < 0:
            return -2
    else:
        return -2
    for j in range(count):
        ln = _mp_str(b, &i, n)          # the name
        if ln < 0:
            return -2
        if ln == 7 and memcmp(b + i, b'subject', 7) == 0:
            i += ln
            k = i
            ln = _mp_str(b, &k, n)
            if ln >= 0:
                out[0] = p + k
                found = ln
                i = k + ln
                continue
            found = -1
        else:
            i += ln
        i = _si_mp_skip(b, i, n, 1)
        if i < 0:
            return -2
    if i != n:
        return -2
    return found


cdef inline int32_t _si_handle(object handle) except -1:
    if not isinstance(handle, int) or isinstance(handle, bool):
        raise TypeError('handle must be an int, not {}'.format(type(handle).__name__))
    if not 0 <= handle < SI_MAX_HANDLE:
        raise ValueError('handle {} out of range: handles are 0 to {}'.format(
            handle, SI_MAX_HANDLE - 1))
    return <int32_t>handle


cdef object _si_key(object key):
    """``(tag, value bytes)`` of an exact or prefix key, or the pattern (a
    str or bytes) of a routing key; ValueError naming the key otherwise."""
    cdef Py_ssize_t kind
    if type(key) is not tuple and type(key) is not list:
        raise TypeError('index key must be a tuple, not {}'.format(type(key).__name__))
    if len(key) == 2 and key[0] == 'routing':
        validate_pattern(key[1])
        return key[1]
    if len(key) != 3 or key[0] not in ('exact', 'prefix') or key[1] not in _SI_ATTR_NAMES:
        raise ValueError("invalid index key {}: expected ('exact' or 'prefix', 'type', "
                         "'source' or 'subject', a value) or ('routing', a pattern)".format(
                             repr(key)[:200]))
    value = key[2]
    if type(value) is not str or not value:
        raise ValueError('invalid index key {}: the value must be a non-empty str'.format(
            repr(key)[:200]))
    raw = (<str>value).encode('utf-8', 'surrogatepass')
    if len(raw) > SI_MAX_VALUE:
        raise ValueError('invalid index key {}: a value of {} bytes, the limit is {}'.format(
            repr(key)[:200], len(raw), SI_MAX_VALUE))
    kind = 0 if key[0] == 'exact' else SI_ATTRS
    return (kind + _SI_ATTR_NAMES.index(key[1]), raw)


@cython.final
cdef class SubscriptionIndex:
    """Subscriptions (int handles, 0 to 2**24 - 1) by their index keys:
    ``("exact", attr, value)``, ``("prefix", attr, value)`` (attr: type,
    source or subject) and ``("routing", pattern)``; a subscription added
    with ``keys=None`` is a candidate of every event.  An event's
    candidates are the handles one of whose keys it meets, and the
    unindexed ones, each once.

    ``candidates_batch(batch)`` reads a log ``Batch``'s records in C (no
    Event is made) and returns ``(rows, handles)``: one pair (index in the
    batch, handle) per candidate of each event, in event order, as two
    lists.  ``candidates(routing_subject, record)``: one record's (a
    list).
    """

    def __cinit__(self):
        self.slots = <SiEntry *>calloc(SI_MIN_SLOTS, sizeof(SiEntry))
        if self.slots == NULL:
            raise MemoryError()
        self.nslots = SI_MIN_SLOTS
        self.held = {}
        self.ints = []
        self.sink_objs = []
        self.epoch = 1

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.slots != NULL:
            for i in range(self.nslots):
                if self.slots[i].value != NULL:
                    free(self.slots[i].value)
                    free(self.slots[i].handles)
            free(self.slots)
        free(self.plens)
        free(self.rmap)
        free(self.unindexed)
        free(self.stamps)
        free(self.found)
        free(self.sinks)
        free(self.scratch)
        free(self.pairs.data)

    def __len__(self):
        return len(self.held)

    def __contains__(self, handle):
        return handle in self.held

    @property
    def nkeys(self):
        """Index keys held: distinct exact and prefix keys, and routing
        keys (one per handle and pattern)."""
        return self.nentries + (len(self.matcher) if self.matcher is not None else 0)

    # -- keeping the keys ----------------------------------------------------

    def add(self, handle, keys):
        """Index ``handle`` under ``keys`` (an iterable of keys, or None:
        a candidate of every event), in place of its keys if it has some.
        A bad key raises ValueError (or TypeError) and changes nothing."""
        cdef int32_t h = _si_handle(handle)
        cdef list parsed = None, held = []
        cdef int64_t mh
        cdef Py_ssize_t sid
        if keys is not None:
            parsed = [_si_key(k) for k in keys]
        self._reserve_handle(h)
        if keys is None and self.nunindexed == self.unindexed_cap:
            _grow(<void **>&self.unindexed, &self.unindexed_cap, self.nunindexed + 1,
                  sizeof(int32_t), 16)
        if h in self.held:
            self._drop_keys(h)
        # (from here only MemoryError can interrupt: what was added stays held)
        self.held[h] = held
        if parsed is None:
            self.unindexed[self.nunindexed] = h
            self.nunindexed += 1
            return
        for k in parsed:
            if type(k) is tuple:
                self._key_add(<uint32_t>k[0], <bytes>k[1], h)
                held.append(k)
            else:
                if self.matcher is None:
                    self.matcher = Matcher()
                mh = self.matcher.add(k, h)
                held.append(mh)
                sid = <uint32_t>mh
                if sid >= self.rmap_cap:
                    _grow(<void **>&self.rmap, &self.rmap_cap, sid + 1, sizeof(int32_t), 64)
                self.rmap[sid] = h

    def remove(self, handle):
        """Forget ``handle``, its keys and its sink (nothing happens if
        it has none)."""
        cdef int32_t h = _si_handle(handle)
        if h in self.held:
            self._drop_keys(h)
            if self.sinks[h].on:
                self.nsinks -= 1
            memset(&self.sinks[h], 0, sizeof(SiSink))
            self.sink_objs[h] = None

    cdef int _drop_keys(self, int32_t h) except -1:
        cdef Py_ssize_t i
        held = self.held.pop(h, None)
        if held is None:
            return 0
        for k in held:
            if type(k) is tuple:
                self._key_remove(<uint32_t>k[0], <bytes>k[1], h)
            else:
                self.matcher.remove(k)
        if not held:
            for i in range(self.nunindexed):
                if self.unindexed[i] == h:
                    self.nunindexed -= 1
                    self.unindexed[i] = self.unindexed[self.nunindexed]
                    break
        if FASTFLOW_DEBUG and len(self.held) < 2000:
            self._check()
        return 0

    def _check(self):
        """Invariants (the debug build checks them after each remove)."""
        cdef Py_ssize_t i, keys = 0, refs = 0, want = 0
        for i in range(self.nslots):
            if self.slots[i].value != NULL:
                keys += 1
                refs += self.slots[i].n
        for held in self.held.values():
            want += sum(1 for k in held if type(k) is tuple)
        if keys != self.nentries or refs != want:
            raise AssertionError('SubscriptionIndex._check: {} keys counted, {} held; {} '
                                 'handles in the table, {} keys of handles'.format(
                                     keys, self.nentries, refs, want))

    cdef inline uint64_t _hash(self, uint32_t tag, const char *p, Py_ssize_t n) noexcept:
        return ff_hash(p, n, _SEED + (<uint64_t>tag + 1) * 0x9E3779B97F4A7C15ULL)

    cdef inline SiEntry *_find(self, uint32_t tag, const char *p, Py_ssize_t n) noexcept:
        cdef uint64_t h = self._hash(tag, p, n)
        cdef Py_ssize_t mask = self.nslots - 1
        cdef Py_ssize_t i = <Py_ssize_t>(h & <uint64_t>mask)
        cdef SiEntry *e
        while True:
            e = &self.slots[i]
            if e.value == NULL:
                return NULL
            if e.hash == h and e.tag == tag and e.len == n and memcmp(e.value, p, n) == 0:
                return e
            i = (i + 1) & mask

    cdef int _resize(self, Py_ssize_t nslots) except -1:
        cdef SiEntry *old = self.slots
        cdef Py_ssize_t oldn = self.nslots, i, j, mask = nslots - 1
        cdef SiEntry *fresh = <SiEntry *>calloc(nslots, sizeof(SiEntry))
        if fresh == NULL:
            raise MemoryError()
        for i in range(oldn):
            if old[i].value != NULL:
                j = <Py_ssize_t>(old[i].hash & <uint64_t>mask)
                while fresh[j].value != NULL:
                    j = (j + 1) & mask
                fresh[j] = old[i]
        self.slots = fresh
        self.nslots = nslots
        free(old)
        return 0

    cdef int _key_add(self, uint32_t tag, bytes value, int32_t handle) except -1:
        cdef const char *p = PyBytes_AS_STRING(value)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(value), i, cap
        cdef SiEntry *e = self._find(tag, p, n)
        cdef uint64_t h
        if e == NULL:
            if (self.nentries + 1) * 2 > self.nslots:
                self._resize(self.nslots * 2)
            if tag >= SI_ATTRS:
                self._plen_add(tag - SI_ATTRS, <uint32_t>n)
            h = self._hash(tag, p, n)
            i = <Py_ssize_t>(h & <uint64_t>(self.nslots - 1))
            while self.slots[i].value != NULL:
                i = (i + 1) & (self.nslots - 1)
            e = &self.slots[i]
            e.value = <char *>malloc(n if n else 1)
            e.handles = <int32_t *>malloc(2 * sizeof(int32_t))
            if e.value == NULL or e.handles == NULL:
                free(e.value)
                free(e.handles)
                e.value = NULL
                e.handles = NULL
                if tag >= SI_ATTRS:
                    self._plen_remove(tag - SI_ATTRS, <uint32_t>n)
                raise MemoryError()
            memcpy(e.value, p, n)
            e.hash = h
            e.len = <uint32_t>n
            e.tag = tag
            e.n = 0
            e.cap = 2                   # (_grow grows a capacity by half)
            self.nentries += 1
            if tag < SI_ATTRS:
                self.nexact[tag] += 1
        if e.n == e.cap:
            cap = e.cap
            _grow(<void **>&e.handles, &cap, e.n + 1, sizeof(int32_t), 4)
            e.cap = <uint32_t>cap
        e.handles[e.n] = handle
        e.n += 1
        return 0

    cdef void _key_remove(self, uint32_t tag, bytes value, int32_t handle) noexcept:
        cdef const char *p = PyBytes_AS_STRING(value)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(value), i, j, k, mask
        cdef SiEntry *e = self._find(tag, p, n)
        if e == NULL:
            return
        for i in range(e.n):
            if e.handles[i] == handle:
                e.n -= 1
                e.handles[i] = e.handles[e.n]
                break
        if e.n:
            return
        # the key's last handle: empty its slot, shift the probe run back over it
        free(e.value)
        free(e.handles)
        e.value = NULL
        e.handles = NULL
        self.nentries -= 1
        if tag < SI_ATTRS:
            self.nexact[tag] -= 1
        else:
            self._plen_remove(tag - SI_ATTRS, <uint32_t>n)
        mask = self.nslots - 1
        i = e - self.slots
        j = i
        while True:
            j = (j + 1) & mask
            if self.slots[j].value == NULL:
                break
            k = <Py_ssize_t>(self.slots[j].hash & <uint64_t>mask)
            # the entry at j may move to i unless its home k lies cyclically in (i, j]
            if (j > i and (k <= i or k > j)) or (j < i and (k <= i and k > j)):
                self.slots[i] = self.slots[j]
                self.slots[j].value = NULL
                self.slots[j].handles = NULL
                i = j
        if self.nslots > SI_MIN_SLOTS and self.nentries * 8 < self.nslots:
            try:
                self._resize(self.nslots // 2)
            except MemoryError:
                pass                    # (a larger table than needed is still a table)

    cdef int _plen_add(self, uint32_t attr, uint32_t len) except -1:
        cdef Py_ssize_t i = self.pstart[attr], a
        while i < self.pstart[attr + 1] and self.plens[i].len < len:
            i += 1
        if i < self.pstart[attr + 1] and self.plens[i].len == len:
            self.plens[i].keys += 1
            return 0
        if self.nplens == self.plens_cap:
            _grow(<void **>&self.plens, &self.plens_cap, self.nplens + 1, sizeof(SiLen), 8)
        memmove(&self.plens[i + 1], &self.plens[i], (self.nplens - i) * sizeof(SiLen))
        self.plens[i].attr = attr
        self.plens[i].len = len
        self.plens[i].keys = 1
        self.nplens += 1
        for a in range(attr + 1, SI_ATTRS + 1):
            self.pstart[a] += 1
        return 0

    cdef void _plen_remove(self, uint32_t attr, uint32_t len) noexcept:
        cdef Py_ssize_t i, a
        for i in range(self.pstart[attr], self.pstart[attr + 1]):
            if self.plens[i].len == len:
                self.plens[i].keys -= 1
                if self.plens[i].keys == 0:
                    memmove(&self.plens[i], &self.plens[i + 1],
                            (self.nplens - i - 1) * sizeof(SiLen))
                    self.nplens -= 1
                    for a in range(attr + 1, SI_ATTRS + 1):
                        self.pstart[a] -= 1
                return

    cdef int _reserve_handle(self, Py_ssize_t handle) except -1:
        cdef Py_ssize_t cap, old = self.handles_cap
        while len(self.ints) <= handle:
            self.ints.append(len(self.ints))
        if handle < old:
            return 0
        cap = old
        _grow(<void **>&self.stamps, &cap, handle + 1, sizeof(uint32_t), 64)
        memset(self.stamps + old, 0, (cap - old) * sizeof(uint32_t))
        cap = old
        _grow(<void **>&self.found, &cap, handle + 1, sizeof(int32_t), 64)
        cap = old
        _grow(<void **>&self.sinks, &cap, handle + 1, sizeof(SiSink), 64)
        memset(self.sinks + old, 0, (cap - old) * sizeof(SiSink))
        self.handles_cap = cap
        while len(self.sink_objs) < cap:
            self.sink_objs.append(None)
        return 0

    # -- looking up ----------------------------------------------------------

    cdef inline void _take(self, const int32_t *hs, Py_ssize_t n) noexcept:
        cdef Py_ssize_t k
        cdef int32_t h
        for k in range(n):
            h = hs[k]
            if self.stamps[h] != self.epoch:
                self.stamps[h] = self.epoch
                self.found[self.nfound] = h
                self.nfound += 1

    cdef inline void _attr(self, uint32_t attr, const char *p, Py_ssize_t n) noexcept:
        """Take the handles of the exact and prefix keys that ``p[:n]``,
        attribute ``attr``'s value, meets."""
        cdef SiEntry *e
        cdef Py_ssize_t k
        if self.nexact[attr]:
            e = self._find(attr, p, n)
            if e != NULL:
                self._take(e.handles, e.n)
        for k in range(self.pstart[attr], self.pstart[attr + 1]):
            if self.plens[k].len > n:
                break
            e = self._find(SI_ATTRS + attr, p, self.plens[k].len)
            if e != NULL:
                self._take(e.handles, e.n)

    cdef int _record(self, object rsubj, const char *p, Py_ssize_t n,
                     const int64_t *routed, Py_ssize_t nrouted) except -1:
        """The candidates of record ``p[:n]`` stored under ``rsubj`` (found[:nfound]);
        ``routed``: the matcher handles its routing subject matched."""
        cdef Py_ssize_t off, k
        cdef EvHead hd
        cdef const char *s
        cdef Py_ssize_t sn
        cdef int32_t h
        self.epoch += 1
        if self.epoch == 0:             # (every 2**32 events)
            memset(self.stamps, 0, self.handles_cap * sizeof(uint32_t))
            self.epoch = 1
        self.nfound = 0
        if self.nentries:
            _ev_head(rsubj, p, n, &hd)
            off = EV_HEADER + hd.idn
            self._attr(SI_SOURCE, p + off, hd.srcn)
            off += hd.srcn
            if not hd.flags & EVF_TYPE_SUBJECT:
                self._attr(SI_TYPE, p + off, hd.typn)
            elif rsubj is not None and (self.nexact[SI_TYPE] or
                                        self.pstart[SI_TYPE + 1] > self.pstart[SI_TYPE]):
                as_utf8(rsubj, &s, &sn, False)
                self._attr(SI_TYPE, s, sn)
            off += hd.typn + hd.trn
            if hd.restn and (self.nexact[SI_SUBJECT] or
                             self.pstart[SI_SUBJECT + 1] > self.pstart[SI_SUBJECT]):
                sn = _si_rest_subject(p + off, hd.restn, &s)
                if sn >= 0:
                    self._attr(SI_SUBJECT, s, sn)
                elif sn == -2:
                    # a block this reader does not walk: the decoder's answer
                    v = _si_attrs.decode_rest(PyBytes_FromStringAndSize(p + off, hd.restn))
                    v = v.get('subject') if type(v) is dict else None
                    if type(v) is str:
                        raw = (<str>v).encode('utf-8', 'surrogatepass')
                        self._attr(SI_SUBJECT, PyBytes_AS_STRING(raw),
                                   PyBytes_GET_SIZE(raw))
        for k in range(nrouted):
            h = self.rmap[<uint32_t>routed[k]]
            self._take(&h, 1)
        self._take(self.unindexed, self.nunindexed)
        return 0

    cdef list _found_list(self):
        cdef list out = PyList_New(self.nfound)
        cdef Py_ssize_t k
        cdef object v
        for k in range(self.nfound):
            v = <object>PyList_GET_ITEM(self.ints, self.found[k])
            Py_INCREF(v)
            PyList_SET_ITEM(out, k, v)
        return out

    def candidates(self, routing_subject, record):
        """The candidates' handles of one event record (bytes-like) stored
        under ``routing_subject`` (None: no routing key matches), a list."""
        cdef Py_buffer view
        cdef MatchBatch mb = None
        if routing_subject is not None and self.matcher is not None and len(self.matcher):
            mb = self.matcher.match_batch([routing_subject])
        PyObject_GetBuffer(record, &view, PyBUF_SIMPLE)
        try:
            self._record(routing_subject, <const char *>view.buf, view.len,
                         mb.handles.data if mb is not None else NULL,
                         mb.handles.n if mb is not None else 0)
        finally:
            PyBuffer_Release(&view)
        return self._found_list()

    def candidates_batch(self, Batch batch not None):
        """``(rows, handles)`` of a log ``Batch``: two lists of the same
        length, one pair (event index in the batch, handle) per candidate
        of each event, in event order; no list per event, so the caller
        allocates nothing for events without candidates."""
        return self._batch(batch, None)[:2]

    # -- sinks: candidates the index delivers itself --------------------------

    def set_sink(self, handle, subject, bint hop=False):
        """Let ``route_batch`` deliver ``handle``'s candidates itself: each
        record is published on ``subject`` (a literal subject) of the
        router, as ``sink_record`` makes it (``hop``: with one hop more).
        ``subject=None``: the handle's candidates are returned again.  The
        handle must be held (``add``); its count of deliveries stays."""
        cdef int32_t h = _si_handle(handle)
        cdef SiSink *sk
        cdef str subj
        cdef const char *p
        cdef Py_ssize_t n
        if h not in self.held:
            raise KeyError('handle {} is not in the index'.format(h))
        if subject is not None:
            validate_subject(subject)
            subj = _si_subject_str(subject)
            as_utf8(subj, &p, &n, False)
        sk = &self.sinks[h]
        if sk.on:
            self.nsinks -= 1
        sk.on = 0
        sk.nres = 0
        sk.obj = NULL
        sk.subj = NULL
        sk.subjn = 0
        self.sink_objs[h] = None
        if subject is None:
            return
        # (the UTF-8 bytes stay where they are while sink_objs holds the str)
        self.sink_objs[h] = subj
        sk.obj = <void *>subj
        sk.subj = p
        sk.subjn = n
        sk.hash = ff_hash(p, n, _SEED)
        sk.on = 2 if hop else 1
        self.nsinks += 1

    def sink_delivered(self, handle):
        """Records ``route_batch`` delivered for ``handle`` (0 once it is
        removed)."""
        cdef int32_t h = _si_handle(handle)
        return self.sinks[h].n if h in self.held else 0

    def route_batch(self, Batch batch not None, Router router not None):
        """``candidates_batch`` that delivers the candidates of the handles
        with a sink (``set_sink``) itself, each with one ``publish`` of the
        record on ``router`` (no Event is made), and returns the others:
        ``(rows, handles, failed)``.  A publish that raises turns that
        handle's sink off, and its pair is returned from there on, the
        failed one included; ``failed`` lists ``(handle, message)`` of
        those, in order."""
        return self._batch(batch, router)

    cdef tuple _batch(self, Batch batch, Router router):
        cdef Py_ssize_t i, k, j, nf, count = batch.offsets.n - 1, rn
        cdef list rows = [], handles = [], failed = []
        cdef MatchBatch mb = None
        cdef const int64_t *offs = batch.offsets.data
        cdef const int64_t *moffs = NULL
        cdef Py_buffer view
        cdef const char *base
        cdef object row
        cdef int32_t h
        cdef int64_t pr
        cdef I64Vec pairs
        cdef bint sinks = router is not None and self.nsinks > 0
        if count <= 0 or not self.held:
            return rows, handles, failed
        if self.matcher is not None and len(self.matcher):
            mb = self.matcher.match_batch(batch.subjects)
            moffs = mb.offsets.data
        while len(self.ints) < count:   # (the rows share the int objects too)
            self.ints.append(len(self.ints))
        # with sinks, two passes: the candidates of the whole batch first
        # (their sinks prefetched), then the publishes, which run
        # subscribers' code (that may use this index: the pairs are this
        # call's own meanwhile)
        pairs = self.pairs
        self.pairs.data = NULL
        self.pairs.n = self.pairs.cap = 0
        pairs.n = 0
        PyObject_GetBuffer(batch.buffer, &view, PyBUF_SIMPLE)
        try:
            base = <const char *>view.buf
            for i in range(count):
                self._record(<object>PyList_GET_ITEM(batch.subjects, i), base + offs[i],
                             offs[i + 1] - offs[i],
                             mb.handles.data + moffs[i] if mb is not None else NULL,
                             moffs[i + 1] - moffs[i] if mb is not None else 0)
                nf = self.nfound
                if not nf:
                    continue
                if sinks:
                    _i64_reserve(&pairs, nf)
                    for k in range(nf):
                        h = self.found[k]
                        ff_prefetch(&self.sinks[h])
                        pairs.data[pairs.n] = (<int64_t>i << 32) | h
                        pairs.n += 1
                    continue
                row = <object>PyList_GET_ITEM(self.ints, i)
                for k in range(nf):
                    rows.append(row)
                    handles.append(<object>PyList_GET_ITEM(self.ints, self.found[k]))
            for j in range(pairs.n):
                if j + SI_AHEAD < pairs.n:
                    h = <int32_t>(pairs.data[j + SI_AHEAD] & 0xFFFFFFFF)
                    if self.sinks[h].obj != NULL:
                        ff_prefetch(self.sinks[h].obj)
                pr = pairs.data[j]
                i = <Py_ssize_t>(pr >> 32)
                h = <int32_t>(pr & 0xFFFFFFFF)
                if self.sinks[h].on:
                    try:
                        self._sink_publish(router, h, <object>PyList_GET_ITEM(batch.subjects, i),
                                           base + offs[i], offs[i + 1] - offs[i])
                        continue
                    except Exception as exc:
                        if self.sinks[h].on:
                            self.sinks[h].on = 0
                            self.nsinks -= 1
                        failed.append((<object>PyList_GET_ITEM(self.ints, h),
                                       str(exc) or type(exc).__name__))
                rows.append(<object>PyList_GET_ITEM(self.ints, i))
                handles.append(<object>PyList_GET_ITEM(self.ints, h))
        finally:
            PyBuffer_Release(&view)
            if self.pairs.data == NULL:
                self.pairs = pairs
            else:
                free(pairs.data)
        return rows, handles, failed

    cdef int _sink_publish(self, Router router, int32_t h, object rsubj, const char *rec,
                           Py_ssize_t rn) except -1:
        """Publish record ``rec[:rn]`` (stored under ``rsubj``) to handle
        ``h``'s sink.  The subject's matcher result is kept per sink while
        the router's subscriptions do not change: 10,000 sinks on 10,000
        subjects cost no more lookups than one."""
        cdef SiSink *sk = &self.sinks[h]
        cdef Matcher m = router.matcher
        cdef uint64_t version
        cdef const int64_t *res
        cdef int64_t local[SI_SINK_RES]
        cdef bint hop = sk.on == 2
        cdef const char *ts = NULL
        cdef Py_ssize_t tn = 0, n, cap, nw
        cdef object subject = <object>sk.obj
        cdef const char *sp = sk.subj
        cdef Py_ssize_t sn = sk.subjn
        cdef uint64_t sh = sk.hash
        cdef char *buf
        cdef const char *r = rec
        cdef Event ev = None
        if _si_sink_check(rsubj, rec, rn):
            as_utf8(rsubj, &ts, &tn, False)
        # the scratch buffer is taken while the router has it: a
        # subscriber's code that routes through this index meanwhile
        # makes its own
        buf = self.scratch
        cap = self.scratch_cap
        self.scratch = NULL
        self.scratch_cap = 0
        try:
            if ts != NULL or hop:
                n = _si_sink_size(rec, rn, tn)
                if n > cap:
                    _grow(<void **>&buf, &cap, n, 1, 4096)
                _si_sink_write(buf, rec, rn, ts, tn, hop)
                r = buf
                rn = n
            if _rd16(r + 2) or _rd16(r + 10):
                # lineage: the router's loop breaker needs the event (made
                # before the match: a result is the matcher's until copied)
                ev = _ev_decode(subject, r, rn, 0, None, 0, None)
            sk = &self.sinks[h]
            version = m.n_inserts + m.n_removes
            if sk.nres and sk.version == version:
                memcpy(local, sk.res, sk.nres * sizeof(int64_t))
                res = local
            else:
                m._match_res(subject, sp, sn, sh, &res)
                nw = _res_words(res)
                sk.nres = 0
                if nw <= SI_SINK_RES:
                    memcpy(sk.res, res, nw * sizeof(int64_t))
                    sk.nres = <uint8_t>nw
                    sk.version = version
            router._publish_matched(subject, sp, sn, sh, res, r, rn, NULL, 0, None, ev)
        finally:
            if self.scratch == NULL:
                self.scratch = buf
                self.scratch_cap = cap
            else:
                free(buf)
        self.sinks[h].n += 1
        return 0


cdef inline str _si_subject_str(object subject):
    if type(subject) is str:
        return <str>subject
    if isinstance(subject, bytes):
        return (<bytes>subject).decode('utf-8')
    raise TypeError('subject must be str or bytes, not {}'.format(type(subject).__name__))


cdef bint _si_sink_check(object rsubj, const char *p, Py_ssize_t n) except -1:
    """Check the header of record ``p[:n]``; True if its type is its
    routing subject (``rsubj``), which a sink record writes out."""
    cdef EvHead hd
    _ev_head(rsubj, p, n, &hd)
    if hd.flags & EVF_TYPE_SUBJECT:
        if rsubj is None:
            raise FastflowError('event record without a type and without a routing subject')
        return True
    return False


cdef inline Py_ssize_t _si_sink_size(const char *p, Py_ssize_t n, Py_ssize_t tn) noexcept:
    return n + tn


cdef int _si_sink_write(char *out, const char *p, Py_ssize_t n, const char *ts,
                        Py_ssize_t tn, bint hop) except -1:
    """The sink record of checked record ``p[:n]`` into ``out``
    (``_si_sink_size`` bytes): its type written out (``ts[:tn]``, when
    the record's type is its routing subject), one hop more if ``hop``."""
    cdef uint8_t flags = <uint8_t>p[1]
    cdef Py_ssize_t off
    cdef uint16_t hops
    if ts != NULL:
        if tn > 0xFFFF:
            raise EventError('invalid event attribute \'type\': over 65535 bytes')
        off = EV_HEADER + (EV_GENID if flags & EVF_GENID else _rd16(p + 4)) + _rd16(p + 6)
        memcpy(out, p, off)
        out[1] = <char>(flags & ~EVF_TYPE_SUBJECT)
        _wr16(out + 8, <uint16_t>tn)
        memcpy(out + off, ts, tn)
        memcpy(out + off + tn, p + off, n - off)
    else:
        memcpy(out, p, n)
    if hop:
        hops = _rd16(out + 2)
        if hops < 0xFFFF:
            _wr16(out + 2, hops + 1)
    return 0


def sink_record(routing_subject, record, bint hop=False):
    """The record a subscription delivers for event record ``record``
    stored under ``routing_subject``: the same event, its type written
    out when it was the routing subject (the record is published on
    another subject), with one hop more (``ffhops``) if ``hop``."""
    cdef Py_buffer view
    cdef const char *ts = NULL
    cdef Py_ssize_t tn = 0, n
    cdef bytes out
    if routing_subject is not None:
        routing_subject = _si_subject_str(routing_subject)
    PyObject_GetBuffer(record, &view, PyBUF_SIMPLE)
    try:
        if _si_sink_check(routing_subject, <const char *>view.buf, view.len):
            as_utf8(routing_subject, &ts, &tn, False)
        n = _si_sink_size(<const char *>view.buf, view.len, tn)
        out = PyBytes_FromStringAndSize(NULL, n)
        _si_sink_write(PyBytes_AS_STRING(out), <const char *>view.buf, view.len, ts, tn, hop)
        return out
    finally:
        PyBuffer_Release(&view)
