"""The xRegistry model the catalog serves (``GET /registry/model``), its
capabilities, its error types, and ``check_document``: a document checked
against a model (every group, resource and attribute in it defined by the
model; every required attribute present).

xRegistry: https://github.com/xregistry/spec (core/spec.md, core/http.md,
endpoint/, message/, schema/); the model here is the spec's three domain
models with the attributes this server fills in, plus extensions named
``ff...`` (the live figures).
"""

import copy
import re

__all__ = ("SPECVERSION", "XRegistryError", "capabilities", "check_document", "model",
           "ID_RE")

SPECVERSION = "1.0-rc4"         # the xRegistry specification implemented (xregistry/spec)
ENVELOPE = "CloudEvents/1.0"

_CORE = "https://github.com/xregistry/spec/blob/main/core/spec.md#"
_HTTP = "https://github.com/xregistry/spec/blob/main/core/http.md#"
_OWN = "urn:fastflow:catalog:error:"

ID_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_.\-~:@]{0,127}$")     # an entity id (core spec)

# error type -> (status, title with <subject>, spec section)
ERRORS = {
    "api_not_found": (404, "The specified API is not supported: {subject}.", _HTTP),
    "not_found": (404, "The targeted entity ({subject}) cannot be found.", _CORE),
    "action_not_supported": (405, "The specified action ({action}) is not supported for: "
                                  "{subject}.", _CORE),
    "missing_body": (400, "For \"{subject}\", the request is missing an HTTP body - try "
                          "'{{}}'.", _HTTP),
    "bad_request": (400, "The request cannot be processed: {subject}.", _CORE),
    "readonly": (400, "Updating a read-only entity ({subject}) is not allowed.", _CORE),
    "invalid_attribute": (400, "The attribute \"{name}\" for \"{subject}\" is not valid: "
                               "{error_detail}.", _CORE),
    "malformed_id": (400, "The specified ID value ({subject}) is malformed.", _CORE),
    "parsing_data": (400, "There was an error parsing the data: {subject}.", _CORE),
    "format_violation": (400, "The request would cause Version \"{subject}\" to be "
                              "non-compliant with its \"format\" ({format}).", _CORE),
    "inline_noninlineable": (400, "Attempting to inline a non-inlineable attribute "
                                  "({subject}).", _CORE),
    "too_large": (406, "For \"{subject}\", the size of the response is too large to return "
                       "in a single response.", _CORE),
    "capability_error": (400, "There was an error in the capabilities provided: {subject}.",
                         _CORE),
    "server_error": (500, "An unexpected error occurred, please try again later.", _CORE),
    # fastflow's own (the spec leaves authorization and limits to implementations)
    "forbidden": (403, "Permission denied: {subject}.", _OWN),
    "limit": (400, "A limit of this server would be exceeded by: {subject}.", _OWN),
    "storage": (503, "The change could not be saved: {subject}.", _OWN),
}


class XRegistryError(Exception):
    """An error in the form of core/http.md "Error Processing" (RFC 9457
    problem details): ``type``, ``title``, ``subject``, ``detail``,
    ``args``, ``instance``."""

    def __init__(self, kind, subject, detail=None, headers=(), **args):
        status, title, base = ERRORS[kind]
        self.kind = kind
        self.status = status
        self.subject = subject
        self.detail = detail
        self.args_ = {k: str(v) for k, v in args.items()}
        self.headers = headers
        self.title = title.format(subject=subject, **self.args_)
        self.type = base + kind
        super().__init__(self.title if detail is None else "{} {}".format(self.title, detail))

    def problem(self, instance=None):
        d = {"type": self.type, "title": self.title, "status": self.status,
             "subject": self.subject}
        if self.detail is not None:
            d["detail"] = self.detail
        if self.args_:
            d["args"] = self.args_
        if instance is not None:
            d["instance"] = instance
        return d


# -- the model ------------------------------------------------------------------------------


def _attr(name, type_, required=False, readonly=False, description=None, **kw):
    a = {"name": name, "type": type_}
    if description:
        a["description"] = description
    if readonly:
        a["readonly"] = True
    if required:
        a["required"] = True
    a.update(kw)
    return a


def _attrs(*items):
    return {a["name"]: a for a in items}


def _common(id_name, id_readonly=False):
    """The attributes every group, resource and version has (core spec);
    the registry's too (its id read-only)."""
    return [
        _attr(id_name, "string", True, id_readonly, immutable=True),
        _attr("self", "url", True, True, immutable=True),
        _attr("xid", "xid", True, True, immutable=True),
        _attr("epoch", "uinteger", True, True),
        _attr("name", "string"),
        _attr("description", "string"),
        _attr("documentation", "url"),
        _attr("icon", "url"),
        _attr("labels", "map", item={"type": "string"}),
        _attr("createdat", "timestamp", True),
        _attr("modifiedat", "timestamp", True),
    ]


def _version_common(singular):
    return _common(singular + "id") + [
        _attr("versionid", "string", True, immutable=True),
        _attr("isdefault", "boolean", True, True),
        _attr("ancestorid", "string", True),
        _attr("contenttype", "string"),
    ]


def _meta(singular):
    return _attrs(
        _attr(singular + "id", "string", True, immutable=True),
        _attr("self", "url", True, True, immutable=True),
        _attr("xid", "xid", True, True, immutable=True),
        _attr("epoch", "uinteger", True, True),
        _attr("labels", "map", item={"type": "string"}),
        _attr("createdat", "timestamp", True),
        _attr("modifiedat", "timestamp", True),
        _attr("readonly", "boolean", True, True),
        _attr("compatibility", "string", enum=["none"], strict=False),
        _attr("defaultversionid", "string", True),
        _attr("defaultversionurl", "url", True, True),
        _attr("defaultversionsticky", "boolean"),
    )


_STRINGS = {"type": "string"}
_FIGURES = [
    _attr("ffcount", "uinteger", readonly=True,
          description="fastflow: events of this type read from the stream so far"),
    _attr("fffirstseen", "timestamp", readonly=True,
          description="fastflow: the time of the first of them (as stored)"),
    _attr("fflastseen", "timestamp", readonly=True,
          description="fastflow: the time of the last of them (as stored)"),
    _attr("ffrate", "decimal", readonly=True,
          description="fastflow: events per second over the last 10 s, as read"),
    _attr("ffsources", "string", readonly=True, enum=["one", "many"],
          description="fastflow: one source seen, or more than one"),
    _attr("ffsource", "string", readonly=True,
          description="fastflow: the last source seen"),
]


def _build_model():
    envelope = _attr("envelope", "string", description="CloudEvents/1.0")
    envelopeoptions = _attr("envelopeoptions", "object", attributes={"*": {
        "name": "*", "type": "any"}})
    protocol = _attr("protocol", "string")
    protocoloptions = _attr("protocoloptions", "object", attributes={"*": {
        "name": "*", "type": "any"}})
    endpoint_attrs = _attrs(*_common("endpointid"), *[
        _attr("usage", "array", True, item={"type": "string"},
              description="what a client does here: producer, subscriber, consumer"),
        _attr("channel", "string"),
        envelope, envelopeoptions, protocol, protocoloptions,
        _attr("messagegroups", "array", item={"type": "xid", "target": "/messagegroups"},
              description="the message groups (streams) reachable here"),
        _attr("ffdoor", "string", readonly=True,
              description="fastflow: the server door this endpoint is"),
    ])
    group_attrs = _attrs(*_common("messagegroupid"), *[
        envelope, envelopeoptions, protocol, protocoloptions,
        _attr("ffstream", "string", readonly=True, description="fastflow: the stream"),
        _attr("ffsubjects", "array", readonly=True, item=_STRINGS,
              description="fastflow: the stream's subject patterns"),
        _attr("ffevents", "uinteger", readonly=True,
              description="fastflow: events in the stream now"),
        _attr("fflastseq", "uinteger", readonly=True,
              description="fastflow: the stream's last seq"),
        _attr("ffcount", "uinteger", readonly=True,
              description="fastflow: events read by the type tracker"),
        _attr("ffrate", "decimal", readonly=True,
              description="fastflow: events per second over the last 10 s"),
        _attr("ffother", "uinteger", readonly=True,
              description="fastflow: events of types past the tracker's limit (not listed)"),
        _attr("ffunread", "uinteger", readonly=True,
              description="fastflow: events evicted before the tracker read them"),
    ])
    envelopemetadata = _attr("envelopemetadata", "object", attributes={"*": {
        "name": "*", "type": "any"}})
    message_attrs = _attrs(*_version_common("message"), *[
        _attr("basemessageuri", "uri"),
        envelope, envelopeoptions, envelopemetadata, protocol, protocoloptions,
        _attr("dataschemaformat", "string"),
        _attr("dataschema", "any"),
        _attr("dataschemauri", "uri"),
        _attr("dataschemaxid", "xid", target="/schemagroups/schemas[/versions]"),
        _attr("datacontenttype", "string"),
        *_FIGURES,
    ])
    schemagroup_attrs = _attrs(*_common("schemagroupid"), _attr("format", "string"))
    schema_attrs = _attrs(*_version_common("schema"), *[
        _attr("format", "string", True, matchversions=True),
        _attr("schema", "any"),
        _attr("schemabase64", "string"),
        _attr("schemaurl", "url"),
        _attr("formatvalidated", "boolean", readonly=True),
    ])
    schema_resource_attrs = _attrs(
        _attr("ffsubjects", "array", item=_STRINGS,
              description="fastflow: publishes on these subjects (patterns) are validated "
                          "against the default version"),
        _attr("fftypes", "array", item=_STRINGS,
              description="fastflow: events of these CloudEvents types are validated against "
                          "the default version"),
    )
    registry_attrs = _attrs(
        _attr("specversion", "string", True, True, default=SPECVERSION),
        *_common("registryid", id_readonly=True),
        _attr("capabilities", "object", attributes={"*": {"name": "*", "type": "any"}}),
        _attr("model", "object", attributes={"*": {"name": "*", "type": "any"}}),
        _attr("modelsource", "object", attributes={"*": {"name": "*", "type": "any"}}),
    )
    return {
        "description": "The discovery catalog of a fastflow server: its doors, its streams "
                       "and the event types seen in them, and registered schemas",
        "documentation": "https://github.com/fastflow/fastflow/blob/main/docs/catalog.md",
        "attributes": registry_attrs,
        "groups": {
            "endpoints": {
                "plural": "endpoints", "singular": "endpoint", "modelversion": SPECVERSION,
                "modelcompatiblewith":
                    "https://xregistry.io/xreg/domains/endpoint/specs/model.json",
                "attributes": endpoint_attrs,
                "ximportresources": ["/messagegroups/messages"],
            },
            "messagegroups": {
                "plural": "messagegroups", "singular": "messagegroup",
                "modelversion": SPECVERSION,
                "modelcompatiblewith":
                    "https://xregistry.io/xreg/domains/message/specs/model.json",
                "attributes": group_attrs,
                "resources": {"messages": {
                    "plural": "messages", "singular": "message", "maxversions": 1,
                    "hasdocument": False, "setversionid": False,
                    "modelversion": SPECVERSION,
                    "modelcompatiblewith":
                        "https://xregistry.io/xreg/domains/message/specs/model.json",
                    "attributes": message_attrs,
                    "metaattributes": _meta("message"),
                }},
            },
            "schemagroups": {
                "plural": "schemagroups", "singular": "schemagroup",
                "modelversion": SPECVERSION,
                "modelcompatiblewith":
                    "https://xregistry.io/xreg/domains/schema/specs/model.json",
                "attributes": schemagroup_attrs,
                "resources": {"schemas": {
                    "plural": "schemas", "singular": "schema", "hasdocument": True,
                    "setversionid": True, "validateformat": True,
                    "modelversion": SPECVERSION,
                    "modelcompatiblewith":
                        "https://xregistry.io/xreg/domains/schema/specs/model.json",
                    "attributes": schema_attrs,
                    "resourceattributes": schema_resource_attrs,
                    "metaattributes": _meta("schema"),
                }},
            },
        },
    }


_MODEL = _build_model()


def model():
    """The model (a copy: the caller may change it)."""
    return copy.deepcopy(_MODEL)


def capabilities(writable, max_schema_versions):
    return {
        "available": {
            "capabilities": {"mutable": False},
            "entities": {"mutable": bool(writable)},
            "export": {"mutable": False},
            "model": {"mutable": False},
            "modelsource": {"mutable": False},
        },
        "flags": ["doc", "inline"],
        "formats": ["JsonSchema/draft-07", "JsonSchema/draft-06", "JsonSchema/draft-04"],
        "ignores": [],
        "mutable": ["entities"] if writable else [],
        "pagination": False,
        "shortself": False,
        "specversions": [SPECVERSION],
        "versionmodes": ["manual"],
        "ffmaxversions": max_schema_versions,
    }


# -- a document against a model -------------------------------------------------------------

_SCALARS = {
    "string": str, "url": str, "uri": str, "urireference": str, "uritemplate": str,
    "xid": str, "xidtype": str, "timestamp": str, "boolean": bool,
}


def _type_ok(attr, value):
    t = attr.get("type")
    if t == "any":
        return True
    if t in _SCALARS:
        return isinstance(value, _SCALARS[t])
    if t in ("integer", "uinteger"):
        return isinstance(value, int) and not isinstance(value, bool) and (
            t == "integer" or value >= 0)
    if t == "decimal":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "map":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "object":
        return isinstance(value, dict)
    return False


def _check_entity(doc, attrs, where, implied, problems, required=True):
    for name, value in doc.items():
        if name in implied:
            continue
        a = attrs.get(name) or attrs.get("*")
        if a is None:
            problems.append("{}: attribute {!r} is not in the model".format(where, name))
        elif not _type_ok(a, value):
            problems.append("{}: attribute {!r} is not of type {}".format(
                where, name, a.get("type")))
    if required:
        for name, a in attrs.items():
            if a.get("required") and name not in doc:
                problems.append("{}: required attribute {!r} is missing".format(where, name))


def _collection_names(plural):
    return {plural + "url", plural + "count", plural}


def check_document(doc, model_):
    """The problems of the xRegistry document ``doc`` (a registry, as
    ``GET /?inline=*`` or ``/export`` serializes it) against the model
    ``model_``: a list of sentences (empty: it conforms)."""
    problems = []
    groups = model_.get("groups", {})
    implied = set()
    for plural in groups:
        implied |= _collection_names(plural)
    _check_entity(doc, model_.get("attributes", {}), "/", implied, problems)
    for plural, gmodel in groups.items():
        coll = doc.get(plural)
        if coll is None:
            continue
        if not isinstance(coll, dict):
            problems.append("/{}: not a map".format(plural))
            continue
        rmodels = gmodel.get("resources", {})
        gimplied = set()
        for rplural in rmodels:
            gimplied |= _collection_names(rplural)
        for gid, group in coll.items():
            where = "/{}/{}".format(plural, gid)
            _check_entity(group, gmodel.get("attributes", {}), where, gimplied, problems)
            if group.get(gmodel["singular"] + "id") != gid:
                problems.append("{}: {}id is not the key {!r}".format(
                    where, gmodel["singular"], gid))
            for rplural, rmodel in rmodels.items():
                rcoll = group.get(rplural)
                if rcoll is None:
                    continue
                for rid, res in rcoll.items():
                    rwhere = "{}/{}/{}".format(where, rplural, rid)
                    _check_resource(res, rmodel, rwhere, rid, problems)
    return problems


def _check_resource(res, rmodel, where, rid, problems):
    singular = rmodel["singular"]
    attrs = dict(rmodel.get("attributes", {}))
    attrs.update(rmodel.get("resourceattributes", {}))
    implied = {"metaurl", "meta", "versionsurl", "versionscount", "versions", singular,
               singular + "url", singular + "base64"}
    doc_view = "versionid" not in res       # (the document view drops the default version's)
    _check_entity(res, attrs, where, implied, problems, required=not doc_view)
    if res.get(singular + "id") != rid:
        problems.append("{}: {}id is not the key {!r}".format(where, singular, rid))
    if "metaurl" not in res:
        problems.append("{}: required attribute 'metaurl' is missing".format(where))
    if "versionsurl" not in res and "versions" not in res:
        problems.append("{}: required attribute 'versionsurl' is missing".format(where))
    meta = res.get("meta")
    if meta is not None:
        _check_entity(meta, rmodel.get("metaattributes", {}), where + "/meta", set(), problems)
    for vid, ver in (res.get("versions") or {}).items():
        vwhere = "{}/versions/{}".format(where, vid)
        _check_entity(ver, rmodel.get("attributes", {}), vwhere,
                      {singular, singular + "url", singular + "base64"}, problems)
        if ver.get("versionid") != vid:
            problems.append("{}: versionid is not the key {!r}".format(vwhere, vid))
