"""CloudEvents 1.0 attribute rules, shared by the native and reference cores.

A leaf module (it imports nothing of fastflow but ``fastflow.errors``), so
that ``fastflow._core`` and ``fastflow._ref`` validate attributes with one
set of rules.  Only publishes that carry attributes come here; the
engine's fast path (a subject and a payload) never does.

Attributes of an event, as the engine keeps them:

* ``id``, ``source``, ``type`` (required by CloudEvents) and ``ffhops``,
  ``fftrace`` (the loop breaker's lineage) have fixed places in the record
  header (see docs/engine.md);
* everything else (``time``, ``subject``, ``datacontenttype``,
  ``dataschema`` and extensions) is the *rest*: a dict, stored as a msgpack
  map and decoded lazily.
"""

import datetime as _dt
import hashlib
import re

import msgspec

from fastflow.errors import EventError

__all__ = (
    "DEFAULT_SOURCE",
    "HOPS",
    "OPTIONAL",
    "REQUIRED",
    "SPECVERSION",
    "TRACE",
    "check_lineage",
    "check_rest",
    "decode_rest",
    "encode_rest",
    "format_time",
    "normalize",
    "trace_entry",
)

SPECVERSION = "1.0"
DEFAULT_SOURCE = "/fastflow"
HOPS = "ffhops"
TRACE = "fftrace"
REQUIRED = ("id", "source", "specversion", "type")
OPTIONAL = ("datacontenttype", "dataschema", "subject", "time")
MAX_STRING = 65535          # bytes (UTF-8) of id, source, type, fftrace
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

_NAME = re.compile(r"[a-z0-9]+\Z")
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(dict)


def _fail(name, msg):
    raise EventError("invalid event attribute {!r}: {}".format(name, msg))


def _string(name, v, allow_empty=False):
    if type(v) is not str:
        _fail(name, "expected a str, got {}".format(type(v).__name__))
    if not v and not allow_empty:
        _fail(name, "must not be empty")
    if len(v) > MAX_STRING // 4 and len(v.encode("utf-8", "surrogatepass")) > MAX_STRING:
        _fail(name, "longer than {} bytes".format(MAX_STRING))
    return v


def format_time(t):
    """An RFC 3339 string of a timezone-aware datetime."""
    if t.tzinfo is None or t.utcoffset() is None:
        _fail("time", "a datetime must be timezone-aware, got a naive one")
    if t.utcoffset().seconds % 60 or t.utcoffset().microseconds:
        t = t.astimezone(_dt.timezone.utc)   # RFC 3339 offsets have no seconds
    s = t.isoformat()
    return s[:-6] + "Z" if s.endswith("+00:00") else s


def _time(v):
    if isinstance(v, _dt.datetime):
        return format_time(v)
    if type(v) is not str:
        _fail("time", "expected an RFC 3339 str or a datetime, got {}".format(type(v).__name__))
    if not _RFC3339.match(v):
        _fail("time", "expected an RFC 3339 timestamp, got {!r}".format(v))
    try:
        _dt.datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        _fail("time", "not a valid date and time: {!r}".format(v))
    return v


def _ext_value(name, v):
    t = type(v)
    if t is str or t is bool:
        return v
    if t is int:
        if not INT32_MIN <= v <= INT32_MAX:
            _fail(name, "integers must fit in 32 bits (CloudEvents Integer), got {}".format(v))
        return v
    if t is bytes or t is bytearray or t is memoryview:
        return bytes(v)
    if isinstance(v, _dt.datetime):
        return format_time(v)
    _fail(name, "expected str, bool, int, bytes or datetime, got {}".format(t.__name__))


def normalize(attrs):
    """Validate publish/constructor attributes.

    Returns ``(id, source, type, hops, trace, rest)``: ``None`` for the ones
    not given, ``rest`` a dict of the others or ``None``.  Raises
    ``EventError`` naming the first bad attribute.
    """
    id_ = source = type_ = trace = rest = None
    hops = 0
    for name, v in attrs.items():
        if name == "id":
            id_ = _string(name, v)
        elif name == "source":
            source = _string(name, v)
        elif name == "type":
            type_ = _string(name, v)
        elif name == "specversion":
            if v != SPECVERSION:
                _fail(name, "only {!r} is supported, got {!r}".format(SPECVERSION, v))
        elif name == HOPS:
            if type(v) is str and v.isascii() and v.isdigit():
                v = int(v)
            if type(v) is not int or not 0 <= v <= 65535:
                _fail(name, "expected an int from 0 to 65535, got {!r}".format(v))
            hops = v
        elif name == TRACE:
            trace = _string(name, v, allow_empty=True) or None
        elif name in ("data", "data_base64"):
            _fail(name, "the payload is passed as data, not as an attribute")
        else:
            if rest is None:
                rest = {}
            if name == "time":
                rest[name] = _time(v)
            elif name in ("subject", "datacontenttype", "dataschema"):
                rest[name] = _string(name, v)
            elif type(name) is not str or not _NAME.match(name):
                _fail(name, "extension names are lowercase a-z and 0-9")
            elif v is not None:
                rest[name] = _ext_value(name, v)
    if rest is not None and not rest:
        rest = None
    return id_, source, type_, hops, trace, rest


def encode_rest(rest):
    """The rest of the attributes as stored: a msgpack map."""
    return _ENCODER.encode(rest)


def decode_rest(raw):
    try:
        return _DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise EventError("stored event attributes are not a msgpack map: {}".format(exc)) from None


_NOT_REST = frozenset(REQUIRED + (HOPS, TRACE, "data", "data_base64"))


def check_rest(subject, raw):
    """Raise ``EventError`` unless ``raw`` (the msgpack block of a record
    that came from the network) is a map of attribute names to values an
    event can carry: what a stream stores and every door writes out later
    is checked once, before it is stored or delivered."""
    try:
        rest = _DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise EventError("invalid event record for {!r}: its attributes are not a msgpack "
                         "map: {}".format(subject, exc)) from None
    for name, v in rest.items():
        if type(name) is not str or not _NAME.match(name) or name in _NOT_REST:
            raise EventError("invalid event record for {!r}: attribute name {!r} (names are "
                             "lowercase a-z and 0-9, not one of {})".format(
                                 subject, name, ", ".join(sorted(_NOT_REST))))
        t = type(v)
        if t is int:
            if not INT32_MIN <= v <= INT32_MAX:
                raise EventError("invalid event record for {!r}: attribute {!r}: integers must "
                                 "fit in 32 bits, got {}".format(subject, name, v))
        elif t is not str and t is not bool and t is not bytes:
            raise EventError("invalid event record for {!r}: attribute {!r}: expected str, "
                             "bool, int or bytes, got {}".format(subject, name, t.__name__))


def trace_entry(flow, subject):
    """This hop's lineage entry: 8 hex digits of a hash of the flow's name
    and the routing subject."""
    return hashlib.blake2s("{}\0{}".format(flow, subject).encode("utf-8", "surrogatepass"),
                           digest_size=4).hexdigest()


def check_lineage(flow, subject, hops, trace, hop_limit):
    """``None`` when an event with this lineage may be published on
    ``subject`` in ``flow``, else the reason it is stopped."""
    if hop_limit and hops > hop_limit:
        return "hop limit {} exceeded ({} hops)".format(hop_limit, hops)
    if trace and trace_entry(flow, subject) in trace.split(","):
        return "event returned to {!r} in flow {!r} that it already passed".format(subject, flow)
    return None
