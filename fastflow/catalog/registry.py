"""The discovery catalog (docs/catalog.md): an xRegistry (``SPECVERSION``)
whose groups are derived from the live server — ``endpoints`` (the doors
that are on), ``messagegroups`` (one per stream, a message definition per
CloudEvents ``type`` seen in it, with live figures) — and ``schemagroups``
(the schemas producers register, ``fastflow.catalog.schemas``).

``Catalog.request(method, path, ...)`` answers one request of the
xRegistry HTTP binding on a path below the registry's base (``""`` is the
registry itself); it knows nothing of sockets: the HTTP door
(``fastflow.server.catalog``) calls it.
"""

import hashlib
import time

from fastflow.catalog.model import (
    ENVELOPE,
    ID_RE,
    SPECVERSION,
    XRegistryError,
    capabilities,
    model,
)
from fastflow.catalog.tracker import TICK_BUDGET, Trackers

__all__ = ("Access", "Catalog", "Resource", "message_id", "rfc3339")

_GROUPS = ("endpoints", "messagegroups", "schemagroups")
_RESOURCES = {"messagegroups": "messages", "schemagroups": "schemas"}
_SINGULAR = {"endpoints": "endpoint", "messagegroups": "messagegroup",
             "schemagroups": "schemagroup", "messages": "message", "schemas": "schema"}
_META_KEYS = ("createdat", "modifiedat", "epoch", "labels")
MAX_INLINE = 64                 # ?inline= values at most
MAX_RESPONSE = 64 << 20         # bytes a response may have (too_large beyond)


def rfc3339(t):
    """Seconds (float) or nanoseconds (int > 1e12) since the epoch as an
    RFC 3339 timestamp (UTC, microseconds)."""
    if isinstance(t, int) and t > 10 ** 12:
        sec, ns = divmod(t, 10 ** 9)
        us = ns // 1000
    else:
        sec = int(t)
        us = int(round((t - sec) * 1e6))
        if us >= 1000000:
            sec, us = sec + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".{:06d}Z".format(us)


def message_id(type_):
    """The message id of a CloudEvents ``type``: the type itself when it is
    a valid xRegistry id, else ``t-`` and 24 hex digits of its SHA-256."""
    if ID_RE.match(type_):
        return type_
    return "t-" + hashlib.sha256(type_.encode("utf-8", "surrogatepass")).hexdigest()[:24]


class Access:
    """What the requester may see and do: ``may_read_stream(patterns)``,
    ``may_write`` (register schemas), ``bind_denied(pattern)`` (why a
    schema may not be bound to a subject pattern, or None), ``name``."""

    def __init__(self, may_read_stream=None, may_write=True, bind_denied=None, name=""):
        self.may_read_stream = may_read_stream or (lambda patterns: True)
        self.may_write = may_write
        self.bind_denied = bind_denied or (lambda pattern: None)
        self.name = name


ALL = Access()


class Resource:
    """A resource as the serializer sees it: resource-level attributes,
    meta, versions (versionid -> (attributes, document or None)), the
    default versionid."""

    __slots__ = ("attrs", "meta", "versions", "default", "readonly")

    def __init__(self, attrs, meta, versions, default, readonly=True):
        self.attrs = attrs
        self.meta = meta
        self.versions = versions
        self.default = default
        self.readonly = readonly


class _View:
    """One response's serialization: the base URL, ``?inline`` paths and
    ``?doc`` (document view, JSON pointers relative to ``root``)."""

    def __init__(self, base, inline, doc, root):
        self.base = base
        self.inline = inline            # set of dotted paths ("*": all)
        self.doc = doc
        self.root = root                # the xid of what the response is

    def url(self, xid, included=True):
        if self.doc and included and (xid == self.root or xid.startswith(
                self.root.rstrip("/") + "/")):
            rest = xid[len(self.root.rstrip("/")):]
            return "#" + (rest or "/")
        return self.base + ("" if xid == "/" else xid)

    def inlined(self, path):
        """Whether the collection at the dotted ``path`` (relative to the
        response's root) is inlined."""
        if "*" in self.inline:
            return True
        return any(p == path or p.startswith(path + ".") for p in self.inline)


class Catalog:
    """The catalog of one server.  ``flow``: the engine; ``doors()``: the
    endpoints (a list of dicts: ``id``, ``protocol``, ``uri``, ``name``,
    ``description``, ``usage``, ``envelopeoptions``, ``protocoloptions``);
    ``schemas``: a ``SchemaStore`` (None: no schemagroups are kept)."""

    def __init__(self, flow, *, registry_id, name="fastflow", doors=None, schemas=None,
                 max_types=1000, interval=1.0, documentation=None):
        self.flow = flow
        self.registry_id = registry_id if ID_RE.match(registry_id) else "fastflow"
        self.name = name
        self.doors = doors or (lambda base: [])
        self._base = ""                 # the base URL of the request being answered
        self.schemas = schemas
        self.trackers = Trackers(flow, max_types)
        self.interval = interval
        self.documentation = documentation
        self.created = time.time()
        self._timer = None
        self._loop = None
        self._model = model()

    # -- the tracker's timer ----------------------------------------------------------------

    def start(self, loop):
        self._loop = loop
        self._timer = loop.call_later(self.interval, self._tick)

    def stop(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self):
        self._timer = self._loop.call_later(self.interval, self._tick)
        try:
            self.trackers.update(budget=TICK_BUDGET)
        except Exception:               # (a stream closing under it: next tick)
            import logging
            logging.getLogger("fastflow.server").exception("catalog: the type tracker failed")

    # -- the entities ------------------------------------------------------------------------

    def _visible_streams(self, access):
        return {name: st for name, st in self.flow.streams().items()
                if access.may_read_stream(st.subjects)}

    def _group_ids(self, plural, access):
        if plural == "endpoints":
            return [d["id"] for d in self.doors(self._base)]
        if plural == "messagegroups":
            return sorted(self._visible_streams(access))
        return self.schemas.group_ids() if self.schemas is not None else []

    def _group(self, plural, gid, access):
        """The attributes of a group (None: no such group)."""
        if plural == "endpoints":
            for d in self.doors(self._base):
                if d["id"] == gid:
                    return self._endpoint(d, access)
            return None
        if plural == "messagegroups":
            st = self._visible_streams(access).get(gid)
            if st is None:
                return None
            return self._messagegroup(st)
        if self.schemas is None:
            return None
        return self.schemas.group(gid)

    def _endpoint(self, d, access):
        t = self.created
        e = {"endpointid": d["id"], "epoch": 1, "name": d.get("name", d["id"]),
             "description": d.get("description", ""),
             "createdat": rfc3339(t), "modifiedat": rfc3339(t),
             "usage": list(d.get("usage", ("producer", "subscriber"))),
             "envelope": ENVELOPE, "protocol": d["protocol"],
             "protocoloptions": dict(d.get("protocoloptions", {}),
                                     endpoints=[{"uri": d["uri"]}]),
             "messagegroups": ["/messagegroups/" + n
                               for n in sorted(self._visible_streams(access))],
             "ffdoor": d.get("door", d["id"])}
        if d.get("envelopeoptions"):
            e["envelopeoptions"] = dict(d["envelopeoptions"])
        if d.get("documentation"):
            e["documentation"] = d["documentation"]
        return e

    def _messagegroup(self, st):
        tr = self.trackers.trackers.get(st.name)
        log = st.log
        t = tr.created if tr is not None else self.created
        mod = t
        if tr is not None and tr.types:
            mod = max(t, max(s.last_ts for s in tr.types.values()) / 1e9)
        g = {"messagegroupid": st.name, "epoch": 1, "name": st.name,
             "description": "the events of stream {} ({})".format(
                 st.name, ", ".join(st.subjects)),
             "createdat": rfc3339(t), "modifiedat": rfc3339(mod),
             "envelope": ENVELOPE,
             "ffstream": st.name, "ffsubjects": list(st.subjects),
             "ffevents": len(log), "fflastseq": log.last_seq,
             "ffcount": tr.count if tr is not None else 0,
             "ffrate": round(tr.rate(), 3) if tr is not None else 0.0,
             "ffother": tr.other if tr is not None else 0,
             "ffunread": tr.unread if tr is not None else 0}
        return g

    def _resources(self, plural, gid, access):
        """rid -> Resource of a group's resources."""
        if plural == "messagegroups":
            tr = self.trackers.trackers.get(gid)
            if tr is None:
                return {}
            now = time.monotonic()
            out = {}
            for s in tr.types.values():
                mid = message_id(s.type)
                out[mid] = self._message(gid, mid, s, now)
            return out
        if plural == "schemagroups" and self.schemas is not None:
            return self.schemas.resources(gid)
        return {}

    def _message(self, gid, mid, s, now):
        first, last = rfc3339(s.first_ts), rfc3339(s.last_ts)
        meta_ = {"epoch": 1, "createdat": first, "modifiedat": last}
        md = {"specversion": {"type": "string", "value": "1.0", "required": True},
              "id": {"type": "string", "required": True},
              "type": {"type": "string", "value": s.type, "required": True},
              "source": {"type": "uritemplate", "required": True}}
        if s.sources == 1 and s.source is not None:
            md["source"]["value"] = s.source
        v = {"messageid": mid, "epoch": 1, "name": s.type,
             "description": "CloudEvents of type {} seen in stream {}".format(s.type, gid),
             "createdat": first, "modifiedat": last, "envelope": ENVELOPE,
             "envelopemetadata": md,
             "ffcount": s.count, "fffirstseen": first, "fflastseen": last,
             "ffrate": round(s.rate(now), 3), "ffsources": "many" if s.sources > 1 else "one"}
        if s.source is not None:
            v["ffsource"] = s.source
        if s.datacontenttype is not None:
            v["datacontenttype"] = s.datacontenttype
        if s.dataschema is not None:
            v["dataschemauri"] = s.dataschema
        bound = self.schemas.bound_xid(s.type) if self.schemas is not None else None
        if bound is not None:
            v["dataschemaxid"] = bound
            v["dataschemaformat"] = "JsonSchema/draft-07"
        return Resource({}, meta_, {"1": (v, None)}, "1")

    # -- serialization -----------------------------------------------------------------------

    def _ser_registry(self, view, access, path=""):
        mod = self.created
        if self.schemas is not None:
            mod = max(mod, self.schemas.modified)
        r = {"specversion": SPECVERSION, "registryid": self.registry_id,
             "self": view.url("/"), "xid": "/", "epoch": 1, "name": self.name,
             "description": "the discovery catalog of fastflow server {}".format(self.name),
             "createdat": rfc3339(self.created), "modifiedat": rfc3339(mod)}
        if self.documentation:
            r["documentation"] = self.documentation
        if "capabilities" in view.inline:
            r["capabilities"] = self.capabilities()
        if "model" in view.inline:
            r["model"] = self.model()
        if "modelsource" in view.inline:
            r["modelsource"] = self.model()
        for plural in _GROUPS:
            ids = self._group_ids(plural, access)
            inl = view.inlined(plural)
            r[plural + "url"] = view.url("/" + plural, inl)
            r[plural + "count"] = len(ids)
            if inl:
                r[plural] = self._ser_groups(view, access, plural, ids, plural)
        return r

    def _ser_groups(self, view, access, plural, ids, path):
        out = {}
        for gid in ids:
            g = self._group(plural, gid, access)
            if g is not None:
                out[gid] = self._ser_group(view, access, plural, gid, g, path)
        return out

    def _ser_group(self, view, access, plural, gid, g, path):
        xid = "/{}/{}".format(plural, gid)
        d = {_SINGULAR[plural] + "id": gid, "self": view.url(xid), "xid": xid}
        d.update((k, v) for k, v in g.items() if k != _SINGULAR[plural] + "id")
        rplural = _RESOURCES.get(plural)
        if rplural is not None:
            res = self._resources(plural, gid, access)
            rpath = path + "." + rplural if path else rplural
            inl = view.inlined(rpath)
            d[rplural + "url"] = view.url(xid + "/" + rplural, inl)
            d[rplural + "count"] = len(res)
            if inl:
                d[rplural] = {rid: self._ser_resource(view, rplural, xid, rid, r, rpath)
                              for rid, r in sorted(res.items())}
        return d

    def _ser_resource(self, view, rplural, gxid, rid, r, path):
        singular = _SINGULAR[rplural]
        xid = "{}/{}/{}".format(gxid, rplural, rid)
        d = {singular + "id": rid, "self": view.url(xid), "xid": xid}
        if not view.doc:
            vattrs, document = r.versions[r.default]
            d.update(self._ser_version_attrs(vattrs, singular, rid, r.default, True))
            if document is not None and view.inlined(path + "." + singular):
                d[singular] = document
        d.update(r.attrs)
        meta_inl = view.inlined(path + ".meta")
        d["metaurl"] = view.url(xid + "/meta", meta_inl)
        if meta_inl:
            d["meta"] = self._ser_meta(view, singular, xid, rid, r)
        vinl = view.inlined(path + ".versions")
        d["versionsurl"] = view.url(xid + "/versions", vinl)
        d["versionscount"] = len(r.versions)
        if vinl:
            d["versions"] = {vid: self._ser_version(view, singular, xid, rid, vid, r,
                                                    view.doc or view.inlined(
                                                        path + ".versions." + singular))
                             for vid in r.versions}
        return d

    @staticmethod
    def _ser_version_attrs(vattrs, singular, rid, vid, isdefault):
        d = {k: v for k, v in vattrs.items() if k != singular + "id"}
        d["versionid"] = vid
        d["isdefault"] = isdefault
        d.setdefault("ancestorid", vid)
        return d

    def _ser_version(self, view, singular, rxid, rid, vid, r, with_doc):
        vattrs, document = r.versions[vid]
        xid = "{}/versions/{}".format(rxid, vid)
        d = {singular + "id": rid, "self": view.url(xid), "xid": xid}
        d.update(self._ser_version_attrs(vattrs, singular, rid, vid, vid == r.default))
        if document is not None and with_doc:
            d[singular] = document
        return d

    def _ser_meta(self, view, singular, rxid, rid, r):
        m = {singular + "id": rid, "self": view.url(rxid + "/meta"), "xid": rxid + "/meta"}
        m.update((k, v) for k, v in r.meta.items() if k in _META_KEYS)
        m["readonly"] = r.readonly
        m["compatibility"] = "none"
        m["defaultversionid"] = r.default
        m["defaultversionurl"] = view.url("{}/versions/{}".format(rxid, r.default))
        m["defaultversionsticky"] = False
        return m

    def capabilities(self):
        s = self.schemas
        return capabilities(s is not None, s.max_versions if s is not None else 0)

    def model(self):
        return self._model

    # -- requests ---------------------------------------------------------------------------

    def request(self, method, path, params, base, access, body=None, ctype=None):
        """Answer ``method`` on ``path`` (below the registry's base, ``""``
        or starting with ``/``).  Returns ``(status, body, content_type,
        headers)`` with ``body`` a JSON-able object, or bytes for a
        resource's document; raises ``XRegistryError``."""
        segs = [s for s in path.split("/")[1:]] if path else []
        if segs and segs[-1] == "":
            segs.pop()
        if any(s == "" for s in segs):
            raise XRegistryError("api_not_found", path or "/")
        self._base = base
        if method in ("GET", "HEAD"):
            self.trackers.update(self._streams_of(segs))
            return self._get(segs, params, base, access, path)
        if self.schemas is not None and len(segs) >= 1 and segs[0] == "schemagroups":
            from fastflow.catalog.schemas import write_request
            return write_request(self, method, segs, params, base, access, body, ctype, path)
        if not segs or segs[0] in ("capabilities", "model", "modelsource", "export") or \
                segs[0] in _GROUPS:
            subject = "/" + "/".join(segs)
            if segs and segs[0] in ("endpoints", "messagegroups"):
                raise XRegistryError("readonly", subject,
                                     "{} are derived from the live server".format(segs[0]))
            raise XRegistryError("action_not_supported", path or "/", action=method,
                                 headers=(("allow", "GET, HEAD"),))
        raise XRegistryError("api_not_found", path or "/")

    @staticmethod
    def _streams_of(segs):
        if len(segs) >= 2 and segs[0] == "messagegroups":
            return (segs[1],)
        if len(segs) == 1 and segs[0] == "messagegroups" or not segs or \
                segs[0] in ("export", "endpoints"):
            return None
        return ()

    def _inline(self, params, default=()):
        raw = params.get("inline")
        if raw is None:
            return set(default)
        vals = set(v.strip() for v in raw.split(",") if v.strip()) if raw else {"*"}
        if len(vals) > MAX_INLINE:
            raise XRegistryError("inline_noninlineable", raw[:100],
                                 "at most {} values".format(MAX_INLINE))
        return vals

    def _check_inline(self, vals, segs):
        """Every ``?inline`` value names a collection (or meta, model,
        capabilities at the root) under the requested entity."""
        known = {"*"}
        if not segs:
            known |= {"capabilities", "model", "modelsource"}
            for plural in _GROUPS:
                known.add(plural)
                r = _RESOURCES.get(plural)
                if r:
                    for tail in ("", ".meta", ".versions", "." + _SINGULAR[r],
                                 ".versions." + _SINGULAR[r]):
                        known.add("{}.{}{}".format(plural, r, tail))
        else:
            plural = segs[0]
            r = _RESOURCES.get(plural)
            if r:
                sr = _SINGULAR[r]
                tails = {"": [r, r + ".meta", r + ".versions", r + "." + sr,
                              r + ".versions." + sr],
                         "g": [r, r + ".meta", r + ".versions", r + "." + sr,
                               r + ".versions." + sr],
                         "c": ["meta", "versions", sr, "versions." + sr],
                         "r": ["meta", "versions", sr, "versions." + sr],
                         "vs": [sr], "v": [sr]}
                depth = len(segs)
                key = {1: "", 2: "g", 3: "c", 4: "r", 5: "vs", 6: "v"}.get(depth, "v")
                for t in tails[key]:
                    known.add(t)
        for v in vals:
            if v not in known:
                raise XRegistryError("inline_noninlineable", v)

    def _get(self, segs, params, base, access, path):
        doc = "doc" in params
        if segs and segs[0] == "export":
            if len(segs) > 1:
                raise XRegistryError("api_not_found", path)
            inline = self._inline(params, ("*", "capabilities", "modelsource"))
            self._check_inline(inline, [])
            return 200, self._ser_registry(_View(base, inline, True, "/"), access), None, ()
        if not segs:
            inline = self._inline(params)
            self._check_inline(inline, [])
            return 200, self._ser_registry(_View(base, inline, doc, "/"), access), None, ()
        head = segs[0]
        if head == "capabilities" and len(segs) == 1:
            return 200, self.capabilities(), None, ()
        if head in ("model", "modelsource") and len(segs) == 1:
            return 200, self.model(), None, ()
        if head not in _GROUPS:
            raise XRegistryError("api_not_found", path)
        inline = self._inline(params)
        self._check_inline(inline, segs)
        root = "/" + "/".join(segs)
        view = _View(base, inline, doc, root)
        plural = head
        if len(segs) == 1:
            return 200, self._ser_groups(view, access, plural,
                                         self._group_ids(plural, access), ""), None, ()
        gid = segs[1]
        g = self._group(plural, gid, access)
        if g is None:
            raise XRegistryError("not_found", "/{}/{}".format(plural, gid))
        if len(segs) == 2:
            return 200, self._ser_group(view, access, plural, gid, g, ""), None, ()
        rplural = _RESOURCES.get(plural)
        if rplural is None or segs[2] != rplural:
            raise XRegistryError("api_not_found", path)
        gxid = "/{}/{}".format(plural, gid)
        res = self._resources(plural, gid, access)
        if len(segs) == 3:
            return 200, {rid: self._ser_resource(view, rplural, gxid, rid, r, "")
                         for rid, r in sorted(res.items())}, None, ()
        rid = segs[3]
        details = rid.endswith("$details")
        if details:
            rid = rid[:-len("$details")]
        r = res.get(rid)
        rxid = "{}/{}/{}".format(gxid, rplural, rid)
        if r is None:
            raise XRegistryError("not_found", rxid)
        singular = _SINGULAR[rplural]
        if len(segs) == 4:
            vattrs, document = r.versions[r.default]
            if document is not None and not details:
                return 200, document, "doc", self._doc_headers(view, singular, rxid, rid,
                                                                r.default, r)
            return 200, self._ser_resource(view, rplural, gxid, rid, r, ""), None, ()
        if details:
            raise XRegistryError("api_not_found", path)
        if segs[4] == "meta" and len(segs) == 5:
            return 200, self._ser_meta(view, singular, rxid, rid, r), None, ()
        if segs[4] != "versions" or len(segs) > 6:
            raise XRegistryError("api_not_found", path)
        if len(segs) == 5:
            return 200, {vid: self._ser_version(view, singular, rxid, rid, vid, r,
                                                view.inlined(singular))
                         for vid in r.versions}, None, ()
        vid = segs[5]
        vdetails = vid.endswith("$details")
        if vdetails:
            vid = vid[:-len("$details")]
        if vid not in r.versions:
            raise XRegistryError("not_found", "{}/versions/{}".format(rxid, vid))
        vattrs, document = r.versions[vid]
        if document is not None and not vdetails:
            return 200, document, "doc", self._doc_headers(view, singular, rxid, rid, vid, r)
        return 200, self._ser_version(view, singular, rxid, rid, vid, r,
                                      view.inlined(singular)), None, ()

    def _doc_headers(self, view, singular, rxid, rid, vid, r):
        """The xRegistry- headers of a resource's document (core/http.md):
        ids and URLs only, no value a request supplied unchecked (ids are
        checked against ID_RE when created)."""
        return (("xregistry-" + singular + "id", rid), ("xregistry-versionid", vid),
                ("xregistry-self", view.url("{}/versions/{}".format(rxid, vid))),
                ("xregistry-xid", "{}/versions/{}".format(rxid, vid)),
                ("xregistry-isdefault", "true" if vid == r.default else "false"))
