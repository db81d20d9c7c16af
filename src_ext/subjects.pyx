# Tokenising and validation of subjects and patterns (included by core.pyx).
#
# One pass over the bytes: a 256-entry class table finds the dots and the
# forbidden bytes, each literal token is hashed once, and the checks run in
# the same order as fastflow/_ref/subjects.py so that both raise the same
# message for the same input.

from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_Check,
                            PyBytes_FromStringAndSize)
from cpython.unicode cimport PyUnicode_Check
from libc.string cimport memcmp

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL
    bint PyUnicode_IS_COMPACT_ASCII(object s)
    void *PyUnicode_DATA(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)

cdef uint8_t _BYTE_CLASS[256]
cdef uint64_t _SEED = 0


cdef _init_subjects():
    global _SEED
    cdef int c
    for c in range(256):
        _BYTE_CLASS[c] = BC_PLAIN
    for c in range(0x21):
        _BYTE_CLASS[c] = BC_BAD
    _BYTE_CLASS[0x7f] = BC_BAD
    _BYTE_CLASS[ord('.')] = BC_DOT
    _BYTE_CLASS[ord('*')] = BC_STAR
    _BYTE_CLASS[ord('>')] = BC_GT
    _SEED = int.from_bytes(os.urandom(8), 'little') | 1


_init_subjects()


cdef str _show(object subject):
    """The subject as error messages quote it (shortened when long)."""
    if isinstance(subject, (bytes, bytearray, memoryview)):
        subject = bytes(subject).decode('utf-8', 'replace')
    if len(subject) > 80:
        subject = subject[:64] + '...'
    return repr(subject)


cdef object _subject_error(bint pattern, object orig, str reason):
    return SubjectError('invalid {} {}: {}'.format(
        'pattern' if pattern else 'subject', _show(orig), reason))


cdef inline int _count_tokens(const char *p, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    cdef int c = 1
    for i in range(n):
        if p[i] == b'.':
            c += 1
    return c


cdef inline bint _as_utf8_fast(object s, const char **p, Py_ssize_t *n) noexcept:
    """The UTF-8 bytes of an ASCII str or of bytes, without any call that
    could fail; False for anything else (then as_utf8 does the work)."""
    if PyUnicode_Check(s):
        if PyUnicode_IS_COMPACT_ASCII(s):
            # ASCII str: its characters are its UTF-8 bytes
            p[0] = <const char *>PyUnicode_DATA(s)
            n[0] = PyUnicode_GET_LENGTH(s)
            return True
        return False
    if PyBytes_Check(s):
        p[0] = PyBytes_AS_STRING(s)
        n[0] = PyBytes_GET_SIZE(s)
        return True
    return False


cdef inline int as_utf8(object s, const char **p, Py_ssize_t *n, bint pattern) except -1:
    if _as_utf8_fast(s, p, n):
        return 0
    return _as_utf8_slow(s, p, n, pattern)


cdef int _as_utf8_slow(object s, const char **p, Py_ssize_t *n, bint pattern) except -1:
    if PyUnicode_Check(s):
        try:
            p[0] = PyUnicode_AsUTF8AndSize(s, n)
        except UnicodeEncodeError:
            raise _subject_error(pattern, s, 'not encodable as UTF-8') from None
    elif PyBytes_Check(s):
        p[0] = PyBytes_AS_STRING(s)
        n[0] = PyBytes_GET_SIZE(s)
    else:
        raise TypeError('{} must be str or bytes, not {}'.format(
            'pattern' if pattern else 'subject', type(s).__name__))
    return 0


cdef int parse_subject(const char *p, Py_ssize_t n, Parsed *out, bint pattern,
                       object orig) except -1:
    cdef Py_ssize_t i = 0, start, end
    cdef int ntok = 0
    cdef uint8_t cls, first_wc
    cdef Tok *t
    if n == 0:
        raise _subject_error(pattern, orig, 'empty pattern' if pattern else 'empty subject')
    if n > MAX_SUBJECT_LEN:
        raise _subject_error(pattern, orig, '{} bytes, the limit is {}'.format(
            n, MAX_SUBJECT_LEN))
    out.p = p
    out.n = n
    out.nwild = 0
    while True:
        if ntok == MAX_TOKENS:
            raise _subject_error(pattern, orig, '{} tokens, the limit is {}'.format(
                _count_tokens(p, n), MAX_TOKENS))
        start = i
        first_wc = 0
        while i < n:
            cls = _BYTE_CLASS[<uint8_t>p[i]]
            if cls == BC_PLAIN:
                i += 1
                continue
            if cls == BC_DOT:
                break
            if cls == BC_BAD:
                end = i
                while end < n and p[end] != b'.':
                    end += 1
                raise _subject_error(
                    pattern, orig,
                    'character {!r} not allowed in token {} at position {}'.format(
                        chr(<uint8_t>p[i]), _show(p[start:end]), ntok + 1))
            if first_wc == 0:
                first_wc = cls
            i += 1
        t = &out.toks[ntok]
        ntok += 1
        t.off = <uint32_t>start
        t.len = <uint32_t>(i - start)
        if t.len == 0:
            raise _subject_error(pattern, orig, 'empty token at position {}'.format(ntok))
        if first_wc:
            if t.len != 1:
                raise _subject_error(
                    pattern, orig, 'wildcard {!r} inside token {} at position {}'.format(
                        '*' if first_wc == BC_STAR else '>', _show(p[start:i]), ntok))
            if not pattern:
                raise _subject_error(
                    pattern, orig,
                    'wildcard {!r} at position {}: a publish subject must be '
                    'literal'.format('*' if first_wc == BC_STAR else '>', ntok))
            if first_wc == BC_GT:
                if i < n:
                    raise _subject_error(
                        pattern, orig,
                        "'>' must be the last token, found at position {} of {}".format(
                            ntok, _count_tokens(p, n)))
                t.kind = TK_FWC
            else:
                t.kind = TK_PWC
            t.hash = 0
            out.nwild += 1
        else:
            t.kind = TK_LITERAL
            t.hash = <uint32_t>ff_hash(p + start, t.len, _SEED)
        if i >= n:
            break
        i += 1  # the dot
    out.ntok = ntok
    return 0


cdef int check_reply(const char *p, Py_ssize_t n) except -1:
    """Raise SubjectError unless p[:n] is a valid literal subject: a reply
    subject is written into other clients' wire lines (a NATS MSG line, a
    native MSG frame), so it is held to the rules of a publish subject."""
    cdef Py_ssize_t i, start = 0
    cdef int ntok = 1
    cdef uint8_t cls
    if n <= 0 or n > MAX_SUBJECT_LEN:
        return _reply_error(p, n)
    for i in range(n):
        cls = _BYTE_CLASS[<uint8_t>p[i]]
        if cls == BC_PLAIN:
            continue
        if cls != BC_DOT or i == start:
            return _reply_error(p, n)
        start = i + 1
        ntok += 1
    if start == n or ntok > MAX_TOKENS:
        return _reply_error(p, n)
    return 0


cdef int _reply_error(const char *p, Py_ssize_t n) except -1:
    """The SubjectError of an invalid reply subject (the slow path)."""
    cdef Parsed ps
    orig = PyBytes_FromStringAndSize(p, n)
    try:
        parse_subject(p, n, &ps, False, orig)
    except SubjectError as exc:
        raise SubjectError('invalid reply ' + str(exc)[8:]) from None
    return 0


cdef inline void ptoks_of(Parsed *ps, PTok *pt) noexcept:
    cdef int i
    for i in range(ps.ntok):
        pt[i].p = ps.p + ps.toks[i].off
        pt[i].len = ps.toks[i].len
        pt[i].kind = ps.toks[i].kind


cdef bint pattern_matches(PTok *pt, int ntok, const char *s, Py_ssize_t n) noexcept:
    """Does the (valid) pattern ``pt`` match the (valid) subject ``s[:n]``?
    The same rules as the matcher's trie walk, the ``$`` rule included."""
    cdef Py_ssize_t pos = 0, end
    cdef int j = 0
    if pt[0].kind != TK_LITERAL and n and s[0] == b'$':
        return False
    while True:
        end = pos
        while end < n and s[end] != b'.':
            end += 1
        if pt[j].kind == TK_FWC:
            return True
        if pt[j].kind == TK_LITERAL and (<Py_ssize_t>pt[j].len != end - pos
                                         or memcmp(pt[j].p, s + pos, end - pos) != 0):
            return False
        j += 1
        pos = end + 1
        if j == ntok or end >= n:
            return j == ntok and end >= n


def validate_subject(subject):
    """Raise ``SubjectError`` unless ``subject`` is a valid literal subject."""
    cdef const char *p
    cdef Py_ssize_t n
    cdef Parsed ps
    as_utf8(subject, &p, &n, False)
    parse_subject(p, n, &ps, False, subject)


def validate_pattern(pattern):
    """Raise ``SubjectError`` unless ``pattern`` is a valid subscription pattern."""
    cdef const char *p
    cdef Py_ssize_t n
    cdef Parsed ps
    as_utf8(pattern, &p, &n, True)
    parse_subject(p, n, &ps, True, pattern)
