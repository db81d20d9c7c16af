"""Verification of tamper-evident streams (docs/provenance.md).

A file-backed log keeps a hash chain over its frames (docs/log.md, format
2): every frame ends with ``link = SHA-256(previous link || body)``, where
``body`` is the frame between its CRC and its link, and the first link
follows from ``chain_genesis(name)``.  Purges and deleted segments are
frames of the chain too (markers), so history can shrink in the open but
not be rewritten silently.  Signed checkpoints (``checkpoints.jsonl`` beside
the segments, Ed25519) pin the chain head at a seq.

``audit_stream(path)`` / ``audit_dir(data_dir)`` read the segment files
directly (never through ``Log``, whose open path repairs), verify every
CRC, link, marker and checkpoint, and report the first broken link with its
file, offset and reason.  ``verify_range`` lets a consumer check that
records it replayed reach a signed checkpoint's head.

Nothing here trusts the files: lengths are bounded by the file, every loop
advances by at least one frame, symlinks are not followed, and damaged
input is reported, never raised.
"""

import base64
import binascii
import hashlib
import json
import mmap
import os
import re
import stat
import struct
import time as _time

from fastflow._impl import chain_genesis, chain_link, chain_walk, crc32c
from fastflow.errors import FastflowError

__all__ = (
    "AuditError",
    "StreamReport",
    "audit_dir",
    "audit_stream",
    "checkpoint_payload",
    "key_id",
    "load_public_key",
    "record_body",
    "sign_checkpoint",
    "verify_checkpoint",
    "verify_range",
)

KIND_RECORD = 1
KIND_DELETE = 2
KIND_PURGE = 3
KIND_EVICT = 4
FRAME_V1 = 0
FRAME_V2 = 2
LINK_LEN = 32
_HEADER = struct.Struct("<IIQqqHBB")
_BODY = struct.Struct("<QqqHBB")
HEADER_LEN = _HEADER.size  # 36
_SEG_NAME = re.compile(r"^(\d{20})\.seg$")
_KIND_NAMES = {KIND_RECORD: "record", KIND_DELETE: "delete marker", KIND_PURGE: "purge marker",
               KIND_EVICT: "eviction marker"}

CHECKPOINTS = "checkpoints.jsonl"
MAX_CHECKPOINT_LINE = 64 << 10  # bytes; a longer line is reported, not parsed
MAX_CHECKPOINTS_FILE = 256 << 20  # bytes read of a checkpoints file at most
ZERO_CHUNK = 1 << 20


class AuditError(FastflowError, ValueError):
    """A chain, a marker or a checkpoint that does not verify."""


# -- checkpoints: the signed statement ---------------------------------------------------------

def key_id(public_key):
    """A short id of an Ed25519 public key: the first 16 hex digits of the
    SHA-256 of its 32 raw bytes."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def checkpoint_payload(cp):
    """The bytes a checkpoint's signature covers: the canonical JSON of its
    ``stream``, ``seq``, ``head`` (hex) and ``time`` (ns)."""
    return json.dumps({"stream": cp["stream"], "seq": cp["seq"], "head": cp["head"],
                       "time": cp["time"]}, sort_keys=True, separators=(",", ":")).encode()


def sign_checkpoint(cp, private_key):
    """``cp`` (stream, seq, head, time) with ``key_id`` and ``sig`` (base64
    Ed25519 signature of ``checkpoint_payload``) added: a new dict."""
    out = {"stream": cp["stream"], "seq": cp["seq"], "head": cp["head"], "time": cp["time"]}
    out["key_id"] = key_id(private_key.public_key())
    out["sig"] = base64.b64encode(private_key.sign(checkpoint_payload(out))).decode()
    return out


def _check_checkpoint_fields(cp):
    if not isinstance(cp, dict):
        raise AuditError("a checkpoint is a JSON object, got {}".format(type(cp).__name__))
    for k, t in (("stream", str), ("head", str), ("key_id", str), ("sig", str)):
        if not isinstance(cp.get(k), t):
            raise AuditError("checkpoint field {!r} missing or not a string".format(k))
    for k in ("seq", "time"):
        v = cp.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >= 1 << 63:
            raise AuditError("checkpoint field {!r} missing or not an int in 0..2**63-1"
                             .format(k))
    if len(cp["head"]) != 2 * LINK_LEN or not all(c in "0123456789abcdef" for c in cp["head"]):
        raise AuditError("checkpoint head is not {} lowercase hex digits".format(2 * LINK_LEN))


def verify_checkpoint(cp, public_key):
    """Raise AuditError unless ``cp`` is well formed and signed by
    ``public_key`` (its key id first: "signed by another key")."""
    from cryptography.exceptions import InvalidSignature

    _check_checkpoint_fields(cp)
    want = key_id(public_key)
    if cp["key_id"] != want:
        raise AuditError("signed by another key (key id {}, the verifying key is {})".format(
            cp["key_id"], want))
    try:
        sig = base64.b64decode(cp["sig"].encode(), validate=True)
    except (binascii.Error, ValueError):
        raise AuditError("signature is not base64") from None
    try:
        public_key.verify(sig, checkpoint_payload(cp))
    except InvalidSignature:
        raise AuditError("signature does not verify (key id {})".format(want)) from None


def load_public_key(path):
    """An Ed25519 public key from a PEM file (``server.pub``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise AuditError("{}: not a regular file".format(path))
    if st.st_size > 64 << 10:
        raise AuditError("{}: {} bytes is not a public key file".format(path, st.st_size))
    with open(path, "rb") as f:
        data = f.read(64 << 10)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise AuditError("{}: not a PEM public key ({})".format(path, exc)) from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError("{}: not an Ed25519 public key".format(path))
    return key


# -- the consumer's check -----------------------------------------------------------------------

def record_body(seq, ts, time, subject, data):
    """The chained body of a record frame (format 2): what a consumer that
    replayed the record (``seq``, ``ts``, ``time``, subject, stored bytes)
    feeds to ``verify_range``."""
    sb = subject.encode("utf-8") if isinstance(subject, str) else bytes(subject)
    return _BODY.pack(seq, ts, time, len(sb), KIND_RECORD, FRAME_V2) + sb + bytes(data)


def verify_range(link_before, bodies, checkpoint, public_key=None):
    """Check that frames replayed in order reach a signed checkpoint's head.

    ``link_before``: the link before the first frame (32 bytes or hex: the
    head of an earlier checkpoint, or ``chain_genesis(stream)``);
    ``bodies``: the frames' bodies in chain order (``record_body(...)`` of
    each record; markers in the range, if any, as the audit reads them);
    ``checkpoint``: a checkpoint dict whose ``seq`` is the last record's;
    ``public_key``: its signature is verified first when given.  Returns the
    final link; raises AuditError naming what does not match."""
    if public_key is not None:
        verify_checkpoint(checkpoint, public_key)
    else:
        _check_checkpoint_fields(checkpoint)
    link = bytes.fromhex(link_before) if isinstance(link_before, str) else bytes(link_before)
    if len(link) != LINK_LEN:
        raise AuditError("link_before is {} bytes, a link is {}".format(len(link), LINK_LEN))
    last = None
    for i, body in enumerate(bodies):
        body = bytes(body)
        if len(body) < _BODY.size:
            raise AuditError("bodies[{}]: {} bytes, shorter than a frame header".format(
                i, len(body)))
        seq, _, _, _, kind, _ = _BODY.unpack_from(body)
        if kind == KIND_RECORD:
            if last is not None and seq <= last:
                raise AuditError("bodies[{}]: seq {} after seq {}".format(i, seq, last))
            last = seq
        link = chain_link(link, body)
    if last != checkpoint["seq"]:
        raise AuditError("the range ends at seq {}, the checkpoint is at seq {}".format(
            last, checkpoint["seq"]))
    if link.hex() != checkpoint["head"]:
        raise AuditError("the range's link at seq {} is {}, the checkpoint's head is {}".format(
            last, link.hex(), checkpoint["head"]))
    return link


# -- the audit ------------------------------------------------------------------------------------

class StreamReport:
    """What the audit of one stream directory found."""

    def __init__(self, name, path):
        self.name = name
        self.path = path
        self.chain_name = os.path.basename(os.path.normpath(path))
        self.segments = 0
        self.records = 0
        self.first_seq = 0
        self.last_seq = 0
        self.markers = 0
        self.evictions = []  # (first seq, last seq, reason) of eviction markers
        self.unchained = 0  # format-1 frames (written before the chain existed)
        self.bytes = 0
        self.seconds = 0.0
        self.head = None  # link of the last frame
        self.checkpoints = 0
        self.checkpoints_verified = 0  # signature and chain head
        self.checkpoints_signed_only = []  # (seq, why the head could not be checked)
        self.key = None  # where the verifying key came from
        self.chain_failure = None  # the first broken link: dict file, offset, seq, reason
        self.checkpoint_failure = None  # the first checkpoint that does not verify
        self.failures = 0
        self.warnings = []

    @property
    def failure(self):
        """The first problem: of the chain (segments) if any, else of the
        checkpoints; None when everything verifies."""
        return self.chain_failure or self.checkpoint_failure

    @property
    def ok(self):
        return self.failure is None

    def fail(self, file, offset, reason, seq=None, checkpoint=False):
        self.failures += 1
        f = {"file": file, "offset": offset, "seq": seq, "reason": reason}
        if checkpoint:
            if self.checkpoint_failure is None:
                self.checkpoint_failure = f
        elif self.chain_failure is None:
            self.chain_failure = f

    def to_dict(self):
        return {"stream": self.name, "path": self.path, "ok": self.ok,
                "chain_name": self.chain_name, "segments": self.segments,
                "records": self.records, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "markers": self.markers,
                "evictions": [[e[0], e[1], e[2], e[4], e[5]] for e in self.evictions],
                "unchained": self.unchained,
                "bytes": self.bytes, "seconds": self.seconds,
                "head": None if self.head is None else self.head.hex(),
                "checkpoints": self.checkpoints,
                "checkpoints_verified": self.checkpoints_verified,
                "checkpoints_signed_only": [list(c) for c in self.checkpoints_signed_only],
                "key": self.key, "failure": self.failure, "chain_failure": self.chain_failure,
                "checkpoint_failure": self.checkpoint_failure, "failures": self.failures,
                "warnings": list(self.warnings)}


def _all_zero(buf, start, end):
    """Whether buf[start:end] holds only zero bytes (read in bounded chunks)."""
    while start < end:
        stop = min(end, start + ZERO_CHUNK)
        chunk = buf[start:stop]
        if chunk.count(0) != len(chunk):
            return False
        start = stop
    return True


def _open_segment(path):
    """(fd, size) of a segment file, refusing what is not a regular file
    (a symlink is not followed); raises AuditError."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise AuditError("cannot stat: {}".format(exc.strerror)) from None
    if stat.S_ISLNK(st.st_mode):
        raise AuditError("is a symlink (not followed: segments are regular files)")
    if not stat.S_ISREG(st.st_mode):
        raise AuditError("not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise AuditError("cannot open: {}".format(exc.strerror)) from None
    return fd, os.fstat(fd).st_size


class _Chain:
    """The audit's walk over one stream's frames, in file order."""

    def __init__(self, report, genesis, wanted):
        self.r = report
        self.genesis = genesis
        self.link = None  # the link of the last frame (None: no chained frame yet)
        self.after_v1 = False  # the last frame was format 1: the next chains from genesis
        self.chained = False  # a format-2 frame was seen
        self.any_frame = False
        self.first = None  # the first frame overall: (file, offset, seq, body, link)
        self.last_seq = 0
        self.prev_where = None  # (file, offset, seq) of the last frame
        self.wanted = sorted(wanted)  # checkpoint seqs, ascending
        self.wi = 0
        self.links_at = {}  # checkpoint seq -> links valid at it

    def _next_stop(self):
        while self.wi < len(self.wanted) and self.wanted[self.wi] <= self.last_seq:
            self.wi += 1
        return self.wanted[self.wi] if self.wi < len(self.wanted) else 0

    def _note(self):
        """The chain stands at self.last_seq: remember the link for a checkpoint there."""
        if self.link is not None and self.last_seq in self.links_at:
            self.links_at[self.last_seq].add(self.link)

    def segment(self, path, base, newest):
        r = self.r
        try:
            fd, size = _open_segment(path)
        except AuditError as exc:
            r.fail(path, 0, str(exc))
            return False
        try:
            if size == 0:
                return True
            try:
                mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:
                r.fail(path, 0, "cannot map: {}".format(exc))
                return False
            try:
                return self._walk(mm, size, path, base, newest)
            finally:
                mm.close()
        finally:
            os.close(fd)

    def _walk(self, mm, n, path, base, newest):
        r = self.r
        off = 0
        first_in_segment = True
        while True:
            # the fast path: plain chained records, in C (native core)
            if self.link is not None and not self.after_v1:
                off2, link, count, last = chain_walk(mm, off, self.link, self.last_seq,
                                                     self._next_stop())
                if count:
                    r.records += count
                    if not r.first_seq:
                        r.first_seq = int.from_bytes(mm[off + 8:off + 16], "little")
                    self.link = link
                    self.last_seq = last
                    self.prev_where = (path, off2, last)
                    self._note()
                    first_in_segment = False
                    off = off2
            # the slow path: whatever stopped it (end, marker, damage, ...)
            if off + 4 > n:
                if off < n and not _all_zero(mm, off, n):
                    # (the live segment is preallocated: a crash cannot cut a field)
                    r.fail(path, off, "truncated length field")
                    return False
                r.bytes += off
                return True
            length = int.from_bytes(mm[off:off + 4], "little")
            if length == 0:
                if not _all_zero(mm, off, n):
                    return self._tail(mm, path, off, n, newest, "zero length followed by "
                                      "non-zero bytes")
                r.bytes += off
                return True
            if length < HEADER_LEN or length > n - off:
                r.fail(path, off, "frame length {} out of range ({} bytes left in the file)"
                       .format(length, n - off))
                return False
            _, crc, seq, ts, ptime, slen, kind, version = _HEADER.unpack_from(mm, off)
            if crc32c(mm[off + 8:off + length]) != crc:
                return self._tail(mm, path, off, n, newest, "checksum mismatch", off + length)
            extra = LINK_LEN if version == FRAME_V2 else 0
            if kind not in _KIND_NAMES or version not in (FRAME_V1, FRAME_V2) \
                    or HEADER_LEN + slen + extra > length:
                r.fail(path, off, "invalid frame header (kind {}, format byte {}, subject "
                       "length {}, frame length {})".format(kind, version, slen, length), seq)
                return False
            what = _KIND_NAMES[kind]
            if kind == KIND_RECORD:
                if seq <= self.last_seq:
                    r.fail(path, off, "seq {} after seq {}: records reordered or "
                           "duplicated".format(seq, self.last_seq), seq)
                    return False
                if first_in_segment and seq < base:
                    r.fail(path, off, "seq {} in the segment named {}: a segment renamed"
                           .format(seq, base), seq)
                    return False
            if version == FRAME_V1:
                if self.chained:
                    r.fail(path, off, "a format-1 frame (no link) after chained frames: "
                           "the chain was stripped", seq)
                    return False
                r.unchained += 1
                self.after_v1 = True
                self.link = None
            else:
                body = mm[off + 8:off + length - LINK_LEN]
                stored = mm[off + length - LINK_LEN:off + length]
                if not self.any_frame:
                    # the first frame: its predecessor is the genesis link or
                    # the link an eviction marker names (checked at the end)
                    self.first = (path, off, seq, body, stored)
                else:
                    prev = self.genesis if self.after_v1 or self.link is None else self.link
                    if chain_link(prev, body) != stored:
                        return self._mismatch(path, off, seq, what, body, stored, prev)
                self.link = stored
                self.chained = True
                self.after_v1 = False
            if kind == KIND_RECORD:
                r.records += 1
                if not r.first_seq:
                    r.first_seq = seq
                self.last_seq = seq
            else:
                r.markers += 1
                if kind == KIND_EVICT:
                    data = mm[off + HEADER_LEN + slen:off + length - extra]
                    if len(data) < LINK_LEN + 8:
                        r.fail(path, off, "eviction marker with {} bytes of data (at least {} "
                               "expected)".format(len(data), LINK_LEN + 8), seq)
                        return False
                    first = int.from_bytes(data[LINK_LEN:LINK_LEN + 8], "little")
                    reason = data[LINK_LEN + 8:].decode("utf-8", "replace")
                    r.evictions.append((first, seq, reason, data[:LINK_LEN], path, off))
            self.any_frame = True
            self.prev_where = (path, off, seq)
            self._note()
            first_in_segment = False
            off += length

    def _mismatch(self, path, off, seq, what, body, stored, prev):
        r = self.r
        where = self.prev_where
        detail = ""
        if where is not None:
            detail = " (the previous frame: {} at offset {}, seq {})".format(
                os.path.basename(where[0]), where[1], where[2])
        if where is not None and where[0] != path and off == 0:
            hint = "records or a segment before it were removed"
        else:
            hint = "a record was removed, inserted, reordered or edited"
        r.fail(path, off, "chain link mismatch at this {} (seq {}): it does not follow the "
               "previous frame{}: {}".format(what, seq, detail, hint), seq)
        return False

    def _tail(self, mm, path, off, n, newest, problem, end=None):
        """Bytes that are no frame: a torn tail of the newest segment (a
        crash; the log cuts it on open) is a warning, anything else fails.
        A torn tail: bytes of a frame whose length was never written (the
        length goes last), or a frame whose length reached the disk but not
        all of its bytes (``end``: only zeros may follow it).  Cutting the
        newest records this way is what a chain alone cannot see: the
        signed checkpoints can ("past the end of the chain")."""
        r = self.r
        if newest and (end is None or _all_zero(mm, min(end, n), n)):
            r.warnings.append("{} at offset {}: torn tail ({}), {} bytes after the last "
                              "complete frame (a crash; opening the log cuts it)".format(
                                  path, off, problem, n - off))
            r.bytes += off
            return True
        r.fail(path, off, problem, None)
        return False

    def finish(self, bases):
        """The first frame's predecessor; the eviction markers."""
        r = self.r
        if self.first is None:
            return
        path, off, seq, body, stored = self.first
        if chain_link(self.genesis, body) == stored:
            return
        # an eviction marker names the link the kept records follow (the
        # newest one, or an older one when a crash came between the newest
        # marker and the deletion it announced)
        if r.evictions:
            for ev in r.evictions:
                if chain_link(ev[3], body) == stored:
                    return
            first, last, reason, link, mpath, moff = max(r.evictions, key=lambda e: e[1])
            r.fail(path, off, "the first frame (seq {}) does not follow the link of the newest "
                   "eviction marker ({} at offset {}: seqs {}..{} removed): records after "
                   "seq {} were removed without a marker (a segment deleted by hand?)".format(
                       seq, os.path.basename(mpath), moff, first, last, last), seq)
            return
        r.fail(path, off, "the first frame (seq {}) does not follow the genesis link of "
               "chain {!r} and no eviction marker says what came before: records before it "
               "were removed without a marker (a segment deleted by hand?)".format(
                   seq, r.chain_name), seq)


def _read_meta(path, report):
    p = os.path.join(path, "meta.json")
    try:
        st = os.lstat(p)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 1 << 20:
            report.warnings.append("meta.json is not a small regular file: ignored")
            return {}
        with open(p, "rb") as f:
            meta = json.loads(f.read(1 << 20).decode("utf-8"))
        return meta if isinstance(meta, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        report.warnings.append("meta.json unreadable ({}): ignored".format(exc))
        return {}


def _read_checkpoints(path, report, public_key):
    """The checkpoints of a stream that verify (signature), as a list;
    each bad line is a failure."""
    p = os.path.join(path, CHECKPOINTS)
    good = []
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return good
    except OSError as exc:
        report.fail(p, 0, "cannot stat: {}".format(exc.strerror), checkpoint=True)
        return good
    if not stat.S_ISREG(st.st_mode):
        report.fail(p, 0, "not a regular file (a symlink is not followed)", checkpoint=True)
        return good
    if st.st_size > MAX_CHECKPOINTS_FILE:
        report.warnings.append("{}: {} bytes; only the first {} are read".format(
            p, st.st_size, MAX_CHECKPOINTS_FILE))
    try:
        f = open(p, "rb")
    except OSError as exc:
        report.fail(p, 0, "cannot open: {}".format(exc.strerror), checkpoint=True)
        return good
    with f:
        offset = 0
        lineno = 0
        while offset < MAX_CHECKPOINTS_FILE:
            line = f.readline(MAX_CHECKPOINT_LINE + 1)
            if not line:
                break
            lineno += 1
            here = offset
            offset += len(line)
            if len(line) > MAX_CHECKPOINT_LINE:
                report.fail(p, here, "line {}: longer than {} bytes".format(
                    lineno, MAX_CHECKPOINT_LINE), checkpoint=True)
                # skip the rest of that line, boundedly
                while line and not line.endswith(b"\n") and offset < MAX_CHECKPOINTS_FILE:
                    line = f.readline(MAX_CHECKPOINT_LINE + 1)
                    offset += len(line)
                continue
            if not line.strip():
                continue
            report.checkpoints += 1
            try:
                cp = json.loads(line.decode("utf-8"))
                _check_checkpoint_fields(cp)
            except (ValueError, AuditError) as exc:
                report.fail(p, here, "line {}: not a checkpoint ({})".format(lineno, exc),
                            checkpoint=True)
                continue
            if cp["stream"] != report.chain_name and cp["stream"] != report.name:
                report.fail(p, here, "line {}: checkpoint of stream {!r} in stream {!r}"
                            .format(lineno, cp["stream"], report.name), cp["seq"], checkpoint=True)
                continue
            if public_key is None:
                report.fail(p, here, "line {}: no public key to verify the checkpoint "
                            "(--key PUB, or server.pub in the data directory)".format(lineno),
                            cp["seq"], checkpoint=True)
                continue
            try:
                verify_checkpoint(cp, public_key)
            except AuditError as exc:
                report.fail(p, here, "line {}: checkpoint at seq {}: {}".format(
                    lineno, cp["seq"], exc), cp["seq"], checkpoint=True)
                continue
            good.append((cp, here, lineno))
    return good


def audit_stream(path, name=None, public_key=None, key_source=None):
    """Audit one stream directory (segments, markers, checkpoints); returns
    a StreamReport (never raises on bad files: they are reported)."""
    path = os.path.abspath(path)
    report = StreamReport(name or os.path.basename(os.path.normpath(path)), path)
    report.key = key_source
    t0 = _time.perf_counter()
    meta = _read_meta(path, report)
    cn = meta.get("chain_name")
    if isinstance(cn, str) and cn:
        report.chain_name = cn
        if cn != report.name:
            report.warnings.append("meta.json names the chain {!r}, the directory is {!r}"
                                   .format(cn, report.name))
    checkpoints = _read_checkpoints(path, report, public_key)
    chain = _Chain(report, chain_genesis(report.chain_name), [cp["seq"] for cp, _, _ in
                                                               checkpoints])
    for cp, _, _ in checkpoints:
        chain.links_at.setdefault(cp["seq"], set())
    try:
        names = os.listdir(path)
    except OSError as exc:
        report.fail(path, 0, "cannot list the directory: {}".format(exc.strerror))
        names = []
    bases = sorted(int(m.group(1)) for m in map(_SEG_NAME.match, names) if m)
    report.segments = len(bases)
    for i, base in enumerate(bases):
        if not chain.segment(os.path.join(path, "{:020d}.seg".format(base)), base,
                             i == len(bases) - 1):
            break  # the first broken link is reported; what follows depends on it
    if report.chain_failure is None:
        chain.finish(bases)
    report.last_seq = chain.last_seq
    report.head = chain.link
    first_kept = report.first_seq or (chain.last_seq + 1)
    for cp, off, lineno in checkpoints:
        seq = cp["seq"]
        if report.chain_failure is not None:
            report.checkpoints_signed_only.append((seq, "the chain is broken"))
            continue
        links = chain.links_at.get(seq) or set()
        if bytes.fromhex(cp["head"]) in links:
            report.checkpoints_verified += 1
        elif seq < first_kept and not links:
            report.checkpoints_signed_only.append((seq, "its records were evicted"))
        elif seq > chain.last_seq:
            report.fail(os.path.join(path, CHECKPOINTS), off, "line {}: the checkpoint at seq "
                        "{} is past the end of the chain (last seq {}): records at the end "
                        "were removed".format(lineno, seq, chain.last_seq), seq, True)
        else:
            report.fail(os.path.join(path, CHECKPOINTS), off, "line {}: the chain at seq {} "
                        "does not reach the checkpoint's head {}...: the history up to it "
                        "was rewritten".format(lineno, seq, cp["head"][:16]), seq, True)
    report.seconds = _time.perf_counter() - t0
    return report


def _find_key(data_dir, key_path):
    """(public key or None, where it came from)."""
    if key_path is not None:
        return load_public_key(key_path), key_path
    p = os.path.join(data_dir, "server.pub")
    if os.path.lexists(p):
        return load_public_key(p), p
    return None, None


def stream_dirs(data_dir, stream=None):
    """[(name, path)] of the stream directories under ``data_dir`` (a
    server's or a Flow's data dir, ``<data_dir>/streams/<name>``, an
    account's ``<data_dir>/accounts/<account>/streams/<name>``, named
    ``<account>/<name>``; or one stream directory itself)."""
    data_dir = os.path.abspath(data_dir)
    if any(_SEG_NAME.match(n) for n in os.listdir(data_dir)) or \
            os.path.exists(os.path.join(data_dir, "meta.json")):
        name = os.path.basename(data_dir)
        if stream is not None and stream != name:
            raise AuditError("{} is the directory of stream {!r}, not {!r}".format(
                data_dir, name, stream))
        return [(name, data_dir)]
    roots = [("", os.path.join(data_dir, "streams"))]
    accounts = os.path.join(data_dir, "accounts")
    if os.path.isdir(accounts) and not os.path.islink(accounts):
        for a in sorted(os.listdir(accounts)):
            roots.append((a + "/", os.path.join(accounts, a, "streams")))
    roots = [(prefix, r) for prefix, r in roots if os.path.isdir(r) and not os.path.islink(r)]
    if not roots:
        raise AuditError("{}: no streams/ directory and no segment files".format(data_dir))
    out = []
    for prefix, root in roots:
        for n in sorted(os.listdir(root)):
            p = os.path.join(root, n)
            if os.path.isdir(p) and not os.path.islink(p):
                out.append((prefix + n, p))
    if stream is not None:
        out = [(n, p) for n, p in out if n == stream]
        if not out:
            raise AuditError("no stream {!r} in {}".format(stream, data_dir))
    return out


def audit_dir(data_dir, stream=None, key=None):
    """Audit every stream of a data directory (or one: ``stream``) with the
    public key file ``key`` (default: ``<data_dir>/server.pub``); returns
    ``(reports, key source)``.  Raises AuditError for an unusable
    directory or key file."""
    public_key, source = _find_key(data_dir, key)
    return [audit_stream(p, name, public_key, source)
            for name, p in stream_dirs(data_dir, stream)], source
