# Types of subindex.pyx.

from libc.stdint cimport int32_t, uint32_t, uint64_t

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
