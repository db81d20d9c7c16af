"""The native protocol's frame layout, op codes and flags (docs/protocol.md),
pure-Python twin of src_ext/wire/proto.pxi: the numbers are
``fastflow.protocol``'s.

A frame: a 16-byte header (u32 size = bytes after this field, u8 version,
u8 op, u16 flags, u32 id, u16 subject_len, u16 reply_len), then the
subject, the reply and the body; all integers little-endian.
"""

import struct

from fastflow.protocol import FRAME_HEADER, FRAME_VERSION, Flag, Op

__all__ = ("FLAGS", "OPS")

FR_HEADER = FRAME_HEADER
FR_VERSION = FRAME_VERSION
FR_MIN_SIZE = 12                # size field minimum (header after the size)

OP_PUB = int(Op.PUB)
OP_PUB_BATCH = int(Op.PUB_BATCH)
OP_MSG = int(Op.MSG)
OP_LAST = int(max(Op))

FL_ACK = int(Flag.ACK)          # PUB, PUB_BATCH: answer with PUBACK

# the core's tables (plain ints, as the native core's)
OPS = {op.name: int(op) for op in Op}
FLAGS = {"ACK": int(Flag.ACK), "NO_RESPONDERS": int(Flag.NO_RESPONDERS),
         "CLOSE": int(Flag.CLOSE)}

FRAME = struct.Struct("<IBBHIHH")       # the header
U32 = struct.Struct("<I")
BATCH_ITEM = struct.Struct("<HI")       # a PUB_BATCH item's header: subject_len, record_len
