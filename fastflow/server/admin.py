"""The admin API (docs/accounts.md "The admin API"): accounts and users
changed at run time over the HTTP door, by admin users only.

    GET    /admin/accounts               every account's configuration
    GET    /admin/accounts/<name>        one, with its live state
    PUT    /admin/accounts/<name>        create or replace (exports, imports, limits, streams)
    DELETE /admin/accounts/<name>        remove (409 while users or imports name it)
    GET    /admin/users                  every user (no password hashes)
    PUT    /admin/users/<name>           create or replace (password, account, permissions,
                                         limits, admin)
    DELETE /admin/users/<name>           remove

A change is checked as a whole configuration first (the same checks as
the config file: a refusal is 400 or 409 naming what is wrong, and changes
nothing), then applied without a restart: accounts added get their
engine and services, removed ones close their connections; imports that
changed are wired again (the others keep their state); connections of a
user removed or moved to another account are closed, and a user whose
permissions narrowed loses at once the live subscriptions they no longer
allow (each door tells the client in its words).  Connections nobody
touched go on.  With a data directory the result is kept in
``accounts.json`` there, which then supersedes the config file's accounts
and users at start.
"""

import asyncio
import json
import logging
import os
import re

from fastflow.errors import HttpError
from fastflow.server.auth import Authenticator, hash_password, is_password_hash
from fastflow.server.config import ConfigError
from fastflow.server.connection import CLOSING, READY

__all__ = ("STATE_FILE", "admin_request", "load_state")

log = logging.getLogger("fastflow.server")

STATE_FILE = "accounts.json"
_MAX_BODY = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9_$-][A-Za-z0-9_.@+-]{0,127}\Z")


def load_state(data_dir):
    """``(accounts, users)`` the admin API saved in ``data_dir``, or None."""
    if not data_dir:
        return None
    path = os.path.join(data_dir, STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
        if not isinstance(doc, dict) or doc.get("version") != 1 \
                or not isinstance(doc.get("accounts"), dict) \
                or not isinstance(doc.get("users"), list):
            raise ValueError("not a version 1 accounts file")
    except (OSError, ValueError) as exc:
        raise ConfigError("{}: cannot be read: {} (the admin API's accounts and users; move "
                          "it away to start from the config file's)".format(path, exc)) from None
    return doc["accounts"], doc["users"]


def _save_state(srv):
    d = srv.config.data_dir
    if not d:
        return
    path = os.path.join(d, STATE_FILE)
    tmp = path + ".tmp"
    doc = {"version": 1, "accounts": srv.config.accounts or {},
           "users": list(srv.config.users)}
    with open(tmp, "wb") as f:
        f.write(json.dumps(doc, indent=1, sort_keys=True).encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _body(req):
    ct = req.headers.get("content-type", "application/json")
    mt = ct.partition(";")[0].strip().lower()
    if mt != "application/json" and not mt.endswith("+json"):
        raise HttpError(415, "the admin API takes application/json, got {!r}".format(ct[:100]))
    if len(req.body) > _MAX_BODY:
        raise HttpError(413, "a body of {} bytes: at most {}".format(len(req.body), _MAX_BODY))
    try:
        doc = json.loads(req.body or b"{}")
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, "the body is not valid JSON: {}".format(exc)) from None
    if not isinstance(doc, dict):
        raise HttpError(400, "the body must be a JSON object")
    return doc


def _public_user(u):
    return {k: v for k, v in u.items() if k != "password"}


def admin_request(proto, req, principal):
    """Every ``/admin...`` request of the HTTP door."""
    if not principal.admin:
        raise HttpError(403, "permission denied: the admin API is for admin users "
                             "(admin = true in the config)")
    parts = req.path.split("/")[2:]
    if len(parts) not in (1, 2) or parts[0] not in ("accounts", "users"):
        raise HttpError(404, "no such resource: {!r} (/admin/accounts[/<name>], "
                             "/admin/users[/<name>])".format(req.path[:200]))
    what, name = parts[0], (parts[1] if len(parts) == 2 else None)
    if name is not None and not _NAME.match(name):
        raise HttpError(400, "not a valid name: {!r}".format(name[:200]))
    srv = proto.server
    cfg = srv.config
    if req.method == "GET":
        if what == "accounts":
            table = dict(cfg.accounts or {})
            if name is None:
                proto.json(req, {"accounts": table, "system_account": srv.accounts.system.name})
                return
            acct = srv.accounts.get(name)
            if acct is None:
                raise HttpError(404, "no account {!r}".format(name))
            proto.json(req, {"name": name, "config": table.get(name, {}),
                             "state": acct.info(), "quotas": srv.quotas.info(name)})
            return
        users = [_public_user(u) for u in cfg.users]
        if name is None:
            proto.json(req, {"users": users})
            return
        for u in users:
            if u["user"] == name:
                proto.json(req, u)
                return
        raise HttpError(404, "no user {!r}".format(name))
    if req.method not in ("PUT", "DELETE") or name is None:
        raise HttpError(405, "{} {}: GET the collections; PUT or DELETE one {}".format(
            req.method, req.path[:200], what[:-1]), (("allow", "GET, PUT, DELETE"),))
    body = _body(req) if req.method == "PUT" else None
    proto.busy = True
    proto.conn.pause("http")
    proto.conn.track(proto.loop.create_task(_change(proto, req, principal, what, name, body)))


async def _change(proto, req, principal, what, name, body):
    srv = proto.server
    try:
        async with srv.admin_lock:
            accounts = dict(srv.config.accounts or {})
            users = [dict(u) for u in srv.config.users]
            status = 200
            if what == "accounts":
                if req.method == "DELETE":
                    if name not in accounts:
                        raise HttpError(404, "no account {!r}".format(name))
                    if name in ("$G", srv.accounts.system.name):
                        raise HttpError(409, "account {} cannot be removed".format(name))
                    named = [u["user"] for u in users if u.get("account") == name]
                    if named:
                        raise HttpError(409, "account {} has users ({}): remove or move them "
                                             "first".format(name, ", ".join(named)))
                    del accounts[name]
                else:
                    status = 200 if name in accounts else 201
                    accounts[name] = body
            else:
                found = [i for i, u in enumerate(users) if u["user"] == name]
                if req.method == "DELETE":
                    if not found:
                        raise HttpError(404, "no user {!r}".format(name))
                    del users[found[0]]
                    cfg = srv.config
                    if not users and not cfg.tokens and not cfg.token:
                        raise HttpError(409, "user {} is the last: without users or tokens "
                                             "the server would ask for no credentials".format(
                                                 name))
                else:
                    u = dict(body, user=name)
                    pw = u.get("password")
                    if pw is None and found:
                        u["password"] = users[found[0]]["password"]     # (unchanged)
                    elif not isinstance(pw, str) or not pw:
                        raise HttpError(400, "user {}: 'password' is required (plain, or a "
                                             "`fastflow passwd` hash)".format(name))
                    elif not is_password_hash(pw):
                        try:
                            u["password"] = await asyncio.get_running_loop().run_in_executor(
                                None, hash_password, pw)
                        except ValueError as exc:
                            raise HttpError(400, "user {}: {}".format(name, exc)) from None
                    if found:
                        users[found[0]] = u
                    else:
                        status = 201
                        users.append(u)
            old = (dict(srv.config.accounts or {}), [dict(u) for u in srv.config.users])
            try:
                await apply(srv, accounts, users, name if what == "accounts" and
                            req.method == "PUT" else None)
            except ConfigError as exc:
                msg = str(exc)
                if srv.config.accounts != old[0] or list(srv.config.users) != old[1]:
                    await apply(srv, *old)      # (applied in part: undone)
                raise HttpError(409 if "no account" in msg else 400, msg) from None
            _save_state(srv)
            log.info("admin %s: %s %s/%s", principal.name, req.method, what, name)
            if req.method == "DELETE":
                proto.respond(req, 204)
            elif what == "accounts":
                proto.json(req, {"name": name, "config": accounts[name]}, status)
            else:
                proto.json(req, _public_user([u for u in users if u["user"] == name][0]),
                           status)
    except HttpError as exc:
        proto.refuse(req, exc)
    except Exception as exc:
        log.exception("admin: %s %s failed", req.method, req.path)
        proto.refuse(req, HttpError(500, "internal error: {}".format(exc)))
    proto._next()


async def apply(srv, accounts, users, streams_of=None):
    """Make ``accounts`` (the config's table) and ``users`` the server's:
    checked whole (ConfigError, nothing changed), then applied; the
    streams of new accounts and of ``streams_of`` made (ConfigError: the
    caller undoes the change)."""
    cfg = srv.config.copy(accounts=accounts, users=tuple(users),
                          system_account=srv.accounts.system.name)
    specs = cfg.account_specs()
    auth = Authenticator(cfg, log)
    from fastflow.server.quotas import Quotas

    quotas = Quotas(srv, cfg)           # (ConfigError: limits)
    srv.config = cfg
    added, removed = srv.accounts.update(specs, srv.make_account_flow)
    quotas.take_counts(srv.quotas)
    srv.quotas = quotas
    quotas.install(srv.accounts)
    srv.install_trust()
    for acct in added:
        await srv.start_account(acct)
    for acct in srv.accounts:
        if acct in added or acct.name == streams_of:
            srv.add_account_streams(acct, acct.streams, "accounts.{}.streams".format(acct.name))
    srv.auth = auth
    gone = {a.name for a in removed}
    for conn in list(srv.conns.values()):
        _recheck(srv, conn, auth, gone)
    for acct in removed:
        try:
            await srv.stop_account(acct)
        except Exception:
            log.exception("admin: stopping account %s failed", acct.name)


def _recheck(srv, conn, auth, gone):
    """A connection after a change: closed if its account or its user
    went (or the user moved); its permissions renewed otherwise, and its
    subscriptions that they no longer allow ended."""
    p = conn.principal
    proto = conn.proto
    if hasattr(proto, "_creds_key"):    # (the HTTP door's principal cache)
        proto.principal = proto._creds_key = None
    if p is None or conn.state >= CLOSING:
        return
    if conn.account.name in gone:
        conn.close(401, "account {} was removed".format(conn.account.name))
        return
    if p.kind == "none":
        new = auth.anonymous
    elif p.kind == "user":
        e = auth.users.get(p.name)
        new = e[1] if e is not None else None
    else:
        new = next((q for _t, q in auth.tokens if q.name == p.name), None)
    if new is None:
        conn.close(401, "authentication failed: {} {} was removed".format(p.kind, p.name))
        return
    if new.account != p.account:
        conn.close(401, "{} {} moved to account {}".format(p.kind, p.name, new.account))
        return
    if conn.state != READY:
        return
    conn._set_principal(new)
    perms = new.permissions
    if perms.unrestricted:
        return
    for sid, (_t, pattern, queue) in list(conn.subs.items()):
        why = perms.subscribe_denied(pattern, queue)
        if why is not None:
            conn.forget_sub(sid)
            proto.revoked(sid, pattern, why)
    inner = getattr(proto, "inner", None)
    mq = inner if inner is not None and inner.name == "mqtt" else (
        proto if proto.name == "mqtt" else None)
    if mq is not None and getattr(mq, "session", None) is not None:
        mq.revoke_filters()
