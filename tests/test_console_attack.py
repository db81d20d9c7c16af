"""The operator console (docs/console.md) against what an outsider or a
careless client can send it: HTML in every name and value the page shows
(it stays text, in headless Chromium), strings orjson refuses (lone
surrogates in a CONNECT name, an event's attributes, an advisory), many
advisories with no page open, odd query values, unknown accounts, and more
feeds than the monitoring port has room for.  Each test ends with a server log without
a traceback.
"""

import asyncio
import json
import socket
import time

import httpx
import pytest

import fastflow.client
from fastflow.server.console import ADVISORIES_PER_TICK, STREAMS_MAX

from helpers import browser_errors, page_wait
from test_console import serve_console

XSS = '<img src=x onerror="window.pwned=1">'
XSS_SUBJECT = "xss.<img/src=x/onerror=pwned=1"      # (no space, dot or '>' in a token)


def _log_clean(srv):
    with open(srv.log_path) as f:
        text = f.read()
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]


def _nats(port, data):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(data)
    s.settimeout(5)
    got = b""
    while b"PONG" not in got:
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    return s, got


def _lines(base, path, until, timeout=10, headers=None):
    """The lines of the event stream at ``path`` until ``until(lines)``."""
    lines = []
    with httpx.Client(base_url=base, timeout=timeout, headers=headers) as c:
        with c.stream("GET", path) as r:
            assert r.status_code == 200, r.read()
            deadline = time.monotonic() + timeout
            for line in r.iter_lines():
                lines.append(line)
                if until(lines) or time.monotonic() > deadline:
                    break
    return lines


@pytest.fixture
def server(ffproc, tmp_path):
    srv = serve_console(ffproc, tmp_path, '[[streams]]\nname = "xs"\nsubjects = ["xss.>"]\n')
    yield srv
    srv.stop()


def test_html_in_every_value_shows_as_text(browser, server):
    srv = server
    # a connection named with HTML, subscribed to a subject of HTML
    sub, _ = _nats(srv.nats_port, b'CONNECT {"verbose":false,"name":%s}\r\nSUB %s 1\r\n'
                   b'PUB %s %d\r\n%s\r\nPING\r\n' % (json.dumps(XSS).encode(), XSS_SUBJECT.encode(),
                                                XSS_SUBJECT.encode(), len(XSS), XSS.encode()))
    # events whose type, source, id and data are HTML
    with httpx.Client() as c:
        for i in range(3):
            r = c.post("http://127.0.0.1:{}/events/xss.h".format(srv.http_port),
                       content=XSS.encode(), headers={
                           "content-type": "text/html", "ce-id": XSS + str(i),
                           "ce-source": XSS, "ce-type": XSS, "ce-specversion": "1.0"})
            assert r.status_code == 202, r.text
        r = c.post("http://127.0.0.1:{}/streams/xs/consumers/c1".format(srv.http_port),
                   json={"filter": XSS_SUBJECT})
        assert r.status_code in (200, 201), r.text
    try:
        browser.get(srv.base + "/console/")
        page_wait(browser, "window.ffConsole.ticks >= 2", what="the feed")
        shown = {
            "streams": "document.querySelector('#streams').textContent.includes('xss.')",
            "subjects": "document.querySelector('#subjects').textContent.includes('xss.<img')",
            "consumers": "document.querySelector('#consumers').textContent.includes('c1')",
            "connections": "document.querySelector('#connections').textContent"
                           ".includes(arguments[0])",
            "catalog": "document.querySelector('#catalog').textContent.includes(arguments[0])",
        }
        for view, ready in shown.items():
            browser.execute_script("location.hash = arguments[0]", view)
            deadline = time.monotonic() + 20
            while not browser.execute_script("return " + ready, XSS):
                # (the subjects' sampler needs traffic while the page is open)
                if view == "subjects":
                    sub.sendall(b"PUB %s 1\r\nx\r\n" % XSS_SUBJECT.encode())
                assert time.monotonic() < deadline, "{} did not show the values".format(view)
                time.sleep(0.3)
        # the stream's tail: every field as text
        browser.execute_script("location.hash = 'stream?name=xs'")
        page_wait(browser, "!document.getElementById('view-stream').hidden", what="the stream view")
        browser.execute_script("""
            const s = document.getElementById('tail-from'); s.value = 'first';
            s.dispatchEvent(new Event('change'));""")
        browser.find_element("id", "tail-start").click()
        page_wait(browser, "document.querySelectorAll('#tail tbody tr[data-seq]').length >= 3",
              what="the tail")
        cells = browser.execute_script(
            "return Array.from(document.querySelectorAll('#tail tbody tr[data-seq] td'))"
            ".map(e => e.textContent)")
        assert XSS in cells and XSS_SUBJECT in cells
        assert browser.execute_script("return window.pwned") is None
        assert browser.execute_script("return typeof pwned") == "undefined"
        # nothing the values held became an element
        assert browser.execute_script(
            "return document.querySelectorAll('img, b, iframe, object, embed').length") == 0
        assert browser_errors(browser) == []
    finally:
        sub.close()
    _log_clean(srv)


def test_strings_orjson_refuses_do_not_break_a_view(server):
    srv = server
    # a CONNECT name with a lone surrogate (JSON's "\ud800" escape)
    s, _ = _nats(srv.nats_port, b'CONNECT {"verbose":false,"name":"bad\\ud800name"}\r\nPING\r\n')

    async def publish():
        c = await fastflow.client.connect(srv.url)
        c.publish("xss.s", b"d", type="t\ud800", source="/s\udfff", id="i\ud83d")
        await c.flush()
        await c.close()

    try:
        asyncio.run(publish())
        with httpx.Client(base_url=srv.base, timeout=10) as c:
            r = c.get("/console/api/connections")
            assert r.status_code == 200, r.text
            assert "bad\\\\ud800name" in r.text
            deadline = time.monotonic() + 10
            while True:
                r = c.get("/console/api/catalog")
                assert r.status_code == 200, r.text
                if "t\\\\ud800" in r.text or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert "t\\\\ud800" in r.text
        lines = _lines(srv.base, "/console/tail/xs?from=first",
                       lambda ls: any(x.startswith("data: [") for x in ls))
        rows = json.loads([x for x in lines if x.startswith("data: [")][0][6:])
        assert rows[0]["type"] == "t\\ud800" and rows[0]["source"] == "/s\\udfff"
    finally:
        s.close()
    _log_clean(srv)


def test_advisories_are_kept_without_a_page_and_odd_bodies_shown(ffserver):
    """Past ADVISORIES_PER_TICK advisories with no page open, the list goes
    on (it stopped: the advisories since the last tick were only cleared by
    sending them to a page); a body with a lone surrogate shows escaped."""

    async def main():
        async with ffserver(monitor=True) as srv:
            base = "http://127.0.0.1:{}".format(srv.monitor_port)
            for i in range(250):
                srv.flow.advise("test", {"n": i})
            await asyncio.sleep(2.2)                        # (two ticks, no page)
            srv.flow.advise("late", {"who": "bad\ud800name"})
            async with httpx.AsyncClient(base_url=base, timeout=10) as c:
                r = await c.get("/console/api/advisories")
                assert r.status_code == 200, r.text
                rows = r.json()["rows"]
                assert rows[0]["kind"] == "late" and "ud800name" in json.dumps(rows[0]["body"])
                assert len([a for a in rows if a["kind"] == "test"]) == ADVISORIES_PER_TICK
                async with c.stream("GET", "/console/feed") as r:
                    assert r.status_code == 200
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            hello = json.loads(line[6:])
                            break
            assert hello["advisories"][-1]["kind"] == "late"

    asyncio.run(main())


def test_odd_query_values_are_named_or_taken_in_range(server):
    srv = server
    for path, status, words in (
            ("/console/api/overview?points=%C2%B2", 400, "points must be a positive integer"),
            ("/console/api/overview?points=" + "9" * 5000, 400, "points must be"),
            ("/console/api/overview?points=0", 400, "points must be"),
            ("/console/api/streams?acc=nope", 404, "no account 'nope' (accounts are off)"),
            ("/console/api/consumers?acc=nope", 404, "no account 'nope'"),
            ("/console/api/catalog?acc=nope", 404, "no account 'nope'"),
            ("/console/tail/xs?from=-5", 400, "'from' must be"),
            ("/console/tail/xs?from=9999999999999999999", 400, "'from' must be")):
        with httpx.Client(base_url=srv.base, timeout=10) as c:
            r = c.get(path)
        assert r.status_code == status, (path, r.text)
        assert words in r.json()["error"]["message"], (path, r.text)
    with httpx.Client(base_url=srv.base, timeout=10) as c:
        assert len(c.get("/console/api/overview?points=2").json()["history"]) <= 2
        assert c.get("/console/api/streams?acc=$G").status_code == 200
    # a time before 1970 or past 2262: from the first event, or from the next one
    with httpx.Client() as c:
        for i in range(3):
            r = c.post("http://127.0.0.1:{}/events/xss.t".format(srv.http_port),
                       content=b"%d" % i, headers={
                           "content-type": "text/plain", "ce-id": "t%d" % i, "ce-source": "/t",
                           "ce-type": "t", "ce-specversion": "1.0"})
            assert r.status_code == 202, r.text
    for when, seq in (("0001-01-01T00:00:00%2B01:00", 1), ("1900-01-01T00:00:00Z", 1),
                      ("2300-01-01T00:00:00Z", 4), ("9999-12-31T23:59:59-23:59", 4)):
        lines = _lines(srv.base, "/console/tail/xs?from=" + when,
                       lambda ls: any(x.startswith("data: ") for x in ls))
        start = json.loads([x for x in lines if x.startswith("data: ")][0][6:])
        assert start["seq"] == seq, (when, start)
    _log_clean(srv)


def test_feeds_and_tails_leave_room_for_the_other_endpoints(server):
    srv = server
    socks = []
    try:
        for i in range(STREAMS_MAX):
            s = socket.create_connection(("127.0.0.1", srv.monitor_port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            path = b"/console/feed" if i % 2 else b"/console/tail/xs?from=first"
            s.sendall(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % path)
            s.settimeout(5)
            assert s.recv(64).startswith(b"HTTP/1.1 200"), i
            socks.append(s)
        with httpx.Client(base_url=srv.base, timeout=10) as c:
            for path in ("/console/feed", "/console/tail/xs"):
                with c.stream("GET", path) as r:
                    assert r.status_code == 503
                    assert "too many console feeds and tails open (48)" in \
                        json.loads(r.read())["error"]["message"]
            assert c.get("/healthz").status_code == 200
            assert c.get("/metrics").status_code == 200
            assert c.get("/console/api/streams").status_code == 200
            assert c.get("/varz").json()["console"]["feeds"] == STREAMS_MAX // 2
        for s in socks[:2]:
            s.close()
        deadline = time.monotonic() + 10
        while True:
            with httpx.Client(base_url=srv.base, timeout=10) as c:
                with c.stream("GET", "/console/feed") as r:
                    if r.status_code == 200 or time.monotonic() > deadline:
                        break
            time.sleep(0.2)
        assert r.status_code == 200
    finally:
        for s in socks:
            s.close()
    # the server stops with feeds and tails open: no error
    socks = []
    for path in (b"/console/feed", b"/console/tail/xs?from=new"):
        s = socket.create_connection(("127.0.0.1", srv.monitor_port))
        s.sendall(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % path)
        socks.append(s)
    time.sleep(1.5)
    srv.stop()
    for s in socks:
        s.close()
    _log_clean(srv)


def test_accounts_are_named_and_an_unknown_one_is_404(ffproc, tmp_path):
    cfg = tmp_path / "fastflow.toml"
    cfg.write_text('[auth]\nusers = [{user = "a", password = "pa", account = "acme"},\n'
                   '  {user = "g", password = "pg", account = "globex"}]\n\n'
                   '[accounts.acme]\nstreams = [{name = "orders", subjects = ["orders.>"]}]\n\n'
                   '[accounts.globex]\nstreams = [{name = "orders", subjects = ["orders.>"]}]\n')
    srv = ffproc("--config", cfg, monitor=True)
    srv.start()
    base = "http://127.0.0.1:{}".format(srv.monitor_port)

    async def publish():
        c = await fastflow.client.connect(srv.url, user="g", password="pg")
        for i in range(3):
            c.publish("orders.x", b"g%d" % i)
        await c.flush()
        await c.close()

    try:
        asyncio.run(publish())
        with httpx.Client(base_url=base, timeout=10) as c:
            rows = c.get("/console/api/streams").json()["rows"]
            assert sorted((r["account"], r["name"], r["events"]) for r in rows) == [
                ("acme", "orders", 0), ("globex", "orders", 3)]
            rows = c.get("/console/api/streams?acc=globex").json()["rows"]
            assert [(r["account"], r["events"]) for r in rows] == [("globex", 3)]
            for path, words in (("/console/api/streams?acc=nope", "no account 'nope'"),
                                ("/console/tail/orders?acc=nope", "no account 'nope'"),
                                ("/console/tail/orders", "no stream 'orders' in account '$G'")):
                r = c.get(path)
                assert r.status_code == 404 and words in r.json()["error"]["message"], r.text
        lines = _lines(base, "/console/tail/orders?acc=globex&from=first",
                       lambda ls: any(x.startswith("data: [") for x in ls))
        data = [json.loads(x[6:]) for x in lines if x.startswith("data: ")]
        assert data[0]["account"] == "globex" and data[0]["last_seq"] == 3
        assert [e["data"] for e in data[1]] == ["g0", "g1", "g2"]
    finally:
        srv.stop()
    _log_clean(srv)
