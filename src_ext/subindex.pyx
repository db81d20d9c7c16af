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
            self.remove(h)
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
        """Forget ``handle`` and its keys (nothing happens if it has none)."""
        cdef int32_t h = _si_handle(handle)
        cdef Py_ssize_t i
        held = self.held.pop(h, None)
        if held is None:
            return
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
        self.handles_cap = cap
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
        cdef uint8_t flags
        cdef Py_ssize_t idn, srcn, typn, trn, restn, off, k
        cdef const char *s
        cdef Py_ssize_t sn
        cdef int32_t h
        self.epoch += 1
        if self.epoch == 0:             # (every 2**32 events)
            memset(self.stamps, 0, self.handles_cap * sizeof(uint32_t))
            self.epoch = 1
        self.nfound = 0
        if self.nentries:
            if n < EV_HEADER or <uint8_t>p[0] != EV_VERSION:
                raise FastflowError('record of {} bytes under {!r} is not an event record '
                                    '(version byte {})'.format(n, rsubj,
                                                               <uint8_t>p[0] if n else -1))
            flags = <uint8_t>p[1]
            idn = EV_GENID if flags & EVF_GENID else _rd16(p + 4)
            srcn = _rd16(p + 6)
            typn = _rd16(p + 8)
            trn = _rd16(p + 10)
            restn = _rd32(p + 12)
            if EV_HEADER + idn + srcn + typn + trn + restn > n:
                raise FastflowError('event record of {} bytes under {!r} is truncated: its '
                                    'header needs {}'.format(
                                        n, rsubj, EV_HEADER + idn + srcn + typn + trn + restn))
            off = EV_HEADER + idn
            self._attr(SI_SOURCE, p + off, srcn)
            off += srcn
            if not flags & EVF_TYPE_SUBJECT:
                self._attr(SI_TYPE, p + off, typn)
            elif rsubj is not None and (self.nexact[SI_TYPE] or
                                        self.pstart[SI_TYPE + 1] > self.pstart[SI_TYPE]):
                as_utf8(rsubj, &s, &sn, False)
                self._attr(SI_TYPE, s, sn)
            off += typn + trn
            if restn and (self.nexact[SI_SUBJECT] or self.pstart[SI_SUBJECT + 1] > self.pstart[SI_SUBJECT]):
                sn = _si_rest_subject(p + off, restn, &s)
                if sn >= 0:
                    self._attr(SI_SUBJECT, s, sn)
                elif sn == -2:
                    # a block this reader does not walk: the decoder's answer
                    v = _si_attrs.decode_rest(PyBytes_FromStringAndSize(p + off, restn))
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
        cdef Py_ssize_t i, k, count = batch.offsets.n - 1
        cdef list rows = [], handles = []
        cdef MatchBatch mb = None
        cdef const int64_t *offs = batch.offsets.data
        cdef const int64_t *moffs = NULL
        cdef Py_buffer view
        cdef const char *base
        cdef object row
        if count <= 0 or not self.held:
            return rows, handles
        if self.matcher is not None and len(self.matcher):
            mb = self.matcher.match_batch(batch.subjects)
            moffs = mb.offsets.data
        while len(self.ints) < count:   # (the rows share the int objects too)
            self.ints.append(len(self.ints))
        PyObject_GetBuffer(batch.buffer, &view, PyBUF_SIMPLE)
        try:
            base = <const char *>view.buf
            for i in range(count):
                self._record(<object>PyList_GET_ITEM(batch.subjects, i), base + offs[i],
                             offs[i + 1] - offs[i],
                             mb.handles.data + moffs[i] if mb is not None else NULL,
                             moffs[i + 1] - moffs[i] if mb is not None else 0)
                if self.nfound:
                    row = <object>PyList_GET_ITEM(self.ints, i)
                    for k in range(self.nfound):
                        rows.append(row)
                        handles.append(<object>PyList_GET_ITEM(self.ints, self.found[k]))
        finally:
            PyBuffer_Release(&view)
        return rows, handles
