# Compiled CESQL expressions (docs/cesql.md): the programs fastflow.cesql
# compiles (fastflow/_cesqlcode.py describes the instructions), evaluated in
# C over a small stack of values.  The twin of fastflow/_ref/cesql.py.
#
# Strings stay UTF-8 slices of what they come from: the stored record, a
# literal, or an evaluation's scratch buffer (numbers cast to text, Base64,
# generated ids).  Attributes are read from the record itself: id, source
# and type from its header fields, the others from its msgpack block.  An
# Event is read through its C fields, a mapping through Python (slow path).
# Errors become Python objects only when ``evaluate`` collects them; a
# filter (``matches``, ``match_batch``) stops at the first one.  Built-in
# functions other than LENGTH run their Python bodies (fastflow._cesqlcode).

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from fastflow import _cesqlcode as _cq

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size) except NULL

cdef enum CqOp:
    CQ_PUSH = 1
    CQ_LOAD = 2
    CQ_EXISTS = 3
    CQ_NOT = 4
    CQ_NEGATE = 5
    CQ_LIKE = 6
    CQ_ARITH = 7
    CQ_COMPARE = 8
    CQ_LOGIC = 9
    CQ_LOGIC2 = 10
    CQ_IN = 11
    CQ_CALL = 12
    CQ_NOFUNC = 13

cdef enum CqOperator:
    CQ_ADD = 1
    CQ_SUB = 2
    CQ_MUL = 3
    CQ_DIV = 4
    CQ_MOD = 5
    CQ_EQ = 1
    CQ_NE = 2
    CQ_LT = 3
    CQ_LE = 4
    CQ_GT = 5
    CQ_GE = 6
    CQ_AND = 1
    CQ_OR = 2
    CQ_XOR = 3

cdef enum CqType:
    CQ_ANY = 0
    CQ_STRING = 1
    CQ_INTEGER = 2
    CQ_BOOLEAN = 3

cdef enum CqAttr:
    CQA_REST = 0                # in the msgpack block (or an Event's dict)
    CQA_ID = 1
    CQA_SOURCE = 2
    CQA_TYPE = 3
    CQA_SPECVERSION = 4
    CQA_HOPS = 5                # ffhops: the header's hops when not 0
    CQA_TRACE = 6               # fftrace: the header's trace when not empty

cdef enum CqInput:
    CQI_RECORD = 1              # an event record (a log Record, a Batch entry)
    CQI_EVENT = 2               # a C Event
    CQI_MAPPING = 3             # a mapping of attribute name -> value

cdef enum CqLike:               # a LIKE pattern byte
    CQL_BYTE = 0                # itself
    CQL_ANY = 1                 # % : any run of characters
    CQL_ONE = 2                 # _ : one character (one UTF-8 sequence)

cdef enum CqNative:
    CQN_LENGTH = 1

# the numbers are fastflow._cesqlcode's: check them once
if ((_cq.PUSH, _cq.LOAD, _cq.EXISTS, _cq.NOT, _cq.NEGATE, _cq.LIKE, _cq.ARITH, _cq.COMPARE,
     _cq.LOGIC, _cq.LOGIC2, _cq.IN, _cq.CALL, _cq.NOFUNC) != tuple(range(1, 14))
        or (_cq.ADD, _cq.SUB, _cq.MUL, _cq.DIV, _cq.MOD) != (1, 2, 3, 4, 5)
        or (_cq.EQ, _cq.NE, _cq.LT, _cq.LE, _cq.GT, _cq.GE) != (1, 2, 3, 4, 5, 6)
        or (_cq.AND, _cq.OR, _cq.XOR) != (1, 2, 3)
        or (_cq.T_ANY, _cq.T_STRING, _cq.T_INTEGER, _cq.T_BOOLEAN) != (0, 1, 2, 3)):
    raise ImportError('fastflow._cesqlcode and src_ext/cesql.pyx disagree on the '
                      'instruction numbers')

cdef dict _CQ_ATTRS = {'id': CQA_ID, 'source': CQA_SOURCE, 'type': CQA_TYPE,
                       'specversion': CQA_SPECVERSION, _attrs.HOPS: CQA_HOPS,
                       _attrs.TRACE: CQA_TRACE}
cdef object _cq_fn_length = _cq._fn_length
cdef object _pytype = type      # (CesqlProgram.__init__ has a parameter named type)
cdef const char *_CQ_B64 = b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
cdef const char *_CQ_HEX = b'0123456789abcdef'


# -- an evaluation's storage ---------------------------------------------------------------

cdef char *_cq_alloc(CqRun *r, Py_ssize_t n) except NULL:
    """``n`` bytes for a string made during the evaluation: the scratch
    buffer, else a bytes object the evaluation keeps."""
    cdef char *p
    if r.used + n <= CQ_SCRATCH:
        p = r.scratch + r.used
        r.used += n
        return p
    b = PyBytes_FromStringAndSize(NULL, n)
    _cq_keep(r, b)
    return PyBytes_AS_STRING(b)


cdef int _cq_keep(CqRun *r, object o) except -1:
    """Keep ``o`` alive until the evaluation ends (a value points into it)."""
    if r.keep == NULL:
        k = [o]
        Py_INCREF(k)
        r.keep = <PyObject *>k
    else:
        (<list>r.keep).append(o)
    return 0


cdef void _cq_init(CqRun *r, bint fail_fast, bint collect) noexcept:
    memset(r, 0, sizeof(CqRun) - CQ_SCRATCH)
    r.fail_fast = fail_fast
    r.collect = collect


cdef void _cq_reset(CqRun *r) noexcept:
    """Ready for the next record of a batch (keeping the mode)."""
    Py_XDECREF(r.keep)
    r.keep = NULL
    r.used = 0
    r.stop = False


cdef void _cq_free(CqRun *r) noexcept:
    Py_XDECREF(r.keep)
    Py_XDECREF(r.errors)
    r.keep = NULL
    r.errors = NULL


cdef int _cq_error(CqRun *r, object err) except -1:
    """An error happened (``err`` is None when the caller does not collect)."""
    if r.collect:
        if r.errors == NULL:
            lst = [err]
            Py_INCREF(lst)
            r.errors = <PyObject *>lst
        else:
            (<list>r.errors).append(err)
    if r.fail_fast:
        r.stop = True
    return 0


# -- values --------------------------------------------------------------------------------

cdef inline void _cq_bool(CqVal *v, bint b, int err) noexcept:
    v.tag = CQ_BOOLEAN
    v.i = b
    v.err = err


cdef inline void _cq_int(CqVal *v, int32_t i, int err) noexcept:
    v.tag = CQ_INTEGER
    v.i = i
    v.err = err


cdef inline void _cq_zero(CqVal *v, int tag) noexcept:
    """The zero value of ``tag`` (false for an unknown type), with an error."""
    v.err = 1
    v.i = 0
    if tag == CQ_STRING:
        v.tag = CQ_STRING
        v.p = b''
        v.n = 0
    elif tag == CQ_INTEGER:
        v.tag = CQ_INTEGER
    else:
        v.tag = CQ_BOOLEAN


cdef object _cq_py(CqVal *v):
    """The Python value of ``v``."""
    if v.tag == CQ_INTEGER:
        return v.i
    if v.tag == CQ_BOOLEAN:
        return v.i != 0
    return PyUnicode_DecodeUTF8(v.p, v.n, 'surrogatepass')


cdef int _cq_str(CqRun *r, CqVal *v, object s) except -1:
    """``v`` = the str ``s`` (kept alive by the caller or the evaluation)."""
    cdef Py_ssize_t n
    v.tag = CQ_STRING
    try:
        v.p = PyUnicode_AsUTF8AndSize(s, &n)
    except UnicodeEncodeError:          # lone surrogates: as Python writes them
        b = (<str>s).encode('utf-8', 'surrogatepass')
        _cq_keep(r, b)
        v.p = PyBytes_AS_STRING(b)
        n = PyBytes_GET_SIZE(b)
    v.n = n
    return 0


cdef int _cq_from_py(CqRun *r, CqVal *v, object x) except -1:
    """``v`` = the CESQL value of an attribute's Python value (spec 3.2)."""
    cdef type t = type(x)
    v.err = 0
    if t is bool:
        v.tag = CQ_BOOLEAN
        v.i = 1 if x else 0
        return 0
    if t is int and -2147483648 <= x <= 2147483647:
        v.tag = CQ_INTEGER
        v.i = x
        return 0
    if t is not str:
        x = _cq.attribute_value(x)
    _cq_keep(r, x)
    return _cq_str(r, v, x)


cdef int _cq_decimal(CqRun *r, CqVal *v, int64_t i) except -1:
    cdef char *p = _cq_alloc(r, 21)
    v.tag = CQ_STRING
    v.p = p
    v.n = _put_int(p, i) - p
    return 0


cdef int _cq_base64(CqRun *r, CqVal *v, const uint8_t *s, Py_ssize_t n) except -1:
    cdef char *o = _cq_alloc(r, (n + 2) // 3 * 4)
    cdef Py_ssize_t i = 0, k = 0
    cdef uint32_t w
    while i + 3 <= n:
        w = (<uint32_t>s[i] << 16) | (<uint32_t>s[i + 1] << 8) | s[i + 2]
        o[k] = _CQ_B64[w >> 18]
        o[k + 1] = _CQ_B64[(w >> 12) & 63]
        o[k + 2] = _CQ_B64[(w >> 6) & 63]
        o[k + 3] = _CQ_B64[w & 63]
        i += 3
        k += 4
    if n - i == 1:
        w = <uint32_t>s[i] << 16
        o[k] = _CQ_B64[w >> 18]
        o[k + 1] = _CQ_B64[(w >> 12) & 63]
        o[k + 2] = 61
        o[k + 3] = 61
        k += 4
    elif n - i == 2:
        w = (<uint32_t>s[i] << 16) | (<uint32_t>s[i + 1] << 8)
        o[k] = _CQ_B64[w >> 18]
        o[k + 1] = _CQ_B64[(w >> 12) & 63]
        o[k + 2] = _CQ_B64[(w >> 6) & 63]
        o[k + 3] = 61
        k += 4
    v.tag = CQ_STRING
    v.p = o
    v.n = k
    return 0


cdef int _cq_hex_id(CqRun *r, CqVal *v, uint64_t hi, uint64_t lo) except -1:
    """A generated id's text: 32 hex digits (event.pyx's _hex_id)."""
    cdef char *o = _cq_alloc(r, 32)
    cdef int k
    for k in range(16):
        o[k] = _CQ_HEX[(hi >> (60 - 4 * k)) & 15]
        o[16 + k] = _CQ_HEX[(lo >> (60 - 4 * k)) & 15]
    v.tag = CQ_STRING
    v.p = o
    v.n = 32
    return 0


# -- casts (spec 3.7) ----------------------------------------------------------------------

cdef int _cq_cast(CqRun *r, CqVal *v, int target) except -1:
    """Cast ``v`` to ``target`` in place; 1 (and the error reported, ``v``
    the zero value of ``target``) if it cannot be."""
    cdef Py_ssize_t k, n
    cdef int64_t acc
    cdef bint neg
    cdef char c
    if v.tag == target or target == CQ_ANY:
        return 0
    if target == CQ_STRING:
        if v.tag == CQ_BOOLEAN:
            v.p = b'true' if v.i else b'false'
            v.n = 4 if v.i else 5
            v.tag = CQ_STRING
            return 0
        return _cq_decimal(r, v, v.i)
    if target == CQ_INTEGER:
        if v.tag == CQ_BOOLEAN:
            v.tag = CQ_INTEGER
            return 0
        # [+-]?[0-9]+ within 32 bits
        n = v.n
        k = 0
        neg = False
        if n and (v.p[0] == 43 or v.p[0] == 45):
            neg = v.p[0] == 45
            k = 1
        if k < n:
            acc = 0
            while k < n:
                c = v.p[k]
                if not 48 <= c <= 57:
                    break
                if acc <= 2147483648:
                    acc = acc * 10 + (c - 48)
                k += 1
            if k == n:
                if neg:
                    acc = -acc
                if -2147483648 <= acc <= 2147483647:
                    _cq_int(v, <int32_t>acc, v.err)
                    return 0
        _cq_cast_error(r, v, target)
        _cq_int(v, 0, v.err)
        return 1
    # Boolean: 'true' or 'false' in any case
    if v.tag == CQ_INTEGER:
        v.tag = CQ_BOOLEAN
        v.i = v.i != 0
        return 0
    if _ascii_ieq(v.p, v.n, b'true', 4):
        _cq_bool(v, True, v.err)
        return 0
    if _ascii_ieq(v.p, v.n, b'false', 5):
        _cq_bool(v, False, v.err)
        return 0
    _cq_cast_error(r, v, target)
    _cq_bool(v, False, v.err)
    return 1


cdef int _cq_cast_error(CqRun *r, CqVal *v, int target) except -1:
    return _cq_error(r, _cq.cast_error(_cq_py(v), target) if r.collect else None)


cdef inline bint _cq_equal(CqVal *x, CqVal *y) noexcept:
    """Values of one type."""
    if x.tag == CQ_STRING:
        return x.n == y.n and memcmp(x.p, y.p, x.n) == 0
    return x.i == y.i


# -- LIKE ----------------------------------------------------------------------------------

cdef inline Py_ssize_t _cq_char(const uint8_t *s, Py_ssize_t i, Py_ssize_t n) noexcept:
    """The index after the UTF-8 sequence at ``s[i]``."""
    cdef uint8_t c = s[i]
    i += 1 if c < 0xc0 else (2 if c < 0xe0 else (3 if c < 0xf0 else 4))
    return i if i < n else n


cdef bint _cq_like(const uint8_t *s, Py_ssize_t n, const uint8_t *pat, const uint8_t *kinds,
                   Py_ssize_t m) noexcept:
    """Whether ``s[:n]`` matches the pattern: the wildcard algorithm that
    backtracks to the last ``%`` only; ``_`` takes one character."""
    cdef Py_ssize_t si = 0, pi = 0, star = -1, mark = 0
    while si < n:
        if pi < m and kinds[pi] == CQL_BYTE and pat[pi] == s[si]:
            si += 1
            pi += 1
        elif pi < m and kinds[pi] == CQL_ONE:
            si = _cq_char(s, si, n)
            pi += 1
        elif pi < m and kinds[pi] == CQL_ANY:
            star = pi
            mark = si
            pi += 1
        elif star >= 0:
            pi = star + 1
            mark = _cq_char(s, mark, n)
            si = mark
        else:
            return False
    while pi < m and kinds[pi] == CQL_ANY:
        pi += 1
    return pi == m


cdef tuple _cq_like_compile(str pattern):
    """(bytes, kinds): the pattern's UTF-8 bytes with ``\\%`` and ``\\_``
    resolved, and what each byte is (CqLike)."""
    cdef bytearray out = bytearray(), kinds = bytearray()
    cdef Py_ssize_t i = 0, n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == '\\' and i + 1 < n and pattern[i + 1] in '%_':
            out += pattern[i + 1].encode()
            kinds.append(CQL_BYTE)
            i += 2
            continue
        if c == '%':
            out.append(37)
            kinds.append(CQL_ANY)
        elif c == '_':
            out.append(95)
            kinds.append(CQL_ONE)
        else:
            b = c.encode('utf-8', 'surrogatepass')
            out += b
            kinds += b'\x00' * len(b)
        i += 1
    return bytes(out), bytes(kinds)


# -- reading attributes --------------------------------------------------------------------

cdef Py_ssize_t _mp_skip(const uint8_t *b, Py_ssize_t i, Py_ssize_t n, int depth) noexcept:
    """The index after the msgpack value at ``b[i]``; -1 if it overruns or
    nests too deep."""
    cdef uint8_t c
    cdef Py_ssize_t k, count
    if i >= n or depth > 32:
        return -1
    c = b[i]
    i += 1
    if c <= 0x7f or c >= 0xe0 or c == 0xc0 or c == 0xc2 or c == 0xc3:
        return i
    if 0xa0 <= c <= 0xbf or c == 0xd9 or c == 0xda or c == 0xdb:
        i -= 1
        k = _mp_str(b, &i, n)
        return -1 if k < 0 else i + k
    if c == 0xc4 or c == 0xc5 or c == 0xc6:
        k = _mp_size(b, &i, n, 1 if c == 0xc4 else (2 if c == 0xc5 else 4))
        return -1 if k < 0 or k > n - i else i + k
    if c == 0xcc or c == 0xd0:
        return i + 1 if i + 1 <= n else -1
    if c == 0xcd or c == 0xd1:
        return i + 2 if i + 2 <= n else -1
    if c == 0xce or c == 0xd2 or c == 0xca:
        return i + 4 if i + 4 <= n else -1
    if c == 0xcf or c == 0xd3 or c == 0xcb:
        return i + 8 if i + 8 <= n else -1
    if 0xd4 <= c <= 0xd8:                   # fixext 1..16
        k = 1 + (1 << (c - 0xd4))
        return i + k if i + k <= n else -1
    if c == 0xc7 or c == 0xc8 or c == 0xc9:
        k = _mp_size(b, &i, n, 1 if c == 0xc7 else (2 if c == 0xc8 else 4))
        return -1 if k < 0 or k + 1 > n - i else i + k + 1
    if 0x90 <= c <= 0x9f or c == 0xdc or c == 0xdd:
        count = (c & 0x0f) if c <= 0x9f else _mp_size(b, &i, n, 2 if c == 0xdc else 4)
    elif 0x80 <= c <= 0x8f or c == 0xde or c == 0xdf:
        count = (c & 0x0f) if c <= 0x8f else _mp_size(b, &i, n, 2 if c == 0xde else 4)
        count *= 2
    else:
        return -1
    if count < 0:
        return -1
    for k in range(count):
        i = _mp_skip(b, i, n, depth + 1)
        if i < 0:
            return -1
    return i


cdef int _cq_rest(CqRun *r, CqIns *ins, CqVal *v) except -2:
    """Attribute ``ins.key`` from the msgpack block: 1 (``v`` set), 0
    absent, -1 a value the C reader does not take (the caller decodes)."""
    cdef const uint8_t *b = <const uint8_t *>r.rest
    cdef Py_ssize_t n = r.restn, i = 0, count, k, ln
    cdef uint8_t c
    cdef int64_t x
    if b == NULL or n == 0:
        return 0
    c = b[0]
    i = 1
    if 0x80 <= c <= 0x8f:
        count = c & 0x0f
    elif c == 0xde or c == 0xdf:
        count = _mp_size(b, &i, n, 2 if c == 0xde else 4)
    else:
        return -1
    for k in range(count):
        ln = _mp_str(b, &i, n)
        if ln < 0:
            return -1
        if ln != ins.keyn or memcmp(b + i, ins.key, ln) != 0:
            i = _mp_skip(b, i + ln, n, 0)
            if i < 0:
                return -1
            continue
        i += ln
        if i >= n:
            return -1
        c = b[i]
        v.err = 0
        if 0xa0 <= c <= 0xbf or 0xd9 <= c <= 0xdb:
            ln = _mp_str(b, &i, n)
            if ln < 0:
                return -1
            v.tag = CQ_STRING
            v.p = <const char *>b + i
            v.n = ln
            return 1
        if c == 0xc2 or c == 0xc3:
            _cq_bool(v, c == 0xc3, 0)
            return 1
        if c == 0xc0:
            return 0                        # None: absent
        if c <= 0x7f:
            x = c
        elif c >= 0xe0:
            x = <int8_t>c
        elif c == 0xcc or c == 0xcd or c == 0xce:
            i += 1
            x = _mp_size(b, &i, n, 1 if c == 0xcc else (2 if c == 0xcd else 4))
            if x < 0:
                return -1
        elif c == 0xd0 and i + 2 <= n:
            x = <int8_t>b[i + 1]
        elif c == 0xd1 and i + 3 <= n:
            x = <int16_t>((<uint16_t>b[i + 1] << 8) | b[i + 2])
        elif c == 0xd2 and i + 5 <= n:
            x = <int32_t>((<uint32_t>b[i + 1] << 24) | (<uint32_t>b[i + 2] << 16)
                          | (<uint32_t>b[i + 3] << 8) | b[i + 4])
        elif c == 0xc4 or c == 0xc5 or c == 0xc6:
            i += 1
            ln = _mp_size(b, &i, n, 1 if c == 0xc4 else (2 if c == 0xc5 else 4))
            if ln < 0 or ln > n - i:
                return -1
            _cq_base64(r, v, b + i, ln)
            return 1
        else:
            return -1                       # 64-bit integers, floats, ...: Python
        if -2147483648 <= x <= 2147483647:
            _cq_int(v, <int32_t>x, 0)
        else:
            _cq_decimal(r, v, x)
        return 1
    return 0


cdef int _cq_load(CqRun *r, CqIns *ins, CqVal *v) except -1:
    """Attribute ``ins`` of the input into ``v``: 1, or 0 if it is absent."""
    cdef int found
    cdef Event e
    v.err = 0
    if r.kind == CQI_MAPPING:
        x = (<object>r.event).get(<object>ins.obj)
        if x is None:
            return 0
        _cq_from_py(r, v, x)
        return 1
    if ins.attr == CQA_SOURCE:
        v.tag = CQ_STRING
        v.p = r.source
        v.n = r.sourcen
        return 1
    if ins.attr == CQA_TYPE:
        if r.type == NULL:
            _cq_str(r, v, <object>r.subject)
            return 1
        v.tag = CQ_STRING
        v.p = r.type
        v.n = r.typen
        return 1
    if ins.attr == CQA_ID:
        if r.id == NULL:
            if r.kind == CQI_EVENT:
                e = <Event>r.event
                return _cq_hex_id(r, v, e._gpre, e._gid) + 1
            return _cq_hex_id(r, v, _rd64(r.rec + EV_HEADER), _rd64(r.rec + EV_HEADER + 8)) + 1
        v.tag = CQ_STRING
        v.p = r.id
        v.n = r.idn
        return 1
    if ins.attr == CQA_SPECVERSION:
        v.tag = CQ_STRING
        v.p = b'1.0'
        v.n = 3
        return 1
    if r.kind == CQI_EVENT and (ins.attr == CQA_HOPS or ins.attr == CQA_TRACE):
        x = (<object>r.event).attributes().get(<object>ins.obj)   # lineage: as Python has it
        if x is None:
            return 0
        _cq_from_py(r, v, x)
        return 1
    if ins.attr == CQA_HOPS:
        if r.hops == 0:
            return 0
        _cq_int(v, r.hops, 0)
        return 1
    if ins.attr == CQA_TRACE:
        if r.tracen == 0:
            return 0
        v.tag = CQ_STRING
        v.p = r.trace
        v.n = r.tracen
        return 1
    if r.restd != NULL:
        x = (<dict>r.restd).get(<object>ins.obj)
        if x is None:
            return 0
        _cq_from_py(r, v, x)
        return 1
    found = _cq_rest(r, ins, v)
    if found >= 0:
        return found
    # a value the C reader does not take: the stored block decoded by Python
    block = PyBytes_FromStringAndSize(r.rest, r.restn)
    x = _attrs.decode_rest(block).get(<object>ins.obj)
    if x is None:
        return 0
    _cq_from_py(r, v, x)
    return 1


cdef int _cq_open_record(CqRun *r, object subject, const char *p, Py_ssize_t n) except -1:
    """Read the header of an event record (event.pyx's layout)."""
    cdef Py_ssize_t idn, off
    if n < EV_HEADER or <uint8_t>p[0] != EV_VERSION:
        raise FastflowError('record of {} bytes under {!r} is not an event record '
                            '(version byte {})'.format(n, subject, <uint8_t>p[0] if n else -1))
    r.kind = CQI_RECORD
    r.subject = <PyObject *>subject
    r.rec = p
    r.recn = n
    r.flags = <uint8_t>p[1]
    r.hops = _rd16(p + 2)
    idn = EV_GENID if r.flags & EVF_GENID else _rd16(p + 4)
    r.sourcen = _rd16(p + 6)
    r.typen = _rd16(p + 8)
    r.tracen = _rd16(p + 10)
    r.restn = _rd32(p + 12)
    off = EV_HEADER + idn + r.sourcen + r.typen + r.tracen + r.restn
    if off > n:
        raise FastflowError('event record of {} bytes under {!r} is truncated: its header '
                            'needs {}'.format(n, subject, off))
    off = EV_HEADER
    if r.flags & EVF_GENID:
        r.id = NULL
    else:
        r.id = p + off
        r.idn = idn
    off += idn
    r.source = p + off
    off += r.sourcen
    if r.flags & EVF_TYPE_SUBJECT:
        r.type = NULL
    else:
        r.type = p + off
    off += r.typen
    r.trace = p + off
    off += r.tracen
    r.rest = NULL
    if r.restn:
        r.rest = p + off
    return 0


cdef int _cq_open_event(CqRun *r, Event e) except -1:
    """Read an Event's fields (the caller holds ``e``, its rest block with it)."""
    r.kind = CQI_EVENT
    r.event = <PyObject *>e
    if e._id is None:
        r.id = NULL
    else:
        r.id = PyUnicode_AsUTF8AndSize(e._id, &r.idn)
    r.source = PyUnicode_AsUTF8AndSize(e.source, &r.sourcen)
    if e._type is None:
        r.type = PyUnicode_AsUTF8AndSize(e.routing_subject, &r.typen)
    else:
        r.type = PyUnicode_AsUTF8AndSize(e._type, &r.typen)
    if e._rest is not None:
        r.restd = <PyObject *>e._rest
    elif e._rest_raw is not None:
        r.rest = PyBytes_AS_STRING(e._rest_raw)
        r.restn = PyBytes_GET_SIZE(e._rest_raw)
    return 0


# -- the program ---------------------------------------------------------------------------

@cython.final
cdef class CesqlProgram:
    """A compiled CESQL expression (``fastflow.cesql.compile`` makes them):
    ``code`` (instructions ``(op, a, b)``, fastflow/_cesqlcode.py), ``consts``
    and ``type`` (the static return type's code).

    ``evaluate(event, fail_fast=False) -> (value, errors)``,
    ``matches(event) -> bool`` and ``match_batch(batch) -> list of indexes``
    take an ``Event``, a stored ``Record`` (or a ``Batch``'s records) or a
    mapping of attribute name -> value."""

    def __cinit__(self):
        self.ins = NULL

    def __init__(self, code, consts, int type):
        cdef Py_ssize_t k, depth = 0, n
        cdef CqIns *ins
        cdef CqRun r
        cdef int op, a, b
        code = tuple((int(op_), int(a_), int(b_)) for op_, a_, b_ in code)
        consts = tuple(consts)
        if not code:
            raise ValueError('a CESQL program needs at least one instruction')
        if not CQ_ANY <= type <= CQ_BOOLEAN:
            raise ValueError('unknown CESQL type code {}'.format(type))
        n = len(code)
        self.ins = <CqIns *>PyMem_Malloc(n * sizeof(CqIns))
        if self.ins == NULL:
            raise MemoryError()
        memset(self.ins, 0, n * sizeof(CqIns))
        self.nins = n
        self.code = code
        self.consts = consts
        self.type = type
        self.refs = []
        self.pycalls = False
        jumps = {}                          # jump target -> the stack depth there
        for k in range(n):
            op, a, b = code[k]
            ins = &self.ins[k]
            if jumps.get(k, depth) != depth:
                raise ValueError('a jump reaches instruction {} with another stack'.format(k))
            need = {CQ_NOT: 1, CQ_NEGATE: 1, CQ_LIKE: 1, CQ_LOGIC: 1, CQ_ARITH: 2,
                    CQ_COMPARE: 2, CQ_LOGIC2: 2, CQ_IN: a + 1, CQ_CALL: b}.get(op, 0)
            if depth < need:
                raise ValueError('instruction {} pops more than the stack holds'.format(k))
            ins.op = op
            ins.a = a
            ins.b = b
            if op in (CQ_PUSH, CQ_LOAD, CQ_EXISTS, CQ_LIKE, CQ_CALL, CQ_NOFUNC):
                if not 0 <= a < len(consts):
                    raise ValueError('instruction {} names constant {} of {}'.format(
                        k, a, len(consts)))
            if op == CQ_PUSH:
                x = consts[a]
                if _pytype(x) is bool:
                    _cq_bool(&ins.lit, x, 0)
                elif _pytype(x) is int:
                    if not -2147483648 <= x <= 2147483647:
                        raise ValueError('integer literal {} is outside 32 bits'.format(x))
                    _cq_int(&ins.lit, x, 0)
                elif _pytype(x) is str:
                    s = (<str>x).encode('utf-8', 'surrogatepass')
                    self.refs.append(s)
                    ins.lit.tag = CQ_STRING
                    ins.lit.p = PyBytes_AS_STRING(s)
                    ins.lit.n = PyBytes_GET_SIZE(s)
                else:
                    raise ValueError('literal of type {}'.format(_pytype(x).__name__))
                depth += 1
            elif op == CQ_LOAD or op == CQ_EXISTS:
                name = consts[a]
                if _pytype(name) is not str:
                    raise ValueError('attribute name {!r} is not a str'.format(name))
                s = (<str>name).encode('utf-8', 'surrogatepass')
                self.refs.append(s)
                self.refs.append(name)
                ins.key = PyBytes_AS_STRING(s)
                ins.keyn = PyBytes_GET_SIZE(s)
                ins.obj = <PyObject *>name
                ins.attr = _CQ_ATTRS.get(name, CQA_REST)
                depth += 1
            elif op == CQ_LIKE:
                pat, kinds = _cq_like_compile(consts[a])
                self.refs.append(pat)
                self.refs.append(kinds)
                ins.key = PyBytes_AS_STRING(pat)
                ins.kinds = <const uint8_t *>PyBytes_AS_STRING(kinds)
                ins.keyn = PyBytes_GET_SIZE(pat)
            elif op == CQ_NOT or op == CQ_NEGATE:
                pass
            elif op == CQ_ARITH or op == CQ_COMPARE or op == CQ_LOGIC2:
                depth -= 1
            elif op == CQ_LOGIC:
                if not k < b <= n or jumps.get(b, depth) != depth:
                    raise ValueError('instruction {} jumps to {}'.format(k, b))
                jumps[b] = depth
            elif op == CQ_IN:
                if a < 1:
                    raise ValueError('IN of {} items'.format(a))
                depth -= a
            elif op == CQ_CALL:
                fn = consts[a]
                if len(fn) != 3 or len(fn[0]) != b or not callable(fn[2]):
                    raise ValueError('instruction {}: {!r} is no function of {} '
                                     'parameters'.format(k, fn, b))
                self.refs.append(fn)
                ins.obj = <PyObject *>fn
                ins.ret = fn[1]
                if fn[2] is _cq_fn_length:
                    ins.native = CQN_LENGTH
                else:
                    self.pycalls = True
                depth += 1 - b
            elif op == CQ_NOFUNC:
                self.refs.append(consts[a])
                ins.obj = <PyObject *>consts[a]
                depth += 1
            else:
                raise ValueError('unknown CESQL instruction {} at {}'.format(op, k))
            if depth > self.depth:
                self.depth = depth
        if depth != 1 or jumps.get(n, 1) != 1:
            raise ValueError('the program leaves {} values'.format(depth))

    def __dealloc__(self):
        PyMem_Free(self.ins)

    # -- evaluation --------------------------------------------------------------------------

    cdef int _exec(self, CqRun *r, CqVal *st, CqVal *out) except -1:
        cdef Py_ssize_t pc = 0, sp = 0, k
        cdef CqIns *ins
        cdef CqVal *v
        cdef CqVal *w
        cdef int op, e1, e2, bad
        cdef int64_t x, y, z
        cdef bint found
        while pc < self.nins and not r.stop:      # (fail-fast: stop at the first error)
            if FASTFLOW_DEBUG and not 0 <= sp <= self.depth:
                raise FastflowError('CesqlProgram._exec: stack at {} before instruction {}, '
                                    'sized {}'.format(sp, pc, self.depth))
            ins = &self.ins[pc]
            pc += 1
            op = ins.op
            if op == CQ_PUSH:
                st[sp] = ins.lit
                sp += 1
            elif op == CQ_LOAD:
                v = &st[sp]
                sp += 1
                if not _cq_load(r, ins, v):
                    _cq_bool(v, False, 1)
                    _cq_error(r, _cq.missing_attribute(<object>ins.obj) if r.collect else None)
            elif op == CQ_EXISTS:
                v = &st[sp]
                sp += 1
                found = _cq_load(r, ins, v)
                _cq_bool(v, found, 0)
            elif op == CQ_NOT or op == CQ_NEGATE or op == CQ_LIKE:
                v = &st[sp - 1]
                if _cq_cast(r, v, CQ_BOOLEAN if op == CQ_NOT else (
                        CQ_INTEGER if op == CQ_NEGATE else CQ_STRING)):
                    v.err = 1
                if v.err:
                    _cq_zero(v, CQ_INTEGER if op == CQ_NEGATE else CQ_BOOLEAN)
                elif op == CQ_NOT:
                    v.i = not v.i
                elif op == CQ_LIKE:
                    found = _cq_like(<const uint8_t *>v.p, v.n, <const uint8_t *>ins.key,
                                     ins.kinds, ins.keyn)
                    _cq_bool(v, found != ins.b, 0)
                elif v.i == -2147483648:
                    _cq_int(v, 2147483647, 1)
                    _cq_error(r, _cq.negate_error() if r.collect else None)
                else:
                    v.i = -v.i
            elif op == CQ_ARITH:
                sp -= 1
                w = &st[sp]
                v = &st[sp - 1]
                if v.err or w.err:
                    _cq_zero(v, CQ_INTEGER)
                    continue
                e1 = _cq_cast(r, v, CQ_INTEGER)
                if r.stop:
                    break
                e2 = _cq_cast(r, w, CQ_INTEGER)
                if e1 or e2:
                    _cq_zero(v, CQ_INTEGER)
                    continue
                x = v.i
                y = w.i
                if ins.a == CQ_ADD:
                    z = x + y
                elif ins.a == CQ_SUB:
                    z = x - y
                elif ins.a == CQ_MUL:
                    z = x * y
                elif y == 0:
                    _cq_zero(v, CQ_INTEGER)
                    _cq_error(r, _cq.math_error(ins.a, x, y) if r.collect else None)
                    continue
                elif ins.a == CQ_DIV:
                    z = cython.cdiv(x, y)       # truncates towards 0
                else:
                    z = cython.cmod(x, y)       # the sign of x
                if not -2147483648 <= z <= 2147483647:
                    _cq_zero(v, CQ_INTEGER)
                    _cq_error(r, _cq.math_error(ins.a, x, y) if r.collect else None)
                    continue
                _cq_int(v, <int32_t>z, 0)
            elif op == CQ_COMPARE:
                sp -= 1
                w = &st[sp]
                v = &st[sp - 1]
                if v.err or w.err:
                    _cq_zero(v, CQ_BOOLEAN)
                    continue
                if ins.a == CQ_EQ or ins.a == CQ_NE:
                    # = != <> are ambiguous: x is cast to the right operand's type
                    if _cq_cast(r, v, w.tag):
                        _cq_zero(v, CQ_BOOLEAN)
                        continue
                    found = _cq_equal(v, w)
                    _cq_bool(v, found == (ins.a == CQ_EQ), 0)
                    continue
                # < <= > >= compare Integers only
                e1 = _cq_cast(r, v, CQ_INTEGER)
                if r.stop:
                    break
                e2 = _cq_cast(r, w, CQ_INTEGER)
                if e1 or e2:
                    _cq_zero(v, CQ_BOOLEAN)
                    continue
                if ins.a == CQ_LT:
                    found = v.i < w.i
                elif ins.a == CQ_LE:
                    found = v.i <= w.i
                elif ins.a == CQ_GT:
                    found = v.i > w.i
                else:
                    found = v.i >= w.i
                _cq_bool(v, found, 0)
            elif op == CQ_LOGIC:
                v = &st[sp - 1]
                if _cq_cast(r, v, CQ_BOOLEAN):
                    v.err = 1
                if not v.err:
                    # short circuit: the right operand is not evaluated
                    if (ins.a == CQ_AND and not v.i) or (ins.a == CQ_OR and v.i):
                        pc = ins.b
                elif ins.a == CQ_AND:
                    _cq_zero(v, CQ_BOOLEAN)
                    pc = ins.b
            elif op == CQ_LOGIC2:
                sp -= 1
                w = &st[sp]
                v = &st[sp - 1]
                if _cq_cast(r, w, CQ_BOOLEAN):
                    w.err = 1
                if v.err or w.err:
                    _cq_zero(v, CQ_BOOLEAN)
                elif ins.a == CQ_AND:
                    v.i = v.i and w.i
                elif ins.a == CQ_OR:
                    v.i = v.i or w.i
                else:
                    v.i = v.i != w.i
            elif op == CQ_IN:
                sp -= ins.a
                v = &st[sp - 1]
                bad = v.err
                for k in range(ins.a):
                    bad |= st[sp + k].err
                if bad:
                    _cq_zero(v, CQ_BOOLEAN)
                    continue
                found = False
                for k in range(ins.a):
                    w = &st[sp + k]
                    if _cq_cast(r, w, v.tag):
                        bad = 1
                        if r.stop:
                            break
                    elif _cq_equal(v, w):
                        found = True
                if bad:
                    _cq_zero(v, CQ_BOOLEAN)
                else:
                    _cq_bool(v, found != ins.b, 0)
            elif op == CQ_CALL:
                sp -= ins.b
                self._call(r, ins, &st[sp])
                sp += 1
            else:  # CQ_NOFUNC
                v = &st[sp]
                sp += 1
                _cq_bool(v, False, 1)
                _cq_error(r, _cq.missing_function(<object>ins.obj) if r.collect else None)
        if not r.stop:
            out[0] = st[0]
        return 0

    cdef int _call(self, CqRun *r, CqIns *ins, CqVal *args) except -1:
        """A built-in function on ``args`` (``ins.b`` of them); the result
        goes to ``args[0]``."""
        cdef Py_ssize_t k, n = ins.b, count
        cdef int bad = 0
        cdef tuple fn = <tuple>ins.obj
        cdef tuple params = fn[0]
        cdef const uint8_t *s
        for k in range(n):
            bad |= args[k].err
        if bad:
            _cq_zero(args, ins.ret)
            return 0
        for k in range(n):
            if _cq_cast(r, &args[k], <object>PyTuple_GET_ITEM(params, k)):
                bad = 1
                if r.stop:
                    return 0
        if bad:
            _cq_zero(args, ins.ret)
            return 0
        if ins.native == CQN_LENGTH:
            s = <const uint8_t *>args[0].p
            count = 0
            for k in range(args[0].n):
                count += (s[k] & 0xc0) != 0x80
            _cq_int(args, <int32_t>count, 0)
            return 0
        values = [_cq_py(&args[k]) for k in range(n)]
        value, err = fn[2](*values)
        _cq_from_py(r, args, value)
        if err is not None:
            args.err = 1
            _cq_error(r, err if r.collect else None)
        return 0

    cdef object _result(self, CqRun *r, CqVal *v):
        if r.stop:
            return _cq.ZERO[self.type]
        return _cq_py(v)

    cdef int _run(self, CqRun *r, CqVal *out) except -1:
        cdef CqVal inline_stack[CQ_STACK]
        cdef CqVal *st = inline_stack
        if self.depth > CQ_STACK:
            st = <CqVal *>PyMem_Malloc(self.depth * sizeof(CqVal))
            if st == NULL:
                raise MemoryError()
        try:
            self._exec(r, st, out)
        finally:
            if st != inline_stack:
                PyMem_Free(st)
        return 0

    cdef int _open(self, CqRun *r, object event, list hold) except -1:
        """Point ``r`` at ``event``; ``hold`` keeps what it reads alive."""
        cdef Record rec
        cdef Py_buffer view
        if type(event) is Event:
            if (<Event>event)._rest_raw is not None:
                hold.append((<Event>event)._rest_raw)
            return _cq_open_event(r, <Event>event)
        if type(event) is Record:
            rec = <Record>event
            rec._resolve()
            if self.pycalls:
                # Python code may run during the evaluation: read a copy
                data = PyBytes_FromStringAndSize(rec.log.arena + rec.pos, rec.len)
                hold.append(data)
                return _cq_open_record(r, rec.subject, PyBytes_AS_STRING(data), rec.len)
            return _cq_open_record(r, rec.subject, rec.log.arena + rec.pos, rec.len)
        attributes = getattr(event, 'attributes', None)
        if callable(attributes):
            event = attributes()
        hold.append(event)
        r.kind = CQI_MAPPING
        r.event = <PyObject *>event
        return 0

    def evaluate(self, event, bint fail_fast=False):
        """``(value, errors)`` of the expression for ``event``; with
        ``fail_fast``, the zero value of its type and the first error."""
        cdef CqRun r
        cdef CqVal out
        cdef list hold = []
        _cq_init(&r, fail_fast, True)
        try:
            self._open(&r, event, hold)
            self._run(&r, &out)
            value = self._result(&r, &out)
            errors = [] if r.errors == NULL else (<list>r.errors)[:1 if r.stop else None]
        finally:
            _cq_free(&r)
        return value, errors

    def matches(self, event):
        """The filter result: true only for the Boolean true without an error."""
        cdef CqRun r
        cdef CqVal out
        cdef list hold = []
        _cq_init(&r, True, False)
        try:
            self._open(&r, event, hold)
            self._run(&r, &out)
        finally:
            _cq_free(&r)
        return not r.stop and out.tag == CQ_BOOLEAN and out.i != 0

    def match_batch(self, Batch batch not None):
        """The indexes (a list) of the records of a log ``Batch`` that match;
        one call for the whole batch."""
        cdef CqRun r
        cdef CqVal out
        cdef Py_buffer view
        cdef Py_ssize_t i, n = batch.offsets.n - 1
        cdef const char *base
        cdef list found = []
        cdef object subject
        _cq_init(&r, True, False)
        PyObject_GetBuffer(batch.buffer, &view, PyBUF_SIMPLE)
        try:
            base = <const char *>view.buf
            for i in range(n):
                subject = <object>PyList_GET_ITEM(batch.subjects, i)
                _cq_open_record(&r, subject, base + batch.offsets.data[i],
                                batch.offsets.data[i + 1] - batch.offsets.data[i])
                self._run(&r, &out)
                if not r.stop and out.tag == CQ_BOOLEAN and out.i != 0:
                    found.append(i)
                _cq_reset(&r)
        finally:
            PyBuffer_Release(&view)
            _cq_free(&r)
        return found

    def __repr__(self):
        return '<CesqlProgram {} instructions>'.format(self.nins)
