# Types of subindex.pyx.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

ctypedef struct SiEntry:        # one key of the table (32 bytes)
    uint64_t hash               # of the tag and the value
    char *value                 # the value's UTF-8 bytes (owned); NULL: an empty slot
    uint32_t len
    uint32_t tag                # the attribute (+ SI_ATTRS: a prefix key)
    uint32_t n                  # handles that hold the key
    uint32_t cap
    int32_t *handles            # (owned)

ctypedef struct SiLen:          # a prefix length in use for one attribute
    uint32_t attr
    uint32_t len                # bytes
    Py_ssize_t keys             # prefix keys of this attribute and length

ctypedef struct SiSink:         # a handle's sink (route_batch delivers itself)
    uint8_t on                  # 0: none; 1; 2: one hop more
    uint8_t nres                # words in res (0: not matched for this version)
    int64_t n                   # records delivered
    void *obj                   # the subject, a str (borrowed: sink_objs holds it)
    const char *subj            # its UTF-8 (in the str)
    Py_ssize_t subjn
    uint64_t hash               # the router's hash of it
    uint64_t version            # the router matcher's version res is of
    int64_t res[SI_SINK_RES]    # the router matcher's result for the subject
