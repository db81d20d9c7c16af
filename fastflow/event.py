"""CloudEvents 1.0 encodings of fastflow events: the JSON event format (one
event and the batch format) and the HTTP protocol binding (binary and
structured content modes).

An :class:`Event` holds its attributes and its ``data`` as bytes; this
module maps them to and from the CloudEvents wire forms.

The engine's routing key is not a CloudEvents attribute: ``routing_subject``
is never put in the envelope (no attribute, header or JSON member carries
it), and the decoders take it as an argument (``None`` by default) and hand
it to the Event they build.  When ``type`` is left to default to the routing
subject, the encoded event carries that value as its ``type``, as any
consumer needs one.

JSON event format (``application/cloudevents+json``)
----------------------------------------------------

* ``specversion``, ``id``, ``source``, ``type``, then the optional
  attributes (``time``, ``subject``, ``datacontenttype``, ``dataschema``)
  and the extensions, each a top-level member.  Extension values keep their
  JSON type: str as string, int as number, bool as boolean; a bytes value
  (CloudEvents Binary) becomes its Base64 string (and decodes back as that
  string: JSON cannot tell them apart).  ``time`` passes as the string the
  event holds.  The engine's extensions ``ffhops`` (int) and ``fftrace``
  (str) are written like any other once set (``lineage=False`` leaves
  them out, for a door facing another organisation); ``ffhops`` 0 is the
  default and may be left out.
* ``data`` (spec section 3.1), by ``datacontenttype``:

  - none: ``data_base64``.  An Event's data is opaque bytes, and the spec
    (3.1.1) stores Binary data as ``data_base64``; this keeps every byte.
  - JSON (``*/json`` or ``*/*+json``, parameters ignored): the bytes are a
    JSON document, embedded as the ``data`` member's JSON value (an object
    stays an object, not a string).  The bytes are spliced in as they are,
    without re-serialising, so numbers, key order and spacing inside the
    document are kept; whitespace around the document is not (but for a
    signed event, one with ``dssematerial``, such data goes as
    ``data_base64``: its signature covers those bytes).  Bytes that are not
    one valid UTF-8 JSON document go as ``data_base64``.
  - text (``text/*``, ``*/xml``, ``*/*+xml`` or any type with a
    ``charset`` parameter): the bytes decoded with the charset (UTF-8 by
    default) as a ``data`` string; bytes that do not decode (or would not
    encode back to themselves) go as ``data_base64``.
  - any other type: ``data_base64``.
  - empty data: neither member.

  Decoding: ``data_base64`` gives its bytes (strict Base64); ``data`` with a
  JSON content type gives the member's JSON text as bytes (``"data": null``
  gives ``b"null"``, an explicit null payload, section 3.1.1); ``data``
  without a ``datacontenttype`` is JSON by the spec (3.1.2), and the event
  gets ``datacontenttype="application/json"`` so the bytes keep their meaning
  in other bindings; ``data`` with another content type must be a string,
  encoded with the charset (UTF-8 by default).  Both members present is an
  error.

* ``null`` members are unset attributes (section 2.2).

The batch format (``application/cloudevents-batch+json``) is a JSON array of
such objects (``to_json_batch``, ``from_json_batch``).

HTTP binding
------------

* Binary mode (``to_http(event)``): the data bytes are the body as they are,
  ``datacontenttype`` is the ``content-type`` header, every other attribute
  and extension is a ``ce-<name>`` header holding its canonical string
  (bool ``true``/``false``, int in decimal, bytes in Base64), percent-encoded
  per section 3.1.3.2: space, ``"``, ``%`` and everything outside printable
  ASCII are encoded as ``%XY`` (upper-case hex) of their UTF-8 bytes.
  Header names are lower-case.
* Structured mode (``to_http(event, "structured")``): ``content-type:
  application/cloudevents+json; charset=utf-8`` and the JSON event as the
  body.
* ``from_http(headers, body)`` picks the mode from ``Content-Type`` (section
  3): ``application/cloudevents+json`` is structured,
  ``application/cloudevents-batch+json`` is the batched mode (use
  ``from_http_batch``), any other value (or none) is binary.  Header names
  are case-insensitive; ``ce-`` values may be double-quoted strings (older
  senders) and are percent-decoded once, rejecting invalid UTF-8.  In binary
  mode every attribute arrives as a string: the values stay strings, except
  the engine's ``ffhops`` extension, turned back into an int.  Other headers
  are ignored.

Errors: input that is not a valid CloudEvent (not JSON, a missing required
attribute, a specversion other than ``1.0``, a bad extension name or value,
both ``data`` and ``data_base64``, bad Base64, bad percent-encoding) raises
:class:`fastflow.errors.EventError` (a ``ValueError``) naming the attribute
or the problem.
"""

import base64
import binascii
import codecs
import re
from urllib.parse import quote, unquote

import msgspec
import orjson

from fastflow import _attrs, _impl
from fastflow._impl import Event
from fastflow.errors import EventError


__all__ = (
    "BATCH_CONTENT_TYPE",
    "STRUCTURED_CONTENT_TYPE",
    "Event",
    "from_http",
    "from_http_batch",
    "from_json",
    "from_json_batch",
    "to_http",
    "to_http_batch",
    "to_json",
    "to_json_batch",
)

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"

_SPECVERSION = _attrs.SPECVERSION
_HOPS = _attrs.HOPS
_REQUIRED = ("specversion", "id", "source", "type")
_KNOWN = frozenset(_attrs.REQUIRED + _attrs.OPTIONAL + (_attrs.HOPS, _attrs.TRACE))
_EXT_NAME = re.compile(r"[a-z0-9]+\Z")
_ASCII_DIGITS = re.compile(r"[0-9]+\Z")

_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_BATCH = msgspec.json.Decoder(list[dict[str, msgspec.Raw]])
_VALUE = msgspec.json.Decoder()
_DOCUMENT = msgspec.json.Decoder(msgspec.Raw)
_JSON_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, RecursionError)

# header values: printable ASCII but space, '"' and '%' pass as they are
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ' "%')
_NEEDS_PERCENT = re.compile(r'[^\x21\x23\x24\x26-\x7e]')
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
BAD_CONTENT_TYPE = re.compile(r"[^\x20-\x7e\t]")


def _fail(name, msg):
    raise EventError("invalid event attribute {!r}: {}".format(name, msg))


# -- content types -------------------------------------------------------------


def _media_type(ct):
    """``(type/subtype in lower case, {parameter: value})`` of a content type."""
    parts = ct.split(";")
    params = {}
    for p in parts[1:]:
        k, sep, v = p.partition("=")
        if sep:
            v = v.strip()
            if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
                v = v[1:-1]
            params[k.strip().lower()] = v
    return parts[0].strip().lower(), params


def _is_json(mt):
    """Whether a media type declares JSON: ``*/json`` or ``*/*+json``."""
    _, slash, sub = mt.partition("/")
    return bool(slash) and (sub == "json" or sub.endswith("+json"))


def _is_text(mt, params):
    top, _, sub = mt.partition("/")
    return (top == "text" or sub == "xml" or sub.endswith("+xml") or "charset" in params)


def _codec(params):
    """The codec name of a content type's charset (UTF-8 by default), or
    ``None`` when Python does not know it."""
    cs = params.get("charset")
    if not cs:
        return "utf-8"
    try:
        return codecs.lookup(cs).name
    except LookupError:
        return None


# -- JSON event format ---------------------------------------------------------


def _b64(b):
    return base64.b64encode(b).decode("ascii")


def _json_text(data):
    """``data`` as one JSON document without surrounding whitespace, or
    ``None`` when it is not valid UTF-8 JSON."""
    try:
        raw = _DOCUMENT.decode(data)
    except _JSON_ERRORS:
        return None
    raw = bytes(raw)
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return raw


def _text(data, params):
    """``data`` decoded with the content type's charset, or ``None``."""
    codec = _codec(params)
    if codec is None:
        return None
    try:
        s = data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None
    if codec != "utf-8" and s.encode(codec) != data:    # not a bijection (BOMs, ...)
        return None
    return s


LINEAGE = ("ffhops", "fftrace")


def _attributes(event, lineage):
    """``event.attributes()``, without the engine's lineage extensions
    (``LINEAGE``) when ``lineage`` is false."""
    attrs = event.attributes()
    if not lineage:
        for k in LINEAGE:
            attrs.pop(k, None)
    return attrs


def _members(event, lineage=True):
    """The JSON members of ``event`` (a dict) and its data as JSON text to
    splice in as ``data`` (or ``None``)."""
    members = _attributes(event, lineage)
    for k, v in members.items():
        if type(v) is bytes:
            members[k] = _b64(v)
    data = event.data
    if not data:
        return members, None
    ct = members.get("datacontenttype")
    if ct is not None:
        mt, params = _media_type(ct)
        if _is_json(mt):
            raw = _json_text(data)
            # (a signed event's data with whitespace around it goes as
            # data_base64: the JSON member would lose that whitespace, and
            # the signature covers it; docs/provenance.md)
            if raw is not None and (len(raw) == len(data) or "dssematerial" not in members):
                return members, raw
        elif _is_text(mt, params):
            s = _text(data, params)
            if s is not None:
                members["data"] = s
                return members, None
    members["data_base64"] = _b64(data)
    return members, None


def _dumps(members, raw):
    try:
        out = orjson.dumps(members)
    except TypeError:
        for k, v in members.items():
            if type(v) is str:
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    _fail(k, "not valid Unicode (a lone surrogate), cannot be encoded as JSON")
        raise
    if raw is not None:
        out = b"".join((out[:-1], b',"data":', raw, b"}"))
    return out


def to_json(event, lineage=True):
    """``event`` in the CloudEvents JSON event format (structured mode), as
    UTF-8 bytes.  ``lineage=False`` leaves out the engine's ``ffhops`` and
    ``fftrace`` (for events that leave for another organisation: the loop
    breaker needs them only between fastflow engines)."""
    return _dumps(*_members(event, lineage))


def to_json_batch(events, lineage=True):
    """``events`` in the JSON batch format (``application/cloudevents-batch+json``)."""
    return b"[" + b",".join([_dumps(*_members(e, lineage)) for e in events]) + b"]"


def _value(name, raw):
    try:
        return _VALUE.decode(raw)
    except _JSON_ERRORS as exc:
        _fail(name, "not a valid JSON value ({})".format(exc))


def _make(attrs, data, routing_subject, missing, event_class=Event):
    """The ``event_class`` (the core's Event) of decoded ``attrs`` (``None``
    values dropped); ``missing`` says where a required attribute was looked
    for."""
    for name in _REQUIRED:
        if name not in attrs:
            _fail(name, "required, missing ({})".format(missing(name)))
    sv = attrs.pop("specversion")
    if sv != _SPECVERSION:
        _fail("specversion", "only {!r} is supported, got {!r}".format(_SPECVERSION, sv))
    for name in attrs:
        if name not in _KNOWN:
            if name == "data":
                _fail(name, "reserved for the event data, not an extension name")
            if not _EXT_NAME.match(name):
                _fail(name, "extension names are lowercase a-z and 0-9")
    return event_class(routing_subject, data, **attrs)


def _json_missing(name):
    return "no {!r} member in the JSON event".format(name)


def _from_members(members, routing_subject, event_class):
    data_raw = members.pop("data", None)
    b64_raw = members.pop("data_base64", None)
    attrs = {}
    for k, raw in members.items():
        v = _value(k, raw)
        if v is not None:
            attrs[k] = v
    ct = attrs.get("datacontenttype")
    if ct is not None and type(ct) is not str:
        _fail("datacontenttype", "expected a str, got {}".format(type(ct).__name__))
    b64 = None if b64_raw is None else _value("data_base64", b64_raw)
    if data_raw is not None and b64 is not None and bytes(data_raw) != b"null":
        raise EventError("invalid JSON event: both 'data' and 'data_base64' are present "
                         "(they are mutually exclusive)")
    if b64 is not None:
        if type(b64) is not str:
            raise EventError("invalid event data: 'data_base64' must be a Base64 string, "
                             "got {}".format(type(b64).__name__))
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise EventError("invalid event data: 'data_base64' is not valid Base64 "
                             "({})".format(exc)) from None
    elif data_raw is not None:
        if ct is None:
            ct = attrs["datacontenttype"] = "application/json"
        mt, params = _media_type(ct)
        if _is_json(mt):
            data = bytes(data_raw)
            if not data.isascii():
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise EventError("invalid event data: not valid UTF-8 JSON "
                                     "({})".format(exc)) from None
        else:
            v = _value("data", data_raw)
            if v is None:
                data = b""
            elif type(v) is not str:
                raise EventError(
                    "invalid event data: 'data' must be a string when datacontenttype {!r} "
                    "is not JSON, got {}".format(ct, type(v).__name__))
            else:
                codec = _codec(params)
                if codec is None:
                    raise EventError("invalid event data: unknown charset in "
                                     "datacontenttype {!r}".format(ct))
                try:
                    data = v.encode(codec)
                except UnicodeEncodeError as exc:
                    raise EventError("invalid event data: the 'data' string cannot be "
                                     "encoded as {} ({})".format(codec, exc)) from None
    else:
        data = b""
    return _make(attrs, data, routing_subject, _json_missing, event_class)


def _from_json_py(body, routing_subject=None, event_class=Event):
    """The Event of a JSON event (``application/cloudevents+json``; bytes or
    str), with ``routing_subject`` as its routing key: the reference
    semantics of ``from_json`` (the core's ``decode_event`` runs it in C;
    ``event_class``: the Event class of the core that asks)."""
    try:
        members = _OBJECT.decode(body)
    except msgspec.ValidationError as exc:
        raise EventError("invalid JSON event: expected a JSON object ({})".format(exc)) from None
    except _JSON_ERRORS as exc:
        raise EventError("invalid JSON event: not valid JSON ({})".format(exc)) from None
    except TypeError as exc:
        raise EventError("invalid JSON event: expected bytes or str, got {}".format(
            type(body).__name__)) from exc
    return _from_members(members, routing_subject, event_class)


def _from_json_batch_py(body, routing_subject=None, event_class=Event):
    """The Events of a JSON batch (``application/cloudevents-batch+json``),
    each with ``routing_subject``.  An invalid event raises naming its
    index.  The reference semantics of ``from_json_batch`` (the core's
    ``decode_batch`` runs it in C)."""
    try:
        items = _BATCH.decode(body)
    except msgspec.ValidationError as exc:
        raise EventError("invalid JSON batch: expected a JSON array of objects ({})".format(
            exc)) from None
    except _JSON_ERRORS as exc:
        raise EventError("invalid JSON batch: not valid JSON ({})".format(exc)) from None
    except TypeError as exc:
        raise EventError("invalid JSON batch: expected bytes or str, got {}".format(
            type(body).__name__)) from exc
    out = []
    for i, members in enumerate(items):
        try:
            out.append(_from_members(members, routing_subject, event_class))
        except EventError as exc:
            raise EventError("{} (batch index {})".format(exc, i)) from None
    return out


# The decoders every caller uses: the core's (in C in the compiled core; the
# reference core's call the two functions above).
from_json = _impl.decode_event
from_json_batch = _impl.decode_batch


# -- HTTP binding ----------------------------------------------------------------


def _percent(name, s):
    if not _NEEDS_PERCENT.search(s):
        return s
    try:
        return quote(s, safe=_HEADER_SAFE, encoding="utf-8", errors="strict")
    except UnicodeEncodeError:
        _fail(name, "not valid Unicode (a lone surrogate), cannot be percent-encoded")


def header_value(name, v):
    """The canonical string of an attribute value, percent-encoded."""
    t = type(v)
    if t is str:
        return _percent(name, v)
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is bytes:
        return _b64(v)
    _fail(name, "cannot be sent as a header: {}".format(t.__name__))


def to_http(event, mode="binary", lineage=True):
    """``(headers, body)`` of ``event`` in the HTTP binding: ``mode`` is
    ``"binary"`` (attributes as ``ce-`` headers, data as the body) or
    ``"structured"`` (the JSON event as the body); ``lineage`` as in
    ``to_json``."""
    if mode == "structured":
        return {"content-type": STRUCTURED_CONTENT_TYPE}, to_json(event, lineage)
    if mode != "binary":
        raise ValueError("mode must be 'binary' or 'structured', got {!r}".format(mode))
    headers = {}
    for k, v in _attributes(event, lineage).items():
        if k == "datacontenttype":
            if BAD_CONTENT_TYPE.search(v):
                _fail(k, "cannot be sent as a Content-Type header (control or "
                         "non-ASCII characters): {!r}".format(v))
            headers["content-type"] = v
        else:
            headers["ce-" + k] = header_value(k, v)
    return headers, event.data


def to_http_batch(events, lineage=True):
    """``(headers, body)`` of ``events`` in the batched content mode."""
    return {"content-type": BATCH_CONTENT_TYPE}, to_json_batch(events, lineage)


def _latin1(s):
    return s.decode("latin-1") if isinstance(s, (bytes, bytearray)) else s


def _headers(headers):
    """Lower-cased header names to values, for the ``ce-`` headers and
    Content-Type (a repeated one raises)."""
    items = headers.items() if hasattr(headers, "items") else headers
    out = {}
    for name, value in items:
        name = _latin1(name).lower()
        if name.startswith("ce-") or name == "content-type":
            value = _latin1(value)
            if type(value) is not str:
                raise EventError("invalid HTTP header {!r}: expected a str value, got {}".format(
                    name, type(value).__name__))
            if name in out:
                raise EventError("invalid CloudEvents HTTP message: header {!r} appears more "
                                 "than once".format(name))
            out[name] = value
    return out


def _mode(ct):
    """``"binary"``, ``"structured"`` or ``"batch"`` by Content-Type."""
    if ct is None:
        return "binary"
    mt = ct.split(";", 1)[0].strip().lower()
    if mt.startswith("application/cloudevents-batch"):
        if mt != "application/cloudevents-batch+json":
            raise EventError("unsupported CloudEvents batch format {!r}: only "
                             "application/cloudevents-batch+json is".format(mt))
        return "batch"
    if mt.startswith("application/cloudevents"):
        if mt != "application/cloudevents+json":
            raise EventError("unsupported CloudEvents event format {!r}: only "
                             "application/cloudevents+json is".format(mt))
        return "structured"
    return "binary"


def unheader(name, value):
    """A ``ce-`` header value: unquoted if a quoted-string, percent-decoded."""
    v = value.strip(" \t")
    if not v.isascii():
        # raw bytes past ASCII, as a server reads them (Latin-1; the binding
        # asks for percent-encoding): the UTF-8 they nearly always are; a
        # value that is no such thing is kept as it is
        try:
            v = v.encode("latin-1").decode("utf-8")
        except UnicodeError:
            pass
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        v = _QUOTED_PAIR.sub(lambda m: m.group(1), v[1:-1])
    if "%" in v:
        try:
            v = unquote(v, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            _fail(name, "header ce-{} is not valid percent-encoded UTF-8: {!r}".format(
                name, value))
    return v


def _binary_missing(name):
    return "no ce-{} header".format(name)


def _body(body):
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    return body


def _from_binary(h, body, routing_subject):
    attrs = {}
    for name, value in h.items():
        if name.startswith("ce-"):
            attr = name[3:]
            attrs[attr] = unheader(attr, value)
    if not attrs:
        raise EventError("not a CloudEvents HTTP message: no ce- headers and Content-Type "
                         "{!r} is not a CloudEvents format".format(h.get("content-type")))
    ct = h.get("content-type")
    if ct is not None:
        ct = ct.strip(" \t")
    if ct:
        if attrs.get("datacontenttype", ct) != ct:
            _fail("datacontenttype", "the ce-datacontenttype header {!r} contradicts "
                  "Content-Type {!r}".format(attrs["datacontenttype"], ct))
        attrs["datacontenttype"] = ct
    hops = attrs.get(_HOPS)
    if hops is not None and _ASCII_DIGITS.match(hops):
        attrs[_HOPS] = int(hops)
    return _make(attrs, _body(body), routing_subject, _binary_missing)


def from_http(headers, body, routing_subject=None):
    """The Event of an HTTP message (``headers``: a mapping or ``(name,
    value)`` pairs; ``body``: bytes) in binary or structured mode, with
    ``routing_subject`` as its routing key.  A batch raises (use
    ``from_http_batch``)."""
    h = _headers(headers)
    mode = _mode(h.get("content-type"))
    if mode == "structured":
        return from_json(_body(body), routing_subject)
    if mode == "batch":
        raise EventError("HTTP message in batched content mode (Content-Type {!r}): use "
                         "from_http_batch".format(h["content-type"]))
    return _from_binary(h, body, routing_subject)


def from_http_batch(headers, body, routing_subject=None):
    """The Events of an HTTP message in any content mode: the batch's events
    in batched mode, else a list of the one event."""
    h = _headers(headers)
    mode = _mode(h.get("content-type"))
    if mode == "batch":
        return from_json_batch(_body(body), routing_subject)
    if mode == "structured":
        return [from_json(_body(body), routing_subject)]
    return [_from_binary(h, body, routing_subject)]
