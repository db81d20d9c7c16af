# The C types of cesql.pyx (compiled CESQL programs) and the interface of
# its class (the bodies and docstrings are there).

from libc.stdint cimport int32_t, uint8_t
from cpython.object cimport PyObject

cdef enum:
    CQ_STACK = 32               # stack entries of an evaluation held inline
    CQ_SCRATCH = 512            # bytes of an evaluation's inline string buffer

ctypedef struct CqVal:          # a value on the stack
    int tag                     # CqType: CQ_STRING, CQ_INTEGER or CQ_BOOLEAN
    int err                     # computing it added an error
    int32_t i                   # an Integer, or a Boolean (0/1)
    const char *p               # a String: UTF-8, borrowed (record, literal, scratch)
    Py_ssize_t n

ctypedef struct CqIns:          # one instruction, its operands resolved
    int op                      # CqOp
    int a
    int b
    int attr                    # LOAD/EXISTS: CqAttr
    int ret                     # CALL: the return type
    int native                  # CALL: a body done in C (CqNative), 0: call Python
    CqVal lit                   # PUSH: the literal
    const char *key             # LOAD/EXISTS: the name (UTF-8); LIKE: the pattern's bytes
    const uint8_t *kinds        # LIKE: per pattern byte, CqLike
    Py_ssize_t keyn
    PyObject *obj               # LOAD/EXISTS: the name (str); CALL: (params, ret, body)

ctypedef struct CqRun:          # one evaluation
    int kind                    # CqInput
    PyObject *event             # the Event, or the mapping (borrowed)
    PyObject *subject           # a record's routing subject (str, borrowed)
    const char *rec             # a record's bytes
    Py_ssize_t recn
    uint8_t flags               # the record's header, read once
    int hops
    const char *id
    Py_ssize_t idn
    const char *source
    Py_ssize_t sourcen
    const char *type
    Py_ssize_t typen
    const char *trace
    Py_ssize_t tracen
    const char *rest            # the msgpack map of the other attributes (NULL: none)
    Py_ssize_t restn
    PyObject *restd             # an Event's decoded rest (a dict) or NULL
    bint fail_fast
    bint collect                # make error objects (evaluate), or only stop (matches)
    bint stop                   # fail-fast: the first error happened
    PyObject *errors            # a list (owned) or NULL
    PyObject *keep              # a list (owned) of objects values point into, or NULL
    Py_ssize_t used             # bytes of scratch in use
    char scratch[CQ_SCRATCH]


cdef class CesqlProgram:
    cdef readonly tuple code
    cdef readonly tuple consts
    cdef readonly int type
    cdef CqIns *ins
    cdef Py_ssize_t nins
    cdef Py_ssize_t depth
    cdef bint pycalls           # a CALL runs Python (the record is copied first)
    cdef list refs              # the objects the instructions point into

    cdef int _exec(self, CqRun *r, CqVal *stack, CqVal *out) except -1
    cdef int _call(self, CqRun *r, CqIns *ins, CqVal *args) except -1
    cdef object _result(self, CqRun *r, CqVal *v)
    cdef int _run(self, CqRun *r, CqVal *out) except -1
    cdef int _open(self, CqRun *r, object event, list hold) except -1
