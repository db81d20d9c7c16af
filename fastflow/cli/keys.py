"""``fastflow keys``: make a signing key pair and show key ids; and the
``--sign`` of ``pub`` and ``--verify`` of ``sub`` (docs/provenance.md)."""

import os
import sys

from fastflow.cli.base import CommandError


def keys(args):
    from fastflow.trust import SigningKey, load_key_file

    if args.action == "new":
        k = SigningKey.generate(args.alg, keyid=args.key_id)
        path = args.path
        for p in (path, path + ".pub"):
            if os.path.exists(p):
                raise CommandError("{} exists: not overwritten".format(p))
        k.save(path)
        print("{} ({}) written: {} (private, mode 0600), {}.pub; key id {}".format(
            k.alg, "given id" if args.key_id else "id = SHA-256 of the public key",
            path, path, k.keyid))
        return 0
    if args.action == "id":
        try:
            k = load_key_file(args.path)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        print("{} {}".format(k.keyid, k.alg))
        return 0
    raise CommandError("keys: give an action (new, id)")


def signer(args):
    """``(key, extensions)`` of ``pub --sign`` (None: not signing)."""
    if not getattr(args, "sign", None):
        if getattr(args, "sign_ext", None):
            raise CommandError("--sign-ext names extensions to sign: it needs --sign KEYFILE")
        return None
    from fastflow.trust import SigningKey, load_key_file

    try:
        key = load_key_file(args.sign, args.key_id)
    except (OSError, ValueError) as exc:
        raise CommandError("--sign: {}".format(exc)) from None
    if not isinstance(key, SigningKey):
        raise CommandError("--sign: {} holds a public key; signing needs the private "
                           "key".format(args.sign))
    ext = [x for x in (args.sign_ext or "").split(",") if x]
    return key, ext


def signed_attrs(sign, subject, data, attrs):
    """The attributes of the event ``pub`` sends, signed (an explicit id,
    ``dssematerial``, ``signedextattrs``)."""
    from fastflow import Event
    from fastflow.trust import sign as sign_event

    key, ext = sign
    try:
        ev = sign_event(Event(subject, data, **attrs), key, ext)
    except ValueError as exc:
        raise CommandError("--sign: {}".format(exc)) from None
    out = ev.attributes()
    out.pop("specversion", None)
    return out


def verifier(args):
    """A function ``event -> (event to show or None, note)`` for ``sub
    --verify`` (None: not verifying)."""
    paths = getattr(args, "verify", None)
    if not paths:
        return None
    from fastflow.errors import SignatureError
    from fastflow.trust import KeySet, check, verify

    ks = KeySet()
    for p in paths:
        kid, sep, path = p.partition("=")
        if not sep:
            kid, path = None, p
        try:
            ks.add(path, kid)
        except (OSError, ValueError) as exc:
            raise CommandError("--verify {}: {}".format(p, exc)) from None
    mode = args.verify_mode

    def run(ev):
        try:
            out = verify(ev, ks, mode)
            if mode == "passthrough" and ev.get("dssematerial") in (None, ""):
                return out, "unsigned"
            return out, "verified: " + check(ev, ks)[0]
        except SignatureError as exc:
            return None, "refused: {}".format(exc)
    return run


def note_refused(n, ev, note):
    sys.stderr.write("[#{}] {} id={} {}\n".format(n, ev.routing_subject or ev.type, ev.id, note))
    sys.stderr.flush()
