"""The Subscriptions API on the HTTP door (CloudEvents Subscriptions API
0.1, its OpenAPI document 0.2): ``/subscriptions`` and
``/subscriptions/{id}``, answered from the server's
``fastflow.subscriptions.SubscriptionManager`` (docs/subscriptions.md).

A subscription belongs to the user who made it; others do not see it
(404, as for an unknown id) unless their permissions are unrestricted.
Creating one needs the right to read its stream (the whole stream, or
the routing subjects of ``config.subject``) and, for a ``fastflow:``
NATS sink, to publish on its subject (MQTT3 / MQTT5: on the subject of
its topic, as an MQTT client publishing there would need).
"""

import json

from fastflow.server.http import _JSON, HttpError, _dumps, error_body
from fastflow.subscriptions.filters import FilterError
from fastflow.subscriptions.manager import SubscriptionLimit, SubscriptionStoreError

__all__ = ("OPENAPI_PATH", "openapi_document", "subscriptions_request")

OPENAPI_PATH = "/openapi.json"
MAX_BODY = 256 * 1024                   # bytes of one Subscription (types, filters, headers)
_ALLOW_COLLECTION = "GET, HEAD, POST, OPTIONS"
_ALLOW_ITEM = "GET, HEAD, PUT, DELETE, OPTIONS"


def _refuse_field(exc):
    return _FieldError(400, str(exc), exc.field)


class _FieldError(HttpError):
    """A 400 naming the field at fault (``error.field`` in the body)."""

    def __init__(self, status, message, field):
        super().__init__(status, message)
        self.field = field


def _body(req):
    ct = req.headers.get("content-type", "application/json")
    mt = ct.partition(";")[0].strip().lower()
    if mt != "application/json" and not mt.endswith("+json"):
        raise HttpError(415, "a Subscription is sent as application/json, got {!r}".format(
            ct[:100]))
    if not req.body:
        raise _FieldError(400, "(body): the request has no body: send a Subscription object",
                          "(body)")
    if len(req.body) > MAX_BODY:
        raise HttpError(413, "a Subscription of {} bytes: at most {} here".format(
            len(req.body), MAX_BODY))
    try:
        return json.loads(req.body)
    except RecursionError:
        raise _FieldError(400, "(body): the JSON nests too deeply", "(body)") from None
    except ValueError as exc:
        raise _FieldError(400, "(body): not valid JSON: {}".format(exc), "(body)") from None


def _admin(principal):
    return principal.permissions.unrestricted


def _validated(proto, principal, mgr, body):
    """The spec of subscription ``body``: 400 naming the field at fault,
    403 when ``principal`` may not read or deliver what it names."""
    try:
        spec = mgr.validate(body)
    except FilterError as exc:
        raise _refuse_field(exc) from None
    _check_rights(proto, principal, spec)
    return spec


def _check_rights(proto, principal, spec):
    """403 unless ``principal`` may read what ``spec`` delivers (and
    publish where it publishes)."""
    perms = principal.permissions
    st = proto.flow.stream(spec.stream)
    patterns = [spec.routing] if spec.routing else list(st.subjects)
    why = perms.can_read_stream(patterns)
    if why is None and spec.resource["protocol"] == "NATS" and \
            spec.resource["sink"] == "fastflow:" and not perms.can_publish(
                spec.settings["subject"]):
        why = "permission denied: publish to '{}'".format(spec.settings["subject"])
    if why is None and spec.resource["protocol"] in ("MQTT3", "MQTT5") and \
            not perms.can_publish(spec.settings["subject"]):
        why = "permission denied: publish to MQTT topic '{}' (subject '{}')".format(
            spec.settings["topic"], spec.settings["subject"])
    if why is None and spec.deadletter and not perms.can_publish(spec.deadletter):
        why = "permission denied: publish to '{}' (config.deadletter)".format(spec.deadletter)
    if why is not None:
        raise HttpError(403, why)


def _location(sub):
    return "/subscriptions/" + sub.id


def subscriptions_request(proto, req, principal):
    """Every ``/subscriptions...`` request."""
    mgr = proto.conn.account.subscriptions
    if mgr is None:
        raise HttpError(404, "the Subscriptions API is off on this server")
    parts = req.path.split("/")
    if is_grant(req):
        # (no credentials: the subscription's own account, found by its id)
        for acct in proto.server.accounts:
            m = acct.subscriptions
            if m is not None and parts[2] in m.subs:
                mgr = m
                break
        return _grant(proto, req, mgr, parts[2])
    # "", "subscriptions"[, id[, "status"]]
    if len(parts) > 4 or (len(parts) == 4 and parts[3] != "status") or \
            (len(parts) >= 3 and not parts[2]):
        if len(parts) == 3 and parts[2] == "":
            parts = parts[:2]
        else:
            raise HttpError(404, "no such resource: {!r}".format(req.path[:200]))
    method = "GET" if req.method == "HEAD" else req.method
    name = principal.name
    admin = _admin(principal)
    try:
        if len(parts) == 2:
            if method == "GET":
                proto.json(req, [s.spec.public(s.id) if s.spec is not None else
                                 {"id": s.id, "status": s.status}
                                 for s in mgr.visible(name, admin)])
            elif method == "POST":
                body = _body(req)
                spec = _validated(proto, principal, mgr, body)
                try:
                    sub = mgr.create(body, name, spec)
                except SubscriptionLimit as exc:
                    raise HttpError(403, str(exc)) from None
                except SubscriptionStoreError as exc:
                    raise HttpError(503, str(exc)) from None
                proto.json(req, spec.public(sub.id), 201, (("location", _location(sub)),))
            elif method == "OPTIONS":
                proto.respond(req, 200, b"", None, (("allow", _ALLOW_COLLECTION),)
                              + _preflight(proto, req, _ALLOW_COLLECTION))
            else:
                raise HttpError(405, "{} is not allowed on /subscriptions".format(req.method),
                                (("allow", _ALLOW_COLLECTION),))
            return
        sid = parts[2]
        sub = mgr.get(sid, name, admin)
        if method == "OPTIONS" and len(parts) == 3 and req.headers.get(
                "access-control-request-method") is not None:
            # a browser's preflight carries no credentials: answered for any id
            proto.respond(req, 204, b"", None, (("allow", _ALLOW_ITEM),)
                          + _preflight(proto, req, _ALLOW_ITEM))
            return
        if sub is None:
            raise HttpError(404, "no subscription {!r}".format(sid[:200]))
        if method == "OPTIONS" and len(parts) == 3:
            proto.respond(req, 200, b"", None, (("allow", _ALLOW_ITEM),))
            return
        if len(parts) == 4:
            if method != "GET":
                raise HttpError(405, "{} is not allowed on {}".format(
                    req.method, req.path[:200]), (("allow", "GET, HEAD"),))
            proto.json(req, sub.info())
        elif method == "GET":
            proto.json(req, sub.spec.public(sub.id) if sub.spec is not None else
                       {"id": sub.id, "status": sub.status, "reason": sub.reason})
        elif method == "PUT":
            body = _body(req)
            if isinstance(body, dict) and "id" in body and body["id"] != sub.id:
                raise _FieldError(400, "id: the body names subscription {!r}, the path {!r}"
                                  .format(str(body["id"])[:100], sub.id), "id")
            if isinstance(body, dict):
                body = {k: v for k, v in body.items() if k != "id"}
            spec = _validated(proto, principal, mgr, body)
            try:
                mgr.update(sub, body, spec)
            except SubscriptionStoreError as exc:
                raise HttpError(503, str(exc)) from None
            proto.json(req, spec.public(sub.id))
        elif method == "DELETE":
            doc = sub.spec.public(sub.id) if sub.spec is not None else {"id": sub.id}
            mgr.delete(sub)
            proto.json(req, doc)
        else:
            raise HttpError(405, "{} is not allowed on /subscriptions/{{id}}".format(
                req.method), (("allow", _ALLOW_ITEM),))
    except _FieldError as exc:
        proto.respond(req, exc.status, error_body(exc.status, exc.message, field=exc.field),
                      _JSON, exc.headers)


def is_grant(req):
    """``GET /subscriptions/{id}/grant?token=...``: a webhook sink grants
    delivery (the handshake's callback variant).  It carries no
    credentials of ours: the token in the URL, a secret of that
    subscription, is its proof."""
    p = req.path
    return req.method in ("GET", "POST") and p.startswith("/subscriptions/") and \
        p.endswith("/grant") and p.count("/") == 3


def _grant(proto, req, mgr, sid):
    token = req.params().get("token")
    rate = req.headers.get("webhook-allowed-rate")
    n = None
    if rate is not None and rate.strip() != "*":
        r = rate.strip()
        n = int(r) if r.isascii() and r.isdigit() and len(r) <= 9 else None
    if not mgr.grant(sid, token, n):
        raise HttpError(404, "no such grant (an unknown subscription or a wrong token)")
    proto.json(req, {"granted": sid})


def _preflight(proto, req, allow):
    if req.headers.get("access-control-request-method") is None or not proto.cors(req):
        return ()
    want = req.headers.get("access-control-request-headers")
    return (("access-control-allow-methods", allow),
            ("access-control-allow-headers", want if want else "authorization, content-type"),
            ("access-control-max-age", "600"))


def openapi_request(proto, req, principal):
    proto.respond(req, 200, _OPENAPI_BYTES, _JSON)


# -- the OpenAPI document of what is implemented ----------------------------------------------

_STR = {"type": "string"}
_ERROR = {"description": "The request was refused; the body says why",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _filter_schema():
    attrs = {"type": "object", "minProperties": 1,
             "additionalProperties": {"type": "string", "minLength": 1}}
    ref = {"$ref": "#/components/schemas/Filter"}
    return {
        "type": "object", "minProperties": 1, "maxProperties": 1,
        "description": "One filter expression: exact, prefix, suffix, all, any, not, sql "
                       "(cesql is the same as sql)",
        "properties": {"exact": attrs, "prefix": attrs, "suffix": attrs,
                       "all": {"type": "array", "minItems": 1, "items": ref},
                       "any": {"type": "array", "minItems": 1, "items": ref},
                       "not": ref, "sql": {"type": "string", "minLength": 1},
                       "cesql": {"type": "string", "minLength": 1}},
        "additionalProperties": False}


def openapi_document():
    req_props = {
        "protocol": {"type": "string", "enum": ["HTTP", "NATS", "MQTT3", "MQTT5"]},
        "protocolsettings": {"type": "object"},
        "sink": {"type": "string", "format": "uri"},
        "sinkcredential": {
            "type": "object", "writeOnly": True, "required": ["credentialtype"],
            "properties": {
                "credentialtype": {"type": "string", "enum": ["ACCESSTOKEN", "REFRESHTOKEN",
                                                              "PLAIN"]},
                "accesstoken": {"type": "string", "minLength": 1},
                "accesstokenexpiresutc": {"type": "string", "format": "date-time"},
                "accesstokentype": _STR, "refreshtoken": _STR, "refreshtokenendpoint": _STR,
                "identifier": {"type": "string", "minLength": 1},
                "secret": {"type": "string", "minLength": 1}}},
        "source": {"type": "string", "minLength": 1},
        "types": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "filters": {"type": "array", "items": {"$ref": "#/components/schemas/Filter"}},
        "config": {"type": "object", "additionalProperties": {"type": "string"},
                   "properties": {"stream": _STR, "start": _STR, "subject": _STR,
                                  "deadletter": _STR}},
    }
    sub_props = dict(req_props)
    sub_props["id"] = {"type": "string"}
    sub_props.pop("sinkcredential")
    item = {"$ref": "#/components/schemas/Subscription"}
    idp = [{"in": "path", "name": "id", "required": True, "schema": _STR}]
    body = {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/SubscriptionRequest"}}}}
    ok_item = {"description": "OK", "content": {"application/json": {"schema": item}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "CloudEvents Subscriptions API (fastflow)", "version": "0.2-WIP",
                 "description": "The subscription manager of a fastflow server: see "
                                "docs/subscriptions.md"},
        "paths": {
            "/subscriptions": {
                "get": {"operationId": "getSubscriptions", "responses": {
                    "200": {"description": "The subscriptions the caller may see",
                            "content": {"application/json": {"schema": {
                                "type": "array", "items": item}}}},
                    "401": _ERROR}},
                "post": {"operationId": "createSubscription", "requestBody": body,
                         "responses": {
                             "201": {"description": "Created",
                                     "headers": {"Location": {"schema": _STR}},
                                     "content": {"application/json": {"schema": item}}},
                             "400": _ERROR, "401": _ERROR, "403": _ERROR, "413": _ERROR,
                             "415": _ERROR, "503": _ERROR}},
                "options": {"operationId": "getFeatures", "responses": {
                    "200": {"description": "OK", "headers": {"Allow": {"schema": _STR}}}}},
            },
            "/subscriptions/{id}": {
                "get": {"operationId": "getSubscription", "parameters": idp,
                        "responses": {"200": ok_item, "401": _ERROR, "404": _ERROR}},
                "put": {"operationId": "updateSubscription", "parameters": idp,
                        "requestBody": body,
                        "responses": {"200": ok_item, "400": _ERROR, "401": _ERROR,
                                      "403": _ERROR, "404": _ERROR, "413": _ERROR,
                                      "415": _ERROR, "503": _ERROR}},
                "delete": {"operationId": "deleteSubscription", "parameters": idp,
                           "responses": {"200": ok_item, "401": _ERROR, "404": _ERROR}},
                "options": {"operationId": "getSubscriptionFeatures", "parameters": idp,
                            "responses": {"200": {"description": "OK", "headers": {
                                "Allow": {"schema": _STR}}}, "401": _ERROR, "404": _ERROR}},
            },
            "/subscriptions/{id}/status": {
                "get": {"operationId": "getSubscriptionStatus", "parameters": idp,
                        "description": "fastflow: the delivery state and counters",
                        "responses": {"200": {"description": "OK", "content": {
                            "application/json": {"schema": {
                                "type": "object", "required": ["id", "status"],
                                "properties": {"id": _STR, "status": _STR}}}}},
                            "401": _ERROR, "404": _ERROR}}},
        },
        "components": {"schemas": {
            "SubscriptionRequest": {"type": "object", "properties": req_props,
                                    "required": ["sink", "protocol"],
                                    "additionalProperties": False},
            "Subscription": {"type": "object", "properties": sub_props,
                             "required": ["id", "sink", "protocol"]},
            "Filter": _filter_schema(),
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "integer"}, "message": _STR, "field": _STR}}}},
        }},
    }


_OPENAPI_BYTES = _dumps(openapi_document())
