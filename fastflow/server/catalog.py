"""The discovery catalog on the HTTP door (docs/catalog.md): the xRegistry
HTTP binding below ``/registry`` (``fastflow.catalog.Catalog`` answers),
and ``/.well-known/xregistry`` (host-based discovery: the registries here).

Errors are problem details (RFC 9457) with the xRegistry error types
(``application/problem+json``); every value goes through the JSON writer,
and the only request value echoed into a header or a URL is the ``Host``
header, and only when it is a plain ``host[:port]``.
"""

import re
from urllib.parse import unquote

from fastflow.catalog.model import XRegistryError
from fastflow.catalog.registry import Access
from fastflow.server.http import _JSON, HttpError, _dumps

__all__ = ("BASE", "catalog_request", "doors", "well_known_request")

BASE = "/registry"
WELL_KNOWN = "/.well-known/xregistry"
_PROBLEM = "application/problem+json"
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?"
                      r"|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


def _host(proto, req):
    """``host[:port]`` the client reached (its Host header when it is a
    plain one, else the door's address)."""
    h = req.headers.get("host", "")
    if h and len(h) <= 260 and _HOST_RE.match(h):
        return h
    addr = proto.server.http_addresses[0] if proto.server.http_addresses else ("127.0.0.1", 0)
    host = addr[0]
    if ":" in host:
        host = "[" + host + "]"
    return "{}:{}".format(host, addr[1])


def _scheme(proto):
    return "https" if proto.cfg.tls else "http"


def base_url(proto, req):
    return "{}://{}{}".format(_scheme(proto), _host(proto, req), BASE)


def doors(server, host):
    """The endpoints of the doors that are on, as ``host`` reaches them."""
    name = host.rpartition(":")[0] if host.rpartition(":")[2].isdigit() and \
        not host.endswith("]") else host
    tls = server.config.tls
    out = [{"id": "native", "door": "native", "protocol": "FASTFLOW/1",
            "name": "native door", "uri": "{}://{}:{}".format(
                "fastflows" if tls else "fastflow", name, server.port),
            "description": "fastflow's binary protocol (fastflow.client)",
            "usage": ["producer", "subscriber", "consumer"]}]
    if server.nats_port:
        out.append({"id": "nats", "door": "nats", "protocol": "NATS", "name": "NATS door",
                    "uri": "nats://{}:{}".format(name, server.nats_port),
                    "description": "the NATS client protocol (nats.py, nats.go, nats CLI); "
                                   "CloudEvents in binary mode in NATS headers",
                    "usage": ["producer", "subscriber"],
                    "envelopeoptions": {"mode": "binary"}})
    if server.http_port:
        scheme = "https" if tls else "http"
        out.append({"id": "http", "door": "http", "protocol": "HTTP", "name": "HTTP door",
                    "uri": "{}://{}/events".format(scheme, host),
                    "description": "CloudEvents over HTTP: POST /events[/<subject>] (binary, "
                                   "structured, batch); GET /events/<pattern> as Server-Sent "
                                   "Events; GET /streams/<name>/events",
                    "usage": ["producer", "subscriber", "consumer"],
                    "envelopeoptions": {"mode": "binary", "format": "application/json"},
                    "protocoloptions": {"method": "POST"}})
        out.append({"id": "websocket", "door": "http", "protocol": "WS",
                    "name": "WebSocket door",
                    "uri": "{}://{}/ws".format("wss" if tls else "ws", host),
                    "description": "CloudEvents over WebSocket (GET /ws, subprotocol "
                                   "cloudevents.json)",
                    "usage": ["producer", "subscriber"],
                    "envelopeoptions": {"mode": "structured", "format": "application/json"}})
    return out


def access_of(principal):
    perms = principal.permissions

    def bind_denied(pattern):
        if perms.unrestricted:
            return None
        why = perms.publish_pattern_denied(pattern)
        return why

    return Access(may_read_stream=perms.may_read_stream,
                  may_write=perms.unrestricted or perms.streams == "manage",
                  bind_denied=bind_denied, name=principal.name)


def _problem(proto, req, exc, instance):
    proto.respond(req, exc.status, _dumps(exc.problem(instance)), _PROBLEM, exc.headers)


def _segments(raw):
    """The path below the base, each segment percent-decoded (a ``/``
    encoded in a segment stays in it and makes it an invalid id)."""
    out = []
    for seg in raw.split("/"):
        try:
            seg = unquote(seg, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise HttpError(400, "the path is not percent-encoded UTF-8") from None
        if "/" in seg:
            raise XRegistryError("api_not_found", raw[:200])
        out.append(seg)
    return "/".join(out)


def catalog_request(proto, req, principal):
    """Every ``/registry...`` request."""
    catalog = proto.conn.account.catalog
    raw = req.path[len(BASE):] if req.path.startswith(BASE) else None
    instance = req.path[:200]
    if catalog is None or raw is None or (raw and not raw.startswith("/")):
        _problem(proto, req, XRegistryError("api_not_found", instance), instance)
        return
    method = req.method
    if method == "OPTIONS":
        proto.respond(req, 204, b"", None, (("allow", "GET, HEAD, PUT, POST, DELETE, OPTIONS"),))
        return
    try:
        path = _segments(raw)
        base = base_url(proto, req)
        status, body, ctype, headers = catalog.request(
            method, path, req.params() if req.query else {}, base, access_of(principal),
            req.body, req.headers.get("content-type"))
    except XRegistryError as exc:
        _problem(proto, req, exc, instance)
        return
    except HttpError as exc:
        if exc.status >= 500:
            raise
        _problem(proto, req, XRegistryError("parsing_data", instance, exc.message), instance)
        return
    if ctype == "empty":
        proto.respond(req, status, b"", None, headers)
    elif ctype == "doc":                # a resource's document, as it was registered
        proto.respond(req, status, _dumps(body), _JSON, headers)
    else:
        proto.respond(req, status, _dumps(body), _JSON + "; charset=utf-8", headers)


def well_known_request(proto, req, principal):
    """``GET /.well-known/xregistry``: the registries of this host (core
    spec, "Host-based Discovery")."""
    if req.path.rstrip("/") != WELL_KNOWN or proto.conn.account.catalog is None:
        instance = req.path[:200]
        _problem(proto, req, XRegistryError("api_not_found", instance), instance)
        return
    proto.json(req, {"registries": [base_url(proto, req)]})
