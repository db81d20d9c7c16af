# The interface of native_in.pyx's classes (the bodies and docstrings are there).

cdef class MsgBatch:
    cdef readonly Int64Array sids
    cdef readonly Int64Array flags
    cdef readonly Int64Array offsets        # record i: buffer[offsets[i]:offsets[i+1]]
    cdef readonly list subjects
    cdef readonly list replies              # str, or None
    cdef readonly bytes buffer
    cdef char *b
    cdef Py_ssize_t bn
    cdef Py_ssize_t bcap

    cdef int _add(self, int64_t sid, int flags, object subject, object reply, const char *rec,
                  Py_ssize_t rn) except -1
    cdef int _seal(self) except -1


cdef class FrameParser(DoorParser):
    cdef public bint batch_msgs            # MSG frames as ('msgs', MsgBatch) runs
    cdef bytes last_sb                     # the last MSG subject (bytes and str):
    cdef str last_ss                       # a stream of one subject decodes it once
    cdef readonly int64_t frames_in

    cdef object _malformed_before(self)
    cdef object _subject_str(self, const char *s, Py_ssize_t sn)
    cdef Py_ssize_t _parse(self, const char *p, Py_ssize_t n, list out) except -1
    cdef int _route_batch(self, const char *b, Py_ssize_t bn, uint32_t fid,
                          list out) except -1
    cdef int _route_pub(self, const char *s, Py_ssize_t sn, const char *r, Py_ssize_t rn,
                        const char *b, Py_ssize_t bn, uint32_t fid, list out) except -1
