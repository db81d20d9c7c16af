"""The segment frame format 2 (docs/log.md), parsed and rewritten here
independently of both cores: the tests of the hash chain and of the audit
use it to check the files and to play the attacker."""

import hashlib
import struct

from fastflow._ref.log import crc32c

HEADER = struct.Struct("<IIQqqHBB")  # length, crc, seq, ts, time, subject length, kind, format
LINK = 32


def genesis(name):
    return hashlib.sha256(b"fastflow.chain.v1\0" + name.encode()).digest()


def frames(buf):
    """[dict(offset, length, seq, kind, version, subject, data, body, link)]
    of the frames of a segment's bytes, up to the first zero length."""
    out = []
    off = 0
    while off + HEADER.size <= len(buf):
        length, crc, seq, ts, t, slen, kind, version = HEADER.unpack_from(buf, off)
        if length == 0:
            break
        assert crc32c(buf[off + 8 : off + length]) == crc, off
        extra = LINK if version == 2 else 0
        out.append(dict(offset=off, length=length, seq=seq, ts=ts, time=t, kind=kind,
                        version=version, subject=buf[off + 36 : off + 36 + slen],
                        data=buf[off + 36 + slen : off + length - extra],
                        body=buf[off + 8 : off + length - extra],
                        link=buf[off + length - LINK : off + length] if extra else None))
        off += length
    return out


def frame(seq, ts, time, subject, data, kind=1, prev=None):
    """The bytes of one frame: format 2 chained from ``prev``, format 1 if
    ``prev`` is None."""
    version = 2 if prev is not None else 0
    body = struct.pack("<QqqHBB", seq, ts, time, len(subject), kind, version) + subject + data
    link = b""
    if prev is not None:
        link = hashlib.sha256(prev + body).digest()
    rest = body + link
    return struct.pack("<II", 8 + len(rest), crc32c(rest)) + rest


def rebuild(parts, prev):
    """Frames (dicts as from ``frames``) re-encoded with fresh CRCs and a
    chain recomputed from ``prev``: the attacker who knows the format.
    Returns (bytes, last link)."""
    out = []
    for f in parts:
        b = frame(f["seq"], f["ts"], f["time"], f["subject"], f["data"], f["kind"], prev)
        prev = b[-LINK:]
        out.append(b)
    return b"".join(out), prev


def fix_crc(buf, off):
    """Recompute the CRC of the frame at ``off`` of a bytearray (its length
    field as it is)."""
    (length,) = struct.unpack_from("<I", buf, off)
    struct.pack_into("<I", buf, off + 4, crc32c(bytes(buf[off + 8 : off + length])))
