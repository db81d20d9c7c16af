# Limits and enums of the native core, in one place.

cdef enum:
    MAX_SUBJECT_LEN = 1024          # bytes (UTF-8) per subject or pattern
    MAX_TOKENS = 128                # tokens per subject or pattern
    DEFAULT_CACHE_SIZE = 65536      # result-cache entries (rounded up to 2**k)
    CACHE_WAYS = 4                  # entries per bucket (set-associative)
    CACHE_FIRST_SLOTS = 4096        # generation counters by first token (2**k)
    BULK_REMOVE_FLUSH = 256         # remove_many: from this many, one cache flush
    DEFAULT_CACHE_MAX_BYTES = 67108864   # 64 MiB for all cached results
    CACHE_MAX_RESULT = 16384        # words; larger results are not cached
    BATCH_RING = 64                 # match_batch look-ahead ring (2**k slots)
    BATCH_AHEAD_OBJ = 24            # prefetch the subject object this far ahead
    BATCH_AHEAD_HASH = 12            # hash it and prefetch its cache bucket
    BATCH_AHEAD_BLOCK = 6           # prefetch its cached result block

# The router's subject sampler (Router.sample_subjects): a buffer of entries,
# each a uint32 weight (sampled events), a uint16 subject length and the
# subject's bytes (at most MAX_SUBJECT_LEN).
cdef enum:
    SAMPLE_BYTES = 65536            # 64 KiB of entries between two take_samples
    SAMPLE_HEAD = 6                 # bytes of an entry before its subject

# Byte classes of the subject scanner.
cdef enum ByteClass:
    BC_PLAIN = 0
    BC_DOT = 1
    BC_STAR = 2
    BC_GT = 3
    BC_BAD = 4                      # space, ASCII control characters, DEL

# Token kinds of a parsed subject or pattern.
cdef enum TokKind:
    TK_LITERAL = 0
    TK_PWC = 1                      # '*'
    TK_FWC = 2                      # '>'

# The subscription index (subindex.pyx).
cdef enum:
    SI_MAX_HANDLE = 16777216        # handles are 0 .. SI_MAX_HANDLE - 1 (2**24)
    SI_MAX_VALUE = 65535            # UTF-8 bytes of an exact or prefix value
    SI_MIN_SLOTS = 64               # key table slots, at least (2**k)
    SI_MP_DEPTH = 16                # msgpack nesting the subject reader skips over
    SI_SINK_RES = 6                 # matcher result words a sink keeps (more: matched each time)
    SI_AHEAD = 4                    # route_batch prefetches the subject this many pairs ahead
    SI_ATTRS = 3                    # type, source, subject

# An index key's attribute; its table's tag: the attribute for an exact key,
# SI_ATTRS + the attribute for a prefix key.
cdef enum:
    SI_TYPE = 0
    SI_SOURCE = 1
    SI_SUBJECT = 2
