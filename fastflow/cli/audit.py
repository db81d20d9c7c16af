"""``fastflow audit DATA_DIR [--stream NAME] [--key PUB]``: verify the hash
chains, markers and signed checkpoints of a data directory's streams
(``fastflow.audit``), reading the segment files directly.  Exit status 0
when every stream verifies, 1 on any failure, 2 when the directory or the
key cannot be used."""

import json
import os
import sys

from fastflow.audit import AuditError, audit_dir


def _mb(n):
    return n / 1e6


def _print_report(r, out):
    status = "OK" if r.ok else "FAILED"
    print("stream {} ({}): {}".format(r.name, r.path, status), file=out)
    if r.failure is not None:
        f = r.failure
        print("  first broken link: {} at offset {}{}: {}".format(
            f["file"], f["offset"], "" if f["seq"] is None else " (seq {})".format(f["seq"]),
            f["reason"]), file=out)
        if r.failures > 1:
            print("  ({} problems in all)".format(r.failures), file=out)
    seqs = "seqs {}..{}".format(r.first_seq, r.last_seq) if r.records else "no records"
    print("  {} records in the files ({}), {} segments, {} markers, {} evictions".format(
        r.records, seqs, r.segments, r.markers, len(r.evictions)), file=out)
    for first, last, reason, _, path, off in r.evictions:
        print("    eviction: seqs {}..{} removed ({}), marker in {} at offset {}".format(
            first, last, reason, os.path.basename(path), off), file=out)
    if r.unchained:
        print("  {} frames in format 1 (written before the chain existed): not chained, "
              "not verified beyond their CRC".format(r.unchained), file=out)
    if r.head is not None:
        print("  chain {!r}: head at seq {} = {}".format(r.chain_name, r.last_seq, r.head.hex()),
              file=out)
    key = r.key if r.key is not None else "none (no --key, no server.pub)"
    print("  checkpoints: {} in file, {} verified (signature and chain head), key {}".format(
        r.checkpoints, r.checkpoints_verified, key), file=out)
    for seq, why in r.checkpoints_signed_only:
        print("    checkpoint at seq {}: signature verified, head not checked ({})".format(
            seq, why), file=out)
    for w in r.warnings:
        print("  warning: {}".format(w), file=out)
    rate = _mb(r.bytes) / r.seconds if r.seconds > 0 else 0.0
    print("  {:.1f} MB in {:.3f} s: {:.0f} MB/s".format(_mb(r.bytes), r.seconds, rate),
          file=out)


def audit(args):
    try:
        if not os.path.isdir(args.data_dir):
            raise AuditError("{}: not a directory".format(args.data_dir))
        reports, key = audit_dir(args.data_dir, args.stream, args.key)
    except (AuditError, OSError) as exc:
        print("fastflow audit: {}".format(exc), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"key": key, "ok": all(r.ok for r in reports),
                          "streams": [r.to_dict() for r in reports]}, indent=2))
    else:
        if key is not None:
            print("verifying checkpoints with {}".format(key))
        for r in reports:
            _print_report(r, sys.stdout)
        if not reports:
            print("no streams in {}".format(args.data_dir))
        bad = [r.name for r in reports if not r.ok]
        print("audit {}: {} stream{} verified{}".format(
            "FAILED" if bad else "OK", len(reports) - len(bad),
            "" if len(reports) - len(bad) == 1 else "s",
            ", failed: " + ", ".join(bad) if bad else ""))
    return 0 if all(r.ok for r in reports) else 1
