"""The Subscription resource of the CloudEvents Subscriptions API 0.1:
validation of what a client sends (every refusal names the field) and
the JSON the API answers (``sinkcredential`` is write-only: never
returned).

fastflow's words for the open parts of the resource:

- ``config`` (a map of string to string): ``stream`` (the stream whose
  events the subscription delivers; it may be left out when the server
  has exactly one), ``start`` (``new``, the default: events stored from
  now on; ``first``; or a seq), ``subject`` (a routing-subject pattern,
  ``orders.eu.>``), ``deadletter`` (the subject a failed event is
  published on; default ``$DLQ.subscriptions.<id>``).
- ``protocol``: ``HTTP`` (webhook delivery to ``sink``, an http(s) URL)
  or ``NATS`` (``sink`` is ``fastflow:`` for this engine, or a
  ``nats://`` URL; ``protocolsettings.subject`` is the subject to
  publish on), or ``MQTT3`` / ``MQTT5`` (``sink`` is ``fastflow:``: this
  server's MQTT door; ``protocolsettings`` the specification's
  ``topicname``, ``qos``, ``retain``, and for MQTT5 ``expiry`` and
  ``userproperties``).
- ``protocolsettings`` for HTTP: ``headers`` (added to each request),
  ``method`` (``POST``, the default, or ``PUT``), and fastflow's
  ``mode`` (``binary``, ``structured`` or ``batch``), ``maxbatch``,
  ``timeout``, ``maxinflight``, ``maxretries``, ``handshake``.
"""

import re
from urllib.parse import urlsplit

from fastflow._impl import validate_subject
from fastflow.errors import SubjectError
from fastflow.subscriptions.filters import FilterError, _kind, compile_filter

__all__ = ("PROTOCOLS", "Spec", "parse")

PROTOCOLS = ("HTTP", "NATS", "MQTT3", "MQTT5")
KNOWN_PROTOCOLS = ("HTTP", "MQTT3", "MQTT5", "AMQP", "NATS", "KAFKA")
FIELDS = ("id", "source", "types", "config", "filters", "sink", "sinkcredential", "protocol",
          "protocolsettings")
CONFIG_KEYS = ("stream", "start", "subject", "deadletter")
HTTP_SETTINGS = ("headers", "method", "mode", "maxbatch", "timeout", "maxinflight",
                 "maxretries", "handshake")
MQTT_SETTINGS = ("topicname", "qos", "retain", "expiry", "userproperties")
MAX_USER_PROPERTIES = 32
MAX_MQTT_STR = 65535            # bytes of an MQTT string
MAX_TYPES = 1024
MAX_HEADERS = 32
MAX_URL = 2048
MAX_TEXT = 4096
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}\Z")
_CTL = re.compile(r"[\x00-\x1f\x7f]")
# headers a subscription may not set: the request's framing, routing and credentials are ours
_RESERVED_HEADERS = frozenset((
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
    "te", "trailer", "expect", "authorization", "content-type", "proxy-authorization",
    "webhook-request-origin", "webhook-request-callback", "webhook-request-rate"))


class Spec:
    """A validated subscription: the resource's fields (``resource``,
    without ``id``; ``sinkcredential`` kept apart in ``credential``), and
    what delivery needs: ``stream``, ``start``, ``routing``,
    ``deadletter``, ``predicate``, ``keys``, ``settings``."""

    __slots__ = ("resource", "credential", "stream", "start", "routing", "deadletter",
                 "predicate", "keys", "settings")

    def public(self, sid):
        """The resource as the API answers it."""
        d = {"id": sid}
        d.update(self.resource)
        return d


def _text(v, field, empty=False, limit=MAX_TEXT):
    if not isinstance(v, str):
        raise FilterError(field, "expected a string, got {}".format(_kind(v)))
    if not v and not empty:
        raise FilterError(field, "must not be empty")
    if len(v) > limit:
        raise FilterError(field, "longer than {} characters".format(limit))
    if "\x00" in v:
        raise FilterError(field, "contains a NUL character")
    return v


def _bearer(cred):
    """The token to send as ``Authorization: Bearer`` (None: no header)."""
    if cred is None:
        return None
    if not isinstance(cred, dict):
        raise FilterError("sinkcredential", "expected an object, got {}".format(_kind(cred)))
    ctype = cred.get("credentialtype", cred.get("credentialType"))
    if ctype not in ("ACCESSTOKEN", "REFRESHTOKEN", "PLAIN"):
        raise FilterError("sinkcredential.credentialtype", "expected ACCESSTOKEN, REFRESHTOKEN "
                          "or PLAIN, got {!r}".format(ctype))
    if ctype == "PLAIN":
        for k in ("identifier", "secret"):
            v = _text(cred.get(k), "sinkcredential." + k)
            if _CTL.search(v):
                raise FilterError("sinkcredential." + k, "contains a control character")
        return None
    tok = cred.get("accesstoken", cred.get("accessToken"))
    tok = _text(tok, "sinkcredential.accesstoken")
    if _CTL.search(tok) or not tok.isascii():
        raise FilterError("sinkcredential.accesstoken",
                          "must be printable ASCII (it goes into a header line)")
    return tok


def _http_settings(ps):
    out = {}
    for k in ps:
        if k not in HTTP_SETTINGS:
            raise FilterError("protocolsettings." + str(k)[:64], "unknown HTTP setting (known: {})"
                              .format(", ".join(HTTP_SETTINGS)))
    hs = ps.get("headers", {})
    if not isinstance(hs, dict):
        raise FilterError("protocolsettings.headers", "expected an object of header name to "
                          "value, got {}".format(_kind(hs)))
    if len(hs) > MAX_HEADERS:
        raise FilterError("protocolsettings.headers", "more than {} headers".format(MAX_HEADERS))
    headers = []
    for name, value in hs.items():
        at = "protocolsettings.headers.{}".format(str(name)[:64])
        if not _TOKEN.match(name):
            raise FilterError(at, "not a header name (letters, digits and !#$%&'*+-.^_`|~)")
        if name.lower() in _RESERVED_HEADERS or name.lower().startswith("ce-"):
            raise FilterError(at, "a header fastflow sets itself may not be given")
        value = _text(value, at, empty=True, limit=1024)
        if _CTL.search(value.replace("\t", " ")) or not value.isascii():
            raise FilterError(at, "header values are printable ASCII without CR, LF or NUL")
        headers.append((name, value))
    out["headers"] = headers
    method = ps.get("method", "POST")
    if method not in ("POST", "PUT"):
        raise FilterError("protocolsettings.method", "expected POST or PUT, got {!r}".format(
            method if isinstance(method, str) else _kind(method)))
    out["method"] = method
    mode = ps.get("mode", "binary")
    if mode not in ("binary", "structured", "batch"):
        raise FilterError("protocolsettings.mode", "expected binary, structured or batch, got "
                          "{!r}".format(mode if isinstance(mode, str) else _kind(mode)))
    out["mode"] = mode
    for key, lo, hi, default in (("maxbatch", 1, 10000, 100), ("maxinflight", 1, 256, 8),
                                 ("maxretries", 0, 100, 8)):
        v = ps.get(key, default)
        if type(v) is not int or not lo <= v <= hi:
            raise FilterError("protocolsettings." + key, "expected an integer {}..{}, got {!r}"
                              .format(lo, hi, v))
        out[key] = v
    t = ps.get("timeout", 10)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.1 <= t <= 300:
        raise FilterError("protocolsettings.timeout", "expected seconds 0.1..300, got {!r}"
                          .format(t))
    out["timeout"] = float(t)
    h = ps.get("handshake", True)
    if type(h) is not bool:
        raise FilterError("protocolsettings.handshake", "expected true or false, got {}".format(
            _kind(h)))
    out["handshake"] = h
    return out


def _mqtt_str(v, field):
    v = _text(v, field, empty=True, limit=MAX_MQTT_STR)
    if len(v.encode("utf-8", "surrogatepass")) > MAX_MQTT_STR:
        raise FilterError(field, "longer than {} bytes (an MQTT string)".format(MAX_MQTT_STR))
    if any("\ud800" <= c <= "\udfff" for c in v):
        raise FilterError(field, "holds a lone surrogate (not UTF-8)")
    return v


def _mqtt_settings(protocol, ps):
    """The delivery settings of an MQTT3 / MQTT5 subscription: ``subject``
    (the topic's), ``topic``, ``qos`` (default 1, as the specification
    says), ``retain`` (default false), ``expiry`` (seconds, or None) and
    ``userproperties`` (a list of pairs); the last two MQTT5 only."""
    from fastflow.mqtt import mqtt_topic_to_subject

    for k in ps:
        if k not in MQTT_SETTINGS:
            raise FilterError("protocolsettings." + str(k)[:64], "unknown MQTT setting (known: {})"
                              .format(", ".join(MQTT_SETTINGS)))
    topic = ps.get("topicname")
    if topic is None:
        raise FilterError("protocolsettings.topicname", "required for {}: the MQTT topic to "
                          "publish to".format(protocol))
    topic = _mqtt_str(topic, "protocolsettings.topicname")
    try:
        subject = mqtt_topic_to_subject(topic)
    except (SubjectError, ValueError) as exc:
        raise FilterError("protocolsettings.topicname", str(exc)) from None
    qos = ps.get("qos", 1)
    if type(qos) is not int or qos not in (0, 1, 2):
        raise FilterError("protocolsettings.qos", "expected 0, 1 or 2, got {!r}".format(qos))
    retain = ps.get("retain", False)
    if type(retain) is not bool:
        raise FilterError("protocolsettings.retain", "expected true or false, got {}".format(
            _kind(retain)))
    expiry = ps.get("expiry")
    if expiry is not None:
        if protocol != "MQTT5":
            raise FilterError("protocolsettings.expiry", "MQTT 5.0 only (a message expiry "
                              "interval): use protocol MQTT5")
        if type(expiry) is not int or not 0 <= expiry <= 0xFFFFFFFF:
            raise FilterError("protocolsettings.expiry", "expected seconds 0..4294967295, got "
                              "{!r}".format(expiry))
    up = ps.get("userproperties")
    pairs = []
    if up is not None:
        if protocol != "MQTT5":
            raise FilterError("protocolsettings.userproperties", "MQTT 5.0 only (user "
                              "properties): use protocol MQTT5")
        if not isinstance(up, dict):
            raise FilterError("protocolsettings.userproperties", "expected an object of name "
                              "to value, got {}".format(_kind(up)))
        if len(up) > MAX_USER_PROPERTIES:
            raise FilterError("protocolsettings.userproperties", "more than {} user properties"
                              .format(MAX_USER_PROPERTIES))
        for name, value in up.items():
            at = "protocolsettings.userproperties.{}".format(str(name)[:64])
            pairs.append((_mqtt_str(name, at), _mqtt_str(value, at)))
    return {"subject": subject, "topic": topic, "qos": qos, "retain": retain,
            "expiry": expiry, "userproperties": pairs}


def parse(body, streams, sink_allowed=None):
    """Validate a Subscription request ``body`` (a decoded JSON object)
    against the server's ``streams`` (name -> subjects); returns a
    ``Spec``.  ``sink_allowed(url) -> None or why not`` vets HTTP sinks.
    Raises FilterError naming the field."""
    if not isinstance(body, dict):
        raise FilterError("(body)", "expected a JSON object, got {}".format(_kind(body)))
    for k in body:
        if k not in FIELDS:
            raise FilterError(str(k)[:64], "unknown field (the Subscription resource has: {})"
                              .format(", ".join(FIELDS)))
    s = Spec()
    res = {}
    protocol = body.get("protocol")
    if protocol is None:
        raise FilterError("protocol", "required (one of {})".format(", ".join(PROTOCOLS)))
    if protocol not in PROTOCOLS:
        why = ("a CloudEvents protocol this server does not deliver with" if protocol in
               KNOWN_PROTOCOLS else "unknown protocol (protocol names are case-sensitive)")
        raise FilterError("protocol", "{!r}: {} (supported: {})".format(
            protocol if isinstance(protocol, str) else _kind(protocol), why,
            ", ".join(PROTOCOLS)))
    res["protocol"] = protocol
    sink = _text(body.get("sink"), "sink", limit=MAX_URL) if "sink" in body else None
    if sink is None:
        raise FilterError("sink", "required: the URL events are delivered to")
    if _CTL.search(sink) or " " in sink:
        raise FilterError("sink", "a URL has no spaces or control characters")
    try:
        u = urlsplit(sink)
        port = u.port
    except ValueError as exc:
        raise FilterError("sink", "not a URL: {}".format(exc)) from None
    ps = body.get("protocolsettings", {})
    if ps is None:
        ps = {}
    if not isinstance(ps, dict):
        raise FilterError("protocolsettings", "expected an object, got {}".format(_kind(ps)))
    if protocol == "HTTP":
        if u.scheme not in ("http", "https") or not u.hostname:
            raise FilterError("sink", "an HTTP sink is an http:// or https:// URL, got {!r}"
                              .format(sink[:200]))
        if u.username is not None or u.password is not None:
            raise FilterError("sink", "credentials go in sinkcredential, not in the URL")
        if port == 0:
            raise FilterError("sink", "port 0 is no port")
        if sink_allowed is not None:
            why = sink_allowed(u)
            if why:
                raise FilterError("sink", why)
        s.settings = _http_settings(ps)
    elif protocol in ("MQTT3", "MQTT5"):
        if sink != "fastflow:":
            raise FilterError("sink", "an {} sink is 'fastflow:' (this server's MQTT door; "
                              "a remote MQTT broker is not delivered to), got {!r}".format(
                                  protocol, sink[:200]))
        s.settings = _mqtt_settings(protocol, ps)
    else:
        if sink != "fastflow:" and (u.scheme != "nats" or not u.hostname):
            raise FilterError("sink", "a NATS sink is 'fastflow:' (this engine) or a nats:// "
                              "URL, got {!r}".format(sink[:200]))
        for k in ps:
            if k != "subject":
                raise FilterError("protocolsettings." + str(k)[:64],
                                  "unknown NATS setting (known: subject)")
        subj = ps.get("subject")
        if subj is None:
            raise FilterError("protocolsettings.subject", "required for NATS: the subject to "
                              "publish on")
        subj = _text(subj, "protocolsettings.subject", limit=1024)
        try:
            validate_subject(subj)
        except SubjectError as exc:
            raise FilterError("protocolsettings.subject", str(exc)) from None
        s.settings = {"subject": subj}
    res["sink"] = sink
    if ps:
        res["protocolsettings"] = ps
    s.credential = _bearer(body.get("sinkcredential"))
    if protocol != "HTTP" and s.credential is not None:
        raise FilterError("sinkcredential", "only HTTP sinks take a credential here")
    source = body.get("source")
    if source is not None:
        res["source"] = _text(source, "source")
    types = body.get("types")
    if types is not None:
        if not isinstance(types, list):
            raise FilterError("types", "expected a list of CloudEvents types, got {}".format(
                _kind(types)))
        if len(types) > MAX_TYPES:
            raise FilterError("types", "more than {} types".format(MAX_TYPES))
        for i, t in enumerate(types):
            _text(t, "types[{}]".format(i))
        res["types"] = list(types)
    config = body.get("config", {})
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise FilterError("config", "expected an object, got {}".format(_kind(config)))
    for k, v in config.items():
        if k not in CONFIG_KEYS:
            raise FilterError("config." + str(k)[:64], "unknown key (known: {})".format(
                ", ".join(CONFIG_KEYS)))
        _text(v, "config." + k, limit=1024)
    if config:
        res["config"] = dict(config)
    name = config.get("stream")
    if name is None:
        if len(streams) != 1:
            raise FilterError("config.stream", "required: the stream to deliver from ({})"
                              .format(", ".join(sorted(streams)) if streams else
                                      "this server has no stream: add one first"))
        (name,) = streams
    elif name not in streams:
        raise FilterError("config.stream", "no stream named {!r}".format(name[:200]))
    s.stream = name
    start = config.get("start", "new")
    if start not in ("new", "first"):
        if not (start.isascii() and start.isdigit() and 0 < len(start) <= 19 and int(start)):
            raise FilterError("config.start", "expected new, first or a seq (a number >= 1), "
                              "got {!r}".format(start[:100]))
        start = int(start)
    s.start = start
    s.routing = config.get("subject")
    dl = config.get("deadletter")
    if dl is not None:
        try:
            validate_subject(dl)
        except SubjectError as exc:
            raise FilterError("config.deadletter", str(exc)) from None
    s.deadletter = dl
    filters = body.get("filters")
    s.predicate, s.keys = compile_filter(source, types, filters, s.routing)
    if filters is not None:
        res["filters"] = filters
    s.resource = res
    return s
