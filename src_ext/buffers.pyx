# Growable C vectors and the Int64Array buffer (included by core.pyx).

cimport cython
from libc.stdlib cimport malloc, calloc, realloc, free, qsort
from libc.string cimport memcmp, memcpy, memmove, memset
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES


# -- small growable vectors ----------------------------------------------------

cdef int _grow(void **p, Py_ssize_t *cap, Py_ssize_t need, size_t elem,
               Py_ssize_t first, bint table=False) except -1:
    """Make room for ``need`` elements of ``elem`` bytes, growing by half.
    ``table``: a big table of the core, allocated by ff_trealloc (its own
    mapping past 256 KiB, remapped rather than copied); else realloc."""
    cdef Py_ssize_t c = cap[0]
    cdef void *q
    if need <= c:
        return 0
    if c == 0:
        c = first
    while c < need:
        c += (c >> 1) or 1
    q = ff_trealloc(p[0], c * elem) if table else realloc(p[0], c * elem)
    if q == NULL:
        raise MemoryError()
    p[0] = q
    cap[0] = c
    return 0


cdef inline int _i32_push(I32Vec *v, int32_t x) except -1:
    if v.n == v.cap:
        _grow(<void **>&v.data, &v.cap, v.n + 1, sizeof(int32_t), 64)
    v.data[v.n] = x
    v.n += 1
    return 0


cdef inline int _i64_reserve(I64Vec *v, Py_ssize_t extra) except -1:
    if v.n + extra > v.cap:
        _grow(<void **>&v.data, &v.cap, v.n + extra, sizeof(int64_t), 64)
    return 0


cdef inline int _i64_push(I64Vec *v, int64_t x) except -1:
    if v.n == v.cap:
        _grow(<void **>&v.data, &v.cap, v.n + 1, sizeof(int64_t), 64)
    v.data[v.n] = x
    v.n += 1
    return 0


@cython.final
cdef class Int64Array:
    """A growable array of int64 that exports the buffer protocol ('q').

    ``memoryview(a)``, ``numpy.asarray(a)`` and ``a[i]`` read it without a
    copy; it refuses to grow while a view is exported.
    """

    def __cinit__(self):
        self.data = NULL
        self.n = 0
        self.cap = 0
        self.exports = 0

    def __dealloc__(self):
        free(self.data)

    @staticmethod
    cdef Int64Array new(Py_ssize_t cap):
        cdef Int64Array a = Int64Array.__new__(Int64Array)
        if cap > 0:
            a.data = <int64_t *>malloc(cap * sizeof(int64_t))
            if a.data == NULL:
                raise MemoryError()
            a.cap = cap
        return a

    cdef int reserve(self, Py_ssize_t extra) except -1:
        if self.n + extra <= self.cap:
            return 0
        if self.exports:
            raise BufferError('Int64Array: cannot grow while a view is exported')
        return _grow(<void **>&self.data, &self.cap, self.n + extra, sizeof(int64_t), 64)

    cdef int push(self, int64_t v) except -1:
        if self.n == self.cap:
            self.reserve(1)
        self.data[self.n] = v
        self.n += 1
        return 0

    def __len__(self):
        return self.n

    def __getitem__(self, Py_ssize_t i):
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError('Int64Array index {} out of range for length {}'.format(i, self.n))
        return self.data[i]

    def tolist(self):
        return [self.data[i] for i in range(self.n)]

    def __getbuffer__(self, Py_buffer *buf, int flags):
        self.shape[0] = self.n
        self.strides[0] = sizeof(int64_t)
        buf.buf = <void *>self.data
        buf.obj = self
        buf.len = self.n * sizeof(int64_t)
        buf.readonly = 1
        buf.itemsize = sizeof(int64_t)
        buf.format = <char *>b'q' if flags & PyBUF_FORMAT else NULL
        buf.ndim = 1
        buf.shape = self.shape if flags & PyBUF_ND else NULL
        buf.strides = self.strides if flags & PyBUF_STRIDES else NULL
        buf.suboffsets = NULL
        buf.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *buf):
        self.exports -= 1

    def __repr__(self):
        return 'Int64Array({})'.format(self.tolist() if self.n <= 16 else
                                       '<{} items>'.format(self.n))


