# The subject matcher: a token trie with an interned token table, one
# open-addressing edge table for all nodes, queue groups and a bounded,
# direct-mapped result cache.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from cpython.ref cimport PyObject

ctypedef struct Node:           # 16 bytes
    int32_t parent              # node id; -1 for the root; next free id when free
    uint32_t thash              # hash of the token of the edge from parent
                                # (HASH_PWC / HASH_FWC for wildcard children)
    int32_t subs                # first subscription (circular list), or -1
    uint32_t nref               # NODE_COUNT bits: children + subscriptions
                                # (0 = prunable); NODE_HAS_PWC, NODE_HAS_FWC;
                                # NODE_FREE when the slot is free

ctypedef struct Edge:           # 12 bytes
    uint32_t parent             # FF_EMPTY when the slot is empty
    uint32_t child
    uint32_t aoff               # the token in the arena, or AOFF_PWC / AOFF_FWC

ctypedef struct Sub:
    PyObject *value             # owned reference; NULL when the slot is free
    int32_t node
    int32_t next                # circular doubly-linked list of a node's subs
    int32_t prev                # (next free slot when free)
    int32_t queue               # queue id, or -1 for a plain subscriber
    uint32_t gen                # bumped on reuse: stale handles never match

ctypedef struct CacheBlock:     # one malloc: this header, the result, the subject
    uint32_t len                # subject bytes
    uint32_t nres               # int64 words of the result that follows:
                                # nplain, ngroups, plain handles...,
                                # then per group: qid, n, member handles...
    uint32_t ggen               # the matcher's generations when cached: the
    uint32_t fgen               # entry is valid while both are current
    uint32_t fslot              # the generation slot of its first token
    uint32_t pad

ctypedef struct CacheEntry:     # 16 bytes: a bucket of CACHE_WAYS is one cache line
    uint64_t hash
    CacheBlock *blk             # NULL = empty

ctypedef struct BatchSlot:      # match_batch's look-ahead ring
    const char *p
    Py_ssize_t n
    uint64_t h
    bint ok

ctypedef struct I64Vec:
    int64_t *data
    Py_ssize_t n
    Py_ssize_t cap

ctypedef struct I32Vec:
    int32_t *data
    Py_ssize_t n
    Py_ssize_t cap


