"""Signed CloudEvents: the verifiability extension (``dssematerial``,
``signedextattrs``) over DSSE v1.0.2 (docs/provenance.md).

The material signed is one SHA-256 over the SHA-256 of each core attribute
(``id``, ``source``, ``specversion``, ``type``, ``datacontenttype``,
``dataschema``, ``subject``, ``time`` normalised to RFC 3339 UTC with a
``Z`` and whole seconds; an unset one hashes as the empty string), of the
``data`` bytes, then of the name and the value of each signed extension
attribute in ``signedextattrs`` order (a value as its CloudEvents canonical
string).  That digest is the DSSE body, ``https://cloudevents.io/
verifiability/dsse/v0.1`` its payload type; the envelope, as compact JSON
in Base64, is the ``dssematerial`` attribute.

``data`` is the event's bytes: as the producer sent them through a door
(binary mode: the body; a structured JSON event: the ``data`` member's JSON
text as written, without the whitespace around it; ``data_base64``: the
decoded bytes).  The engine keeps and forwards those bytes, so a consumer
several hops away hashes what the producer hashed.
"""

import base64
import binascii
import re

import orjson

from fastflow._impl import sha256_of_digests
from fastflow.errors import SignatureError
from fastflow.event import Event
from fastflow.trust.keys import KeySet, SigningKey

__all__ = ("PAYLOAD_TYPE", "MODES", "digest", "pae", "sign", "verify", "check")

PAYLOAD_TYPE = "https://cloudevents.io/verifiability/dsse/v0.1"
_PT = PAYLOAD_TYPE.encode()
MODES = ("strict", "core-only", "passthrough")

# limits on what a verifier reads (an envelope is a few hundred bytes)
MAX_MATERIAL = 16384            # characters of dssematerial
MAX_SIGNATURES = 8              # signatures tried per event
MAX_SIGNED_EXTENSIONS = 64

_CORE = frozenset(("id", "source", "specversion", "type", "datacontenttype", "dataschema",
                   "subject", "time"))
_ENGINE = frozenset(("ffhops", "fftrace"))      # lineage: changes on every hop
_OWN = frozenset(("dssematerial", "signedextattrs"))

_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
                   r"(?:\.[0-9]+)?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))\Z")


def _bad_time(t, why):
    return SignatureError("malformed", "time {!r} {}".format(t[:64], why))


def _leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


_MDAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (any year)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z):
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (m <= 2), m, d


def normalize_time(t):
    """``t`` (RFC 3339) as ``YYYY-MM-DDTHH:MM:SSZ`` in UTC (whole seconds:
    the precision the extension verifies).  A time RFC 3339 does not allow
    (a 13th month, a 31st of April, second 61, an offset past 23:59) is
    refused: two such strings could name one instant, and a relay could
    swap them under a signature."""
    if type(t) is not str:
        raise SignatureError("malformed", "time is not a string")
    m = _TIME.match(t)
    if m is None:
        raise _bad_time(t, "is not RFC 3339")
    y, mo, d, h, mi, s = (int(x) for x in m.group(1, 2, 3, 4, 5, 6))
    if not (1 <= mo <= 12 and 1 <= d <= _MDAYS[mo - 1] + (mo == 2 and _leap(y))
            and h <= 23 and mi <= 59 and s <= 60):
        raise _bad_time(t, "is out of range")
    mins = _days_from_civil(y, mo, d) * 1440 + h * 60 + mi
    if m.group(8):
        oh, om = int(m.group(9)), int(m.group(10))
        if oh > 23 or om > 59:
            raise _bad_time(t, "has an offset out of range")
        mins -= (oh * 60 + om) if m.group(8) == "+" else -(oh * 60 + om)
    days, rest = divmod(mins, 1440)
    y, mo, d = _civil_from_days(days)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, mo, d, rest // 60, rest % 60, s)


def _canonical(v):
    t = type(v)
    if t is str:
        return v.encode("utf-8", "surrogatepass")
    if t is bool:
        return b"true" if v else b"false"
    if t is int:
        return str(v).encode()
    if t is bytes:
        return base64.b64encode(v)
    raise SignatureError("malformed", "an attribute value of type {}".format(t.__name__))



_ext_lists = {}                 # signedextattrs -> its names, checked (bounded)


def _ext_list(value):
    """The names of ``signedextattrs`` (validated: the extension's rules)."""
    if value is None or value == "":
        return ()
    names = _ext_lists.get(value)
    if names is None:
        names = _ext_list_checked(value)
        if len(_ext_lists) < 1024:
            _ext_lists[value] = names
    return names


def _ext_list_checked(value):
    if not isinstance(value, str):
        raise SignatureError("bad signedextattrs", "not a string")
    names = value.split(",")
    if len(names) > MAX_SIGNED_EXTENSIONS:
        raise SignatureError("bad signedextattrs", "more than {} names".format(
            MAX_SIGNED_EXTENSIONS))
    seen = set()
    for n in names:
        if n in seen:
            raise SignatureError("bad signedextattrs", "{!r} is listed twice".format(n))
        if n in _CORE or n in _OWN:
            raise SignatureError("bad signedextattrs", "{!r} may not be listed".format(n))
        if not n or not n.isascii() or not n.isalnum() or n != n.lower():
            raise SignatureError("bad signedextattrs",
                                 "{!r} is not an attribute name (a-z, 0-9)".format(n))
        seen.add(n)
    return tuple(names)


def _enc(v):
    if v is None:
        return None
    if type(v) is str:
        return v.encode("utf-8", "surrogatepass")
    return _canonical(v)


def _digest(attrs, data, extensions):
    get = attrs.get
    t = get("time")
    parts = [_enc(get("id")), _enc(get("source")), _enc(get("specversion")),
             _enc(get("type")), _enc(get("datacontenttype")), _enc(get("dataschema")),
             _enc(get("subject")), None if t is None else normalize_time(t).encode(), data]
    for n in extensions:
        v = get(n)
        if v is None:
            raise SignatureError("digest mismatch", "signed extension {!r} is missing".format(n))
        parts.append(n.encode())
        parts.append(_enc(v))
    return sha256_of_digests(parts)      # (the hashing in C)


def digest(event, extensions=()):
    """The verification material of ``event`` (32 bytes): its core
    attributes, data and the extension attributes named in ``extensions``."""
    return _digest(event.attributes(), event.data, extensions)


def pae(payload_type, body):
    """DSSE v1 pre-authentication encoding."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(body), body)


def envelope(body, key):
    """The ``dssematerial`` value for DSSE body ``body`` signed by ``key``."""
    sig = key.sign(pae(_PT, body))
    env = {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(body).decode(),
           "signatures": [{"keyid": key.keyid, "sig": base64.b64encode(sig).decode()}]}
    return base64.b64encode(orjson.dumps(env)).decode()


def sign(event, key, extensions=()):
    """A new Event: ``event`` with ``dssematerial`` (and ``signedextattrs``
    when ``extensions`` names extension attributes to sign) from ``key``
    (a SigningKey).  The routing subject, data and every attribute are
    kept; ``type`` and ``id`` are written out (a signed event does not take
    them from the subject or the engine); lineage is left out."""
    if not isinstance(key, SigningKey):
        raise TypeError("key must be a SigningKey, not {}".format(type(key).__name__))
    if isinstance(extensions, str):
        extensions = extensions.split(",") if extensions else ()
    extensions = tuple(extensions)
    attrs = event.attributes()
    for n in _ENGINE | _OWN:
        attrs.pop(n, None)
    if extensions:
        _ext_list(",".join(extensions))          # the extension's rules, checked
    for n in extensions:
        if n in _ENGINE:
            raise ValueError("{!r} is the engine's lineage, changed on every hop: it "
                             "cannot be signed".format(n))
        if n not in attrs or n in _CORE:
            raise ValueError("cannot sign extension {!r}: the event has no such extension "
                             "attribute".format(n))
    if extensions:
        attrs["signedextattrs"] = ",".join(extensions)
    attrs.pop("specversion", None)
    unsigned = Event(event.routing_subject, event.data, **attrs)
    attrs["dssematerial"] = envelope(digest(unsigned, extensions), key)
    return Event(event.routing_subject, event.data, **attrs)


try:
    binascii.a2b_base64(b"", strict_mode=True)

    def _unb64(s):
        return binascii.a2b_base64(s, strict_mode=True)
except TypeError:               # (Python < 3.11)
    def _unb64(s):
        return base64.b64decode(s, validate=True)


def _b64(s, what):
    if not isinstance(s, str):
        raise SignatureError("malformed", "{} is not a string".format(what))
    try:
        return _unb64(s)
    except (binascii.Error, ValueError):
        raise SignatureError("malformed", "{} is not Base64".format(what)) from None


def _envelope(material):
    if type(material) is not str:
        raise SignatureError("malformed", "dssematerial is not a string")
    if len(material) > MAX_MATERIAL:
        raise SignatureError("malformed", "dssematerial longer than {} characters".format(
            MAX_MATERIAL))
    try:
        env = orjson.loads(_b64(material, "dssematerial"))
    except orjson.JSONDecodeError:
        raise SignatureError("malformed", "dssematerial is not a JSON DSSE envelope") from None
    if not isinstance(env, dict) or not isinstance(env.get("signatures"), list):
        raise SignatureError("malformed", "dssematerial is not a DSSE envelope "
                             "(no signatures list)")
    pt = env.get("payloadType")
    if not isinstance(pt, str):
        raise SignatureError("malformed", "the envelope has no payloadType")
    return env, pt, _b64(env.get("payload"), "the envelope's payload")


def check(event, keys):
    """Verify ``event`` against ``keys`` (a KeySet or an iterable of keys):
    returns ``(keyid, signed extension names)``; raises SignatureError
    naming the reason.  The steps and their order are the extension's."""
    if not isinstance(keys, KeySet):
        keys = KeySet(keys)
    signer, names = _check(event.attributes(), event.data, keys)
    return signer, list(names)


def _check(attrs, data, keys):
    material = attrs.get("dssematerial")
    if material is None or material == "":
        raise SignatureError("unsigned", "the event has no dssematerial")
    env, pt, body = _envelope(material)
    sigs = env["signatures"]
    signer = None
    if len(sigs) == 1 and type(sigs[0]) is dict:
        # (the common case: one signature, by a key id the verifier has)
        s = sigs[0]
        kid = s.get("keyid")
        k = keys.get(kid) if type(kid) is str else None
        if k is not None:
            if not k.verify(_b64(s.get("sig"), "a signature"),
                            pae(pt.encode("utf-8", "surrogatepass"), body)):
                raise SignatureError("bad signature", "the envelope's signature does not "
                                     "verify")
            signer = k.keyid
    if signer is None:
        signer = _signer(sigs, keys, pt, body)
    return signer, _after_signature(attrs, data, pt, body)


def _signer(sigs, keys, pt, body):
    """The key id of the first signature of ``sigs`` that verifies by one of
    ``keys`` (at most MAX_SIGNATURES tries); SignatureError if none."""
    ptb = pt.encode("utf-8", "surrogatepass")
    message = None
    known = False
    tried = 0
    signer = None
    for s in sigs:
        if not isinstance(s, dict):
            raise SignatureError("malformed", "a signature is not an object")
        kid = s.get("keyid")
        if kid is not None and type(kid) is not str:
            raise SignatureError("malformed", "a signature's keyid is not a string")
        cands = [keys.get(kid)] if kid else list(keys)
        for k in cands:
            if k is None:
                continue
            known = True
            tried += 1
            if tried > MAX_SIGNATURES:
                break
            if message is None:
                message = pae(ptb, body)
            if k.verify(_b64(s.get("sig"), "a signature"), message):
                signer = k.keyid
                break
        if signer is not None or tried > MAX_SIGNATURES:
            break
    if signer is None:
        if not known:
            raise SignatureError("unknown key", "no signature by an accepted key (key ids: "
                                 "{})".format(", ".join(repr(s.get("keyid")) for s in sigs
                                                        if isinstance(s, dict))[:300] or "none"))
        raise SignatureError("bad signature", "the envelope's signature does not verify")
    return signer


def _after_signature(attrs, data, pt, body):
    """The extension's steps after the signature: the payload type, the
    payload's length, signedextattrs, the digest; the signed names."""
    if pt != PAYLOAD_TYPE:
        raise SignatureError("unknown payload type", repr(pt[:100]))
    if len(body) != 32:
        raise SignatureError("malformed", "the signed payload is {} bytes, not 32".format(
            len(body)))
    names = _ext_list(attrs.get("signedextattrs"))
    if _digest(attrs, data, names) != body:
        raise SignatureError("digest mismatch", "the event is not the one that was signed "
                             "(an attribute or the data changed)")
    return names


def verify(event, keys, mode="strict"):
    """Verify ``event``; returns the event to use, by ``mode``:

    * ``strict`` (the extension's rule): a new Event of the core
      attributes, the data and exactly the signed extension attributes;
      an unsigned event fails.
    * ``core-only``: the core attributes and the data only.
    * ``passthrough``: the event unchanged (every attribute); an unsigned
      one passes too (it is not checked), a signed one must verify.

    Raises SignatureError (``reason``) when it does not verify."""
    if mode not in MODES:
        raise ValueError("mode must be one of {}, got {!r}".format(", ".join(MODES), mode))
    if mode == "passthrough":
        if event.get("dssematerial") in (None, ""):
            return event
        check(event, keys)
        return event
    _, names = check(event, keys)
    attrs = event.attributes()
    keep = {k: v for k, v in attrs.items() if k in _CORE and k != "specversion"}
    if mode == "strict":
        for n in names:
            if n in attrs:
                keep[n] = attrs[n]
    return Event(event.routing_subject, event.data, **keep)
