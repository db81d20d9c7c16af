# The native protocol's frame layout, op codes and flags (docs/protocol.md):
# the C side of fastflow/protocol.py (a test checks that both agree).

cdef enum:
    FR_HEADER = 16
    FR_VERSION = 1
    FR_MIN_SIZE = 12                # size field minimum (header after the size)
    OUTBUF_MIN = 65536
    OUTBUF_FIRST = 1024             # an OutBuf's first allocation (an idle connection keeps it)
    KEPT_OVERHEAD = 128             # bytes a message kept by conflation counts beyond its own

cdef enum Op:
    OP_INFO = 1
    OP_CONNECT = 2
    OP_PUB = 3
    OP_PUBACK = 4
    OP_PUB_BATCH = 5
    OP_SUB = 6
    OP_UNSUB = 7
    OP_MSG = 8
    OP_PING = 9
    OP_PONG = 10
    OP_OK = 11
    OP_ERR = 12
    OP_STREAM = 13
    OP_REPLAY = 14
    OP_CONSUMER = 15
    OP_ACK = 16
    OP_LAST = 16

cdef enum:
    FL_ACK = 1                      # PUB, PUB_BATCH: answer with PUBACK
    FL_NO_RESPONDERS = 2            # MSG: no subscriber for the request
    FL_CLOSE = 1                    # ERR: the connection closes after it

OPS = {'INFO': OP_INFO, 'CONNECT': OP_CONNECT, 'PUB': OP_PUB, 'PUBACK': OP_PUBACK,
       'PUB_BATCH': OP_PUB_BATCH, 'SUB': OP_SUB, 'UNSUB': OP_UNSUB, 'MSG': OP_MSG,
       'PING': OP_PING, 'PONG': OP_PONG, 'OK': OP_OK, 'ERR': OP_ERR, 'STREAM': OP_STREAM,
       'REPLAY': OP_REPLAY, 'CONSUMER': OP_CONSUMER, 'ACK': OP_ACK}
FLAGS = {'ACK': FL_ACK, 'NO_RESPONDERS': FL_NO_RESPONDERS, 'CLOSE': FL_CLOSE}
