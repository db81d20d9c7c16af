# The C types of cejson.pyx (the JSON event decoder) and the interface of
# its class (the bodies and docstrings are there).

from libc.stdint cimport int64_t, uint8_t

cdef enum:
    CJ_MAX_MEMBERS = 64         # members of an event object the C path reads itself
    CJ_MAX_DEPTH = 64           # nesting of a member value (data) the C path reads itself

ctypedef struct CjMember:       # one member of an event object
    const uint8_t *key          # the key's characters (between its quotes)
    Py_ssize_t keyn
    const uint8_t *v            # the value's JSON text (a string's with its quotes)
    Py_ssize_t vn
    const uint8_t *s            # a string value's characters, UTF-8, escapes resolved
    Py_ssize_t sn               # (set by _cj_resolve)
    int64_t num                 # an integer value (an extension, ffhops)
    uint8_t kind                # CjKind
    uint8_t esc                 # a string value with escapes (s not resolved yet)
    uint8_t kesc                # a key with escapes
    uint8_t attr                # CjAttr
    uint8_t rest                # an entry of the rest (the msgpack map of the record)

ctypedef struct CjEvent:        # an event object, as _cj_members and _cj_attrs read it
    int n                       # members kept in m
    bint many                   # more than CJ_MAX_MEMBERS (the others not kept)
    int id                      # indexes in m of the attributes with a place of
    int source                  # their own in the record (-1: none)
    int type
    int trace
    int data
    int b64
    int ct
    int hops
    int nrest                   # entries of the rest (the default datacontenttype counted)
    bint ct_default             # data without datacontenttype: application/json, last
    int dmode                   # CjData
    const uint8_t *dp           # the data (CJD_JSON, CJD_STRING) or its Base64 (CJD_BASE64)
    Py_ssize_t dn
    Py_ssize_t dlen             # bytes of the data
    CjMember m[CJ_MAX_MEMBERS]

ctypedef struct CjScratch:      # the strings of one event with their escapes resolved
    uint8_t *p
    Py_ssize_t n
    Py_ssize_t cap


cdef class _JsonRecords:
    cdef char *buf                          # the records, one after the other
    cdef Py_ssize_t cap
    cdef Py_ssize_t size
    cdef I64Vec ends                        # where each record ends in buf
    cdef list subjects                      # each record's routing subject (a str),
                                            # when each is its event's type
    cdef str routing_subject                # every record's, or None: each event's type
    cdef str last_type                      # the last type made a subject (checked)
    cdef object subject_error               # the first event whose type is no subject

    cdef int fill(self, object body, str routing_subject, bint batch) except -1
    cdef int _add(self, CjEvent *ev) except -1
    cdef int _add_event(self, Event e) except -1
    cdef int _add_subject(self, str subject) except -1
    cdef int _from_reference(self, object body, bint batch) except -1
    cdef char *_room(self, Py_ssize_t n) except NULL
