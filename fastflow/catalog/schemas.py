"""The catalog's ``schemagroups`` (docs/catalog.md#schemas): JSON Schemas
that producers register, with versions, and their bindings to subjects
and CloudEvents types.  A publish on the HTTP or NATS door whose data
does not validate against the schema bound to its subject (or type) is
refused with the failing JSON path named (HTTP, WebSocket, NATS and
native doors alike).

``SchemaStore`` keeps them in memory, and in ``<data_dir>/catalog.json``
(written atomically after every change) when the server has a data
directory.  Validators are compiled once per version with
``fastjsonschema`` (code generation: about 10-100x jsonschema's speed,
benchmarks/bench_schema.py); remote ``$ref`` are never fetched.
"""

import json
import logging
import os
import time

from fastflow._impl import Matcher, validate_pattern
from fastflow.catalog.model import ID_RE, XRegistryError
from fastflow.catalog.registry import Resource, rfc3339
from fastflow.errors import FastflowError, SubjectError

__all__ = ("FORMATS", "SchemaRefusal", "SchemaStore", "compile_schema", "write_request")

log = logging.getLogger("fastflow.server")

STATE_FILE = "catalog.json"
DEFAULT_FORMAT = "JsonSchema/draft-07"
FORMATS = {"jsonschema": DEFAULT_FORMAT, "jsonschema/draft-07": DEFAULT_FORMAT,
           "jsonschema/draft-06": "JsonSchema/draft-06",
           "jsonschema/draft-04": "JsonSchema/draft-04"}
MAX_SCHEMA_BYTES = 256 << 10    # a schema document's size
MAX_VERSIONS = 100              # versions per schema
MAX_SCHEMAS = 1000              # schemas in all
MAX_GROUPS = 100                # schema groups
MAX_BINDINGS = 100              # subjects + types per schema
_GROUP_KEYS = ("name", "description", "documentation", "labels", "format")
_VERSION_KEYS = ("name", "description", "documentation", "labels")
_JSON_TYPES = ("application/json", "text/json")


class _NoRemote(dict):
    """fastjsonschema's ``handlers``: every URI scheme is "handled" by a
    refusal, so no remote ``$ref`` is ever fetched (its default opens the
    URL, file:// included)."""

    def __contains__(self, scheme):
        return True

    def __getitem__(self, scheme):
        def refuse(uri):
            raise ValueError("remote $ref {!r} is not fetched: inline it, or use a "
                             "local #/definitions/... reference".format(uri[:200]))
        return refuse


def compile_schema(schema):
    """A validator of ``schema`` (fastjsonschema); ValueError says why not."""
    import fastjsonschema

    if not isinstance(schema, (dict, bool)):
        raise ValueError("a JSON Schema is an object (or a boolean)")
    try:
        return fastjsonschema.compile(schema, handlers=_NoRemote(), use_default=False)
    except (fastjsonschema.JsonSchemaException, ValueError, TypeError, KeyError,
            RecursionError) as exc:
        raise ValueError(str(exc)[:500]) from None
    except Exception as exc:            # (a generated-code SyntaxError on an odd pattern)
        raise ValueError("the schema cannot be compiled: {}".format(str(exc)[:300])) from None


def json_path(name):
    """fastjsonschema's ``data.a[1]`` as a JSONPath ``$.a[1]``."""
    if name.startswith("data"):
        return "$" + name[4:]
    return "$." + name


class SchemaRefusal(Exception):
    """An event's data does not validate: ``index`` (in the request),
    ``schema`` (the xid of the version), ``path`` (JSONPath), ``reason``."""

    def __init__(self, index, schema, path, reason):
        self.index = index
        self.schema = schema
        self.path = path
        self.reason = reason
        super().__init__("event data does not validate against {}: {} (at {})".format(
            schema, reason, path))


class _Version:
    __slots__ = ("schema", "format", "attrs", "created", "modified", "epoch", "validator",
                 "ancestor")

    def __init__(self, schema, fmt, attrs, created, modified=None, epoch=1, ancestor=None):
        self.ancestor = ancestor        # the versionid this one follows (None: itself)
        self.schema = schema
        self.format = fmt
        self.attrs = attrs
        self.created = created
        self.modified = modified or created
        self.epoch = epoch
        self.validator = compile_schema(schema)


class _Schema:
    __slots__ = ("versions", "default", "subjects", "types", "created", "modified", "epoch",
                 "next_id")

    def __init__(self, created):
        self.versions = {}
        self.default = None
        self.subjects = []
        self.types = []
        self.created = created
        self.modified = created
        self.epoch = 1
        self.next_id = 1


class _Group:
    __slots__ = ("attrs", "schemas", "created", "modified", "epoch")

    def __init__(self, attrs, created):
        self.attrs = attrs
        self.schemas = {}
        self.created = created
        self.modified = created
        self.epoch = 1


class SchemaStore:
    """The schema groups of one server."""

    def __init__(self, data_dir=None, *, max_schema_bytes=MAX_SCHEMA_BYTES,
                 max_versions=MAX_VERSIONS, max_schemas=MAX_SCHEMAS, max_groups=MAX_GROUPS):
        self.data_dir = data_dir
        self.max_schema_bytes = max_schema_bytes
        self.max_versions = max_versions
        self.max_schemas = max_schemas
        self.max_groups = max_groups
        self.groups = {}
        self.modified = time.time()
        self._subjects = None           # Matcher: subject pattern -> (gid, sid)
        self._types = {}                # type -> (gid, sid)
        self.active = False             # any binding: the HTTP and NATS doors validate
        self.on_change = None           # called after every change (the server: the doors)
        self._load()

    # -- reading ---------------------------------------------------------------------------

    def group_ids(self):
        return sorted(self.groups)

    def group(self, gid):
        g = self.groups.get(gid)
        if g is None:
            return None
        d = {"schemagroupid": gid, "epoch": g.epoch, "createdat": rfc3339(g.created),
             "modifiedat": rfc3339(g.modified)}
        d.update(g.attrs)
        return d

    def resources(self, gid):
        g = self.groups.get(gid)
        if g is None:
            return {}
        out = {}
        for sid, s in g.schemas.items():
            versions = {}
            for vid, v in s.versions.items():
                attrs = {"epoch": v.epoch, "createdat": rfc3339(v.created),
                         "modifiedat": rfc3339(v.modified), "format": v.format,
                         "contenttype": "application/json", "formatvalidated": True,
                         "ancestorid": v.ancestor or vid}
                attrs.update(v.attrs)
                versions[vid] = (attrs, v.schema)
            res_attrs = {}
            if s.subjects:
                res_attrs["ffsubjects"] = list(s.subjects)
            if s.types:
                res_attrs["fftypes"] = list(s.types)
            meta = {"epoch": s.epoch, "createdat": rfc3339(s.created),
                    "modifiedat": rfc3339(s.modified)}
            out[sid] = Resource(res_attrs, meta, versions, s.default, readonly=False)
        return out

    def bound_xid(self, type_):
        """The xid of the version validating events of ``type_`` (None)."""
        hit = self._types.get(type_)
        if hit is None:
            return None
        gid, sid = hit
        s = self.groups[gid].schemas[sid]
        return "/schemagroups/{}/schemas/{}/versions/{}".format(gid, sid, s.default)

    # -- validation at the door -------------------------------------------------------------

    def _bound(self, subject, type_):
        hits = self._subjects.match(subject) if self._subjects is not None else ()
        out = list(hits)
        t = self._types.get(type_)
        if t is not None and t not in out:
            out.append(t)
        return out

    def check(self, events, subjects=None):
        """Raise ``SchemaRefusal`` for the first of ``events`` whose data
        does not validate against a schema bound to its routing subject
        (or ``subjects[i]``, where it will be published) or its type."""
        import fastjsonschema

        loads = _loads
        for i, ev in enumerate(events):
            bound = self._bound(ev.routing_subject if subjects is None else subjects[i],
                                ev.type)
            if not bound:
                continue
            data = None
            for gid, sid in bound:
                s = self.groups[gid].schemas[sid]
                v = s.versions[s.default]
                xid = "/schemagroups/{}/schemas/{}/versions/{}".format(gid, sid, s.default)
                if data is None:
                    ct = ev.datacontenttype
                    mt = ct.partition(";")[0].strip().lower() if ct else ""
                    if mt and mt not in _JSON_TYPES and not mt.endswith("+json"):
                        raise SchemaRefusal(i, xid, "$", "the data is {!r}, not JSON".format(
                            mt[:100]))
                    try:
                        data = loads(ev.data)
                    except ValueError:
                        raise SchemaRefusal(i, xid, "$", "the data is not JSON") from None
                try:
                    v.validator(data)
                except fastjsonschema.JsonSchemaValueException as exc:
                    raise SchemaRefusal(i, xid, json_path(exc.name or "data"),
                                        exc.message) from None
                except RecursionError:
                    raise SchemaRefusal(i, xid, "$", "the data nests too deeply") from None

    def _rebind(self):
        m = None
        types = {}
        for gid, g in self.groups.items():
            for sid, s in g.schemas.items():
                if not s.versions:
                    continue
                for p in s.subjects:
                    if m is None:
                        m = Matcher()
                    m.add(p, (gid, sid))
                for t in s.types:
                    types.setdefault(t, (gid, sid))
        self._subjects = m
        self._types = types
        self.active = m is not None or bool(types)

    # -- writing ----------------------------------------------------------------------------

    def _count(self):
        return sum(len(g.schemas) for g in self.groups.values())

    def put_group(self, gid, attrs):
        _check_id(gid, "/schemagroups/" + gid)
        now = time.time()
        g = self.groups.get(gid)
        created = g is None
        if created:
            if len(self.groups) >= self.max_groups:
                raise XRegistryError("limit", "/schemagroups/" + gid,
                                     "at most {} schema groups".format(self.max_groups))
            g = self.groups[gid] = _Group({}, now)
        else:
            g.epoch += 1
            g.modified = now
        g.attrs = _pick(attrs, _GROUP_KEYS, "/schemagroups/" + gid)
        self._changed()
        return created

    def delete_group(self, gid):
        if self.groups.pop(gid, None) is None:
            raise XRegistryError("not_found", "/schemagroups/" + gid)
        self._changed()

    def put_version(self, gid, sid, vid, schema, fmt, attrs=None, replace_default=False):
        """Create (or replace) version ``vid`` (None: the next number; with
        ``replace_default`` the default version when there is one) of
        schema ``sid``; returns (created, vid)."""
        xid = "/schemagroups/{}/schemas/{}".format(gid, sid)
        _check_id(gid, "/schemagroups/" + gid)
        _check_id(sid, xid)
        if vid is not None:
            _check_id(vid, xid + "/versions/" + vid)
        fmt = _format(fmt, xid)
        try:
            ver_new = _Version(schema, fmt, _pick(attrs or {}, _VERSION_KEYS, xid), time.time())
        except ValueError as exc:
            raise XRegistryError("format_violation", xid, str(exc), format=fmt) from None
        g = self.groups.get(gid)
        s = g.schemas.get(sid) if g is not None else None
        if s is None and self._count() >= self.max_schemas:
            raise XRegistryError("limit", xid, "at most {} schemas".format(self.max_schemas))
        if s is not None and replace_default and vid is None:
            vid = s.default
        if s is not None and vid not in s.versions and len(s.versions) >= self.max_versions:
            raise XRegistryError("limit", xid, "at most {} versions of a schema".format(
                self.max_versions))
        if g is None:
            if len(self.groups) >= self.max_groups:
                raise XRegistryError("limit", "/schemagroups/" + gid,
                                     "at most {} schema groups".format(self.max_groups))
            g = self.groups[gid] = _Group({}, ver_new.created)
        if s is None:
            s = g.schemas[sid] = _Schema(ver_new.created)
        else:
            s.epoch += 1
            s.modified = ver_new.created
        if vid is None:
            while str(s.next_id) in s.versions:
                s.next_id += 1
            vid = str(s.next_id)
        old = s.versions.get(vid)
        if old is not None:
            ver_new.created = old.created
            ver_new.epoch = old.epoch + 1
            ver_new.ancestor = old.ancestor
        elif s.default is not None:
            ver_new.ancestor = s.default
        s.versions[vid] = ver_new
        if old is None:
            s.default = vid             # the newest version is the default
        if vid.isdigit() and int(vid) >= s.next_id:
            s.next_id = int(vid) + 1
        self._changed()
        return old is None, vid

    def put_bindings(self, gid, sid, subjects, types):
        s = self._schema(gid, sid)
        s.subjects = subjects
        s.types = types
        s.epoch += 1
        s.modified = time.time()
        self._changed()

    def delete_schema(self, gid, sid):
        g = self.groups.get(gid)
        if g is None or g.schemas.pop(sid, None) is None:
            raise XRegistryError("not_found", "/schemagroups/{}/schemas/{}".format(gid, sid))
        self._changed()

    def delete_version(self, gid, sid, vid):
        s = self._schema(gid, sid)
        if s.versions.pop(vid, None) is None:
            raise XRegistryError("not_found", "/schemagroups/{}/schemas/{}/versions/{}".format(
                gid, sid, vid))
        if not s.versions:              # the last version: the schema goes with it
            del self.groups[gid].schemas[sid]
        elif s.default == vid:
            s.default = max(s.versions, key=lambda k: s.versions[k].created)
        self._changed()

    def _schema(self, gid, sid):
        g = self.groups.get(gid)
        s = g.schemas.get(sid) if g is not None else None
        if s is None:
            raise XRegistryError("not_found", "/schemagroups/{}/schemas/{}".format(gid, sid))
        return s

    def _changed(self):
        self.modified = time.time()
        self._rebind()
        try:
            self._save()
        except OSError as exc:
            # (a full disk): the change is not kept; the schemas are what the file holds
            self.groups = {}
            self._load()
            self._rebind()
            if self.on_change is not None:
                self.on_change()
            raise XRegistryError("storage", self._path(), detail=str(
                exc.strerror or exc)) from None
        if self.on_change is not None:
            self.on_change()

    # -- the file ---------------------------------------------------------------------------

    def _path(self):
        return os.path.join(self.data_dir, STATE_FILE) if self.data_dir else None

    def _save(self):
        path = self._path()
        if path is None:
            return
        state = {"version": 1, "groups": {gid: {
            "attrs": g.attrs, "created": g.created, "modified": g.modified, "epoch": g.epoch,
            "schemas": {sid: {
                "default": s.default, "subjects": s.subjects, "types": s.types,
                "created": s.created, "modified": s.modified, "epoch": s.epoch,
                "next_id": s.next_id,
                "versions": {vid: {"schema": v.schema, "format": v.format, "attrs": v.attrs,
                                   "created": v.created, "modified": v.modified,
                                   "epoch": v.epoch, "ancestor": v.ancestor}
                             for vid, v in s.versions.items()}}
                for sid, s in g.schemas.items()}}
            for gid, g in self.groups.items()}}
        data = json.dumps(state, separators=(",", ":")).encode()
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _load(self):
        path = self._path()
        if path is None or not os.path.exists(path):
            return
        try:
            with open(path, "rb") as f:
                state = json.loads(f.read())
            self._restore(state, path)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FastflowError("catalog: {} is damaged ({}: {}); move it away to start "
                                "without its schemas".format(path, type(exc).__name__,
                                                             exc)) from None
        self._rebind()

    def _restore(self, state, path):
        for gid, gd in state.get("groups", {}).items():
            g = self.groups[gid] = _Group(gd.get("attrs", {}), gd["created"])
            g.modified, g.epoch = gd["modified"], gd["epoch"]
            for sid, sd in gd.get("schemas", {}).items():
                s = _Schema(sd["created"])
                s.modified, s.epoch, s.next_id = sd["modified"], sd["epoch"], sd["next_id"]
                s.subjects, s.types = sd.get("subjects", []), sd.get("types", [])
                for vid, vd in sd.get("versions", {}).items():
                    try:
                        s.versions[vid] = _Version(vd["schema"], vd["format"], vd["attrs"],
                                                   vd["created"], vd["modified"], vd["epoch"],
                                                   vd.get("ancestor"))
                    except ValueError as exc:
                        log.warning("catalog: schema /schemagroups/%s/schemas/%s/versions/%s "
                                    "in %s does not compile, skipped: %s", gid, sid, vid,
                                    path, exc)
                if s.versions:
                    s.default = sd["default"] if sd["default"] in s.versions else max(
                        s.versions, key=lambda k: s.versions[k].created)
                    g.schemas[sid] = s


def _loads(data):
    try:
        import orjson
    except ImportError:                 # (orjson is a dependency)
        return json.loads(bytes(data))
    return orjson.loads(data)


def _check_id(value, subject):
    if not ID_RE.match(value):
        raise XRegistryError("malformed_id", value[:200] if value else "''",
                             "ids are 1-128 characters of a-z, A-Z, 0-9, _ . - ~ : @ "
                             "beginning with a letter, a digit or _")


def _format(fmt, xid):
    f = FORMATS.get((fmt or DEFAULT_FORMAT).strip().lower())
    if f is None:
        raise XRegistryError("invalid_attribute", xid, name="format",
                             error_detail="the formats are {}".format(
                                 ", ".join(sorted(set(FORMATS.values())))))
    return f


def _pick(attrs, keys, xid):
    out = {}
    for k in keys:
        if k in attrs:
            v = attrs[k]
            if k == "labels":
                if not isinstance(v, dict) or not all(
                        isinstance(a, str) and isinstance(b, str) for a, b in v.items()):
                    raise XRegistryError("invalid_attribute", xid, name=k,
                                         error_detail="a map of strings")
            elif not isinstance(v, str) or len(v) > 4096:
                raise XRegistryError("invalid_attribute", xid, name=k,
                                     error_detail="a string of at most 4096 characters")
            out[k] = v
    return out


# -- the write requests of the HTTP binding ---------------------------------------------------


def _json_body(body, subject):
    if not body:
        raise XRegistryError("missing_body", subject)
    try:
        return json.loads(body)
    except RecursionError:
        raise XRegistryError("parsing_data", subject, "the JSON nests too deeply") from None
    except ValueError as exc:
        raise XRegistryError("parsing_data", subject, "not JSON: {}".format(exc)) from None


def _bindings(doc, access, xid):
    subjects = doc.get("ffsubjects", [])
    types = doc.get("fftypes", [])
    for name, v in (("ffsubjects", subjects), ("fftypes", types)):
        if not isinstance(v, list) or not all(isinstance(x, str) and 0 < len(x) <= 256
                                              for x in v):
            raise XRegistryError("invalid_attribute", xid, name=name,
                                 error_detail="a list of strings of 1-256 characters")
    if len(subjects) + len(types) > MAX_BINDINGS:
        raise XRegistryError("invalid_attribute", xid, name="ffsubjects",
                             error_detail="at most {} subjects and types".format(MAX_BINDINGS))
    for p in subjects:
        try:
            validate_pattern(p)
        except SubjectError as exc:
            raise XRegistryError("invalid_attribute", xid, name="ffsubjects",
                                 error_detail=str(exc)) from None
        why = access.bind_denied(p)
        if why is not None:
            raise XRegistryError("forbidden", xid, "binding {!r}: {}".format(p, why))
    return list(dict.fromkeys(subjects)), list(dict.fromkeys(types))


def write_request(catalog, method, segs, params, base, access, body, ctype, path):
    """PUT, POST and DELETE below ``/schemagroups`` (docs/catalog.md)."""
    store = catalog.schemas
    subject = "/" + "/".join(segs)
    if method not in ("PUT", "POST", "DELETE"):
        raise XRegistryError("action_not_supported", path, action=method, headers=(
            ("allow", "GET, HEAD, PUT, POST, DELETE"),))
    if not access.may_write:
        raise XRegistryError("forbidden", subject,
                             "registering schemas needs streams = \"manage\"")
    if body is not None and len(body) > store.max_schema_bytes:
        raise XRegistryError("limit", subject, "a body of {} bytes; at most {}".format(
            len(body), store.max_schema_bytes))
    n = len(segs)
    if n == 1 or (n >= 3 and segs[2] != "schemas") or n > 6 or \
            (n == 6 and segs[4] != "versions") or n == 5:
        if n == 1:
            raise XRegistryError("action_not_supported", path, action=method,
                                 headers=(("allow", "GET, HEAD"),))
        raise XRegistryError("api_not_found", path)
    gid = segs[1]
    if n == 2:
        if method == "DELETE":
            store.delete_group(gid)
            return 204, None, "empty", ()
        if method != "PUT":
            raise _not_supported(path, method, "GET, HEAD, PUT, DELETE")
        doc = _json_body(body, subject) if body else {}
        if not isinstance(doc, dict):
            raise XRegistryError("parsing_data", subject, "a schema group is a JSON object")
        if doc.get("schemagroupid", gid) != gid:
            raise XRegistryError("invalid_attribute", subject, name="schemagroupid",
                                 error_detail="the body names another group")
        created = store.put_group(gid, doc)
        return _answer(catalog, segs, base, access, 201 if created else 200)
    if n == 3:
        raise _not_supported(path, method, "GET, HEAD")
    sid = segs[3]
    details = sid.endswith("$details")
    if details:
        sid = sid[:-len("$details")]
    if n == 4:
        xid = "/schemagroups/{}/schemas/{}".format(gid, sid)
        if method == "DELETE":
            store.delete_schema(gid, sid)
            return 204, None, "empty", ()
        if details:
            if method != "PUT":
                raise _not_supported(path, method, "GET, HEAD, PUT")
            doc = _json_body(body, xid)
            if not isinstance(doc, dict):
                raise XRegistryError("parsing_data", xid, "a schema's metadata is an object")
            subjects, types = _bindings(doc, access, xid)
            created = False
            if "schema" in doc or sid not in store.groups.get(gid, _Group({}, 0)).schemas:
                if "schema" not in doc:
                    raise XRegistryError("invalid_attribute", xid, name="schema",
                                         error_detail="a new schema needs its document")
                created, _ = store.put_version(gid, sid, None, doc["schema"],
                                               doc.get("format"), doc, replace_default=True)
            store.put_bindings(gid, sid, subjects, types)
            return _answer(catalog, segs[:3] + [sid + "$details"], base, access,
                           201 if created else 200)
        document = _json_body(body, xid)
        created, vid = store.put_version(gid, sid, None, document, None,
                                         replace_default=(method == "PUT"))
        if method == "POST":
            return _answer(catalog, segs[:4] + ["versions", vid + "$details"], base, access,
                           201, xid + "/versions/" + vid)
        return _answer(catalog, segs[:3] + [sid + "$details"], base, access,
                       201 if created else 200)
    vid = segs[5]
    vdetails = vid.endswith("$details")
    if vdetails:
        vid = vid[:-len("$details")]
    vxid = "/schemagroups/{}/schemas/{}/versions/{}".format(gid, sid, vid)
    if details:
        raise XRegistryError("api_not_found", path)
    if method == "DELETE":
        store.delete_version(gid, sid, vid)
        return 204, None, "empty", ()
    if method != "PUT":
        raise _not_supported(path, method, "GET, HEAD, PUT, DELETE")
    doc = _json_body(body, vxid)
    attrs = None
    fmt = None
    if vdetails:
        if not isinstance(doc, dict) or "schema" not in doc:
            raise XRegistryError("invalid_attribute", vxid, name="schema",
                                 error_detail="the version's metadata carries its document "
                                              "in 'schema'")
        attrs, fmt, doc = doc, doc.get("format"), doc["schema"]
    created, vid = store.put_version(gid, sid, vid, doc, fmt, attrs)
    return _answer(catalog, segs[:5] + [vid + "$details"], base, access,
                   201 if created else 200, vxid)


def _not_supported(path, method, allow):
    return XRegistryError("action_not_supported", path, action=method,
                          headers=(("allow", allow),))


def _answer(catalog, segs, base, access, status, location_xid=None):
    _, doc, _, _ = catalog._get(segs, {}, base, access, "/" + "/".join(segs))
    hs = ()
    if status == 201:
        xid = location_xid or "/" + "/".join(s[:-len("$details")] if s.endswith("$details")
                                             else s for s in segs)
        hs = (("location", base + xid),)
    return status, doc, None, hs
