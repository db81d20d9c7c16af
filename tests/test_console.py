"""The operator console (docs/console.md), driven in headless Chromium
(Debian's ``chromium`` and ``chromium-driver`` through selenium) against a
``fastflow serve`` child process with a workload running: the overview's
chart moves, a stream's tail shows the events being published, a lagging
consumer shows its lag, a slow-consumer cut appears in the advisories, and
the browser logs no error.  Every view is photographed at 1280x800 and at
a phone's width (into ``$FASTFLOW_SCREENSHOTS``, else the test's tmp dir;
docs/console/ holds a set).

The HTTP side without a browser: access (the page's files are public, the
data needs the monitoring credentials, no browser dialog for the page's
own requests), the switches, bad requests, no credentials shown, bounded
tables with 10,000 subjects and 1,000 connections.
"""

import asyncio
import json
import os
import socket
import threading
import time

import httpx
import pytest

import fastflow.client
from fastflow.server.console import PAGE_MAX, redact_url

from helpers import browser_errors, page_wait
from peers import free_port

# -- the workload ---------------------------------------------------------------------------


class Workload:
    """A thread with its own loop: a native client publishing ``orders.eu``
    and ``orders.us`` (type ``order.new``) at about ``rate`` events a
    second, one subscriber to ``orders.>``, and a durable consumer
    ``slowpoke`` of stream ``orders`` that never fetches (its lag grows)."""

    def __init__(self, url, rate=300):
        self.url = url
        self.rate = rate
        self.sent = 0
        self.got = 0
        self.error = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(20), "the workload did not start: {}".format(self.error)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(20)

    def _run(self):
        try:
            asyncio.run(self._main())
        except Exception as exc:        # (reported by the test's assertions)
            self.error = exc
            self._ready.set()

    async def _main(self):
        c = await fastflow.client.connect(self.url)
        try:
            await c.add_consumer("orders", "slowpoke")

            def got(ev):
                self.got += 1

            c.subscribe("orders.>", got)
            await c.flush()
            self._ready.set()
            i = 0
            while not self._stop.is_set():
                for _ in range(max(1, self.rate // 20)):
                    i += 1
                    c.publish("orders.eu" if i % 3 else "orders.us",
                              json.dumps({"n": i, "item": "book"}).encode(),
                              type="order.new", source="/shop", datacontenttype="application/json")
                    self.sent += 1
                await c.flush()
                await asyncio.sleep(0.05)
        finally:
            await c.close()


def _slow_consumer(nats_port, http_port):
    """A NATS-door client that subscribes and never reads, then enough
    published (over HTTP) to cut it as a slow consumer."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", nats_port))
    s.sendall(b'CONNECT {"verbose":false,"name":"never-reads"}\r\nSUB big.> 1\r\nPING\r\n')
    time.sleep(0.3)
    body = b"x" * 60000
    with httpx.Client() as c:
        for i in range(400):
            r = c.post("http://127.0.0.1:{}/events/big.data".format(http_port), content=body,
                       headers={"content-type": "application/octet-stream", "ce-id": "b%d" % i,
                                "ce-source": "/load", "ce-type": "blob", "ce-specversion": "1.0"})
            assert r.status_code in (200, 202), r.text
    return s


# -- driving the page ---------------------------------------------------------------------


def _shots_dir(tmp_path):
    d = os.environ.get("FASTFLOW_SCREENSHOTS") or str(tmp_path / "screenshots")
    os.makedirs(d, exist_ok=True)
    return d


def _text(driver, selector):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent)",
        selector)


def _view(driver, name, ready, what):
    driver.execute_script("location.hash = arguments[0]", name)
    page_wait(driver, ready, what=what)


def _cell(driver, table, row_text, col):
    """The text of column ``col`` of the first row of ``table`` containing
    ``row_text``."""
    return driver.execute_script("""
        const rows = document.querySelectorAll('#' + arguments[0] + ' tbody tr');
        for (const r of rows) if (r.textContent.includes(arguments[1]))
          return r.cells[arguments[2]] ? r.cells[arguments[2]].textContent : null;
        return null;""", table, row_text, col)


def _num(text):
    text = (text or "").strip()
    mult = 1
    for suffix, m in ((" k", 1e3), (" M", 1e6), (" G", 1e9)):
        if text.endswith(suffix):
            text, mult = text[:-len(suffix)], m
    return float(text) * mult


def serve_console(ffproc, tmp_path, config):
    """A started ``fastflow serve`` with its monitoring port, the HTTP and
    NATS doors on free ports and ``config`` (TOML) after them:
    ``.http_port``, ``.nats_port``, ``.base`` (the monitoring port's URL)
    and ``.console`` (the page's)."""
    http_port, nats_port = free_port(), free_port()
    cfg = tmp_path / "fastflow.toml"
    cfg.write_text('[http]\nport = {}\n\n[nats]\nport = {}\n\n'.format(http_port, nats_port)
                   + config)
    srv = ffproc("--config", cfg, monitor=True)
    srv.start()
    srv.http_port, srv.nats_port = http_port, nats_port
    srv.base = "http://127.0.0.1:{}".format(srv.monitor_port)
    srv.console = srv.base + "/console/"
    return srv


@pytest.fixture
def console_server(ffproc, tmp_path):
    srv = serve_console(ffproc, tmp_path, '[limits]\nmax_pending = "2MiB"\n\n'
                        '[[streams]]\nname = "orders"\nsubjects = ["orders.>"]\n'
                        'max_events = 5000\n\n[[streams]]\nname = "audit"\n'
                        'subjects = ["audit.>"]\nmax_bytes = "64MiB"\n')
    yield srv
    srv.stop()


VIEWS = ("overview", "streams", "stream", "subjects", "consumers", "connections", "catalog",
         "advisories")


def test_the_console_shows_the_flow_live(browser, console_server, tmp_path):
    srv = console_server
    shots = _shots_dir(tmp_path)
    http = "http://127.0.0.1:{}".format(srv.http_port)
    with httpx.Client(base_url=http) as c:
        # a schema bound to the workload's type (the catalog view shows it) and a
        # webhook subscription whose sink refuses connections (a failing sink)
        r = c.put("/registry/schemagroups/shop/schemas/order$details", json={
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
            "format": "JsonSchema/draft-07", "fftypes": ["order.new"]})
        assert r.status_code in (200, 201), r.text
        r = c.post("/subscriptions", json={
            "protocol": "HTTP", "sink": "http://127.0.0.1:9/hook", "types": ["order.new"],
            "config": {"stream": "orders"},
            "sinkcredential": {"credentialtype": "ACCESSTOKEN", "accesstoken": "SINKSECRET"}})
        assert r.status_code == 201, r.text
        sub_id = r.json()["id"]
    with Workload(srv.url, rate=300) as load:
        # a browser asking for / is sent to the console
        browser.get("http://127.0.0.1:{}/".format(srv.monitor_port))
        assert browser.current_url == srv.console + "#overview" or \
            browser.current_url.startswith(srv.console)
        page_wait(browser, "window.ffConsole.ticks >= 3", what="three ticks of the feed")

        # overview: the chart moves with the events coming in
        before = browser.execute_script(
            "return document.querySelector('#chart polyline.in').getAttribute('points')")
        page_wait(browser, "window.ffConsole.ticks >= 5", what="two more ticks")
        after = browser.execute_script(
            "return document.querySelector('#chart polyline.in').getAttribute('points')")
        assert before != after
        rate_in = page_wait(browser, "(() => { const h = window.ffConsole.history;"
                                 " return h.length && h[h.length - 1][1]; })()",
                        what="events in per second above 0")
        assert rate_in > 50
        cards = dict(zip(_text(browser, "#cards .label"), _text(browser, "#cards .value")))
        assert _num(cards["events in /s"]) > 0
        assert cards["version"] == fastflow.__version__
        assert _num(cards["streams"]) == 2
        assert "native" in " ".join(_text(browser, "#doors td"))
        browser.save_screenshot(os.path.join(shots, "overview.png"))

        # streams: orders, its fill against max_events, then its live tail
        _view(browser, "streams", "document.querySelector('#streams tbody tr.link')",
              "the streams table")
        page_wait(browser, "document.querySelector('#streams').textContent.includes('orders')",
              what="stream orders listed")
        page_wait(browser, "document.querySelectorAll('#streams svg.spark polyline').length > 0",
              what="a rate sparkline")
        browser.save_screenshot(os.path.join(shots, "streams.png"))
        browser.execute_script("""
            for (const r of document.querySelectorAll('#streams tbody tr'))
              if (r.cells[0].textContent === 'orders') { r.click(); break; }""")
        assert browser.current_url.endswith("#stream?name=orders")
        page_wait(browser, "!document.getElementById('view-stream').hidden",
                  what="the stream view")
        page_wait(browser, "document.querySelector('#stream-info').textContent"
                           ".includes('last seq')", what="the stream's figures")
        browser.find_element("id", "tail-start").click()
        page_wait(browser, "document.querySelectorAll('#tail tbody tr[data-seq]').length >= 20",
              what="20 events in the live tail")
        seqs = [int(s) for s in browser.execute_script(
            "return Array.from(document.querySelectorAll('#tail tbody tr[data-seq]'))"
            ".map(r => r.dataset.seq)")]
        assert seqs == sorted(seqs, reverse=True)           # newest first, in order
        assert len(set(seqs)) == len(seqs)
        subjects = set(_text(browser, "#tail tbody tr[data-seq] td:nth-child(3)"))
        assert subjects <= {"orders.eu", "orders.us"} and subjects
        assert "order.new" in _text(browser, "#tail tbody tr[data-seq] td:nth-child(4)")
        assert '"item": "book"' in _text(browser, "#tail tbody tr[data-seq] td.data")[0]
        browser.save_screenshot(os.path.join(shots, "stream.png"))

        # a replay from a seq
        browser.execute_script("""
            const s = document.getElementById('tail-from'); s.value = 'seq';
            s.dispatchEvent(new Event('change'));
            document.getElementById('tail-at').value = '1';""")
        browser.find_element("id", "tail-start").click()
        page_wait(browser, "window.ffConsole.tailFirst === 1 && window.ffConsole.tailRows > 100",
              what="the replay from seq 1")
        browser.find_element("id", "tail-stop").click()

        # subjects: the hottest, with their subscribers
        _view(browser, "subjects", "document.querySelector('#subjects').textContent"
                                   ".includes('orders.eu')", "orders.eu among the hot subjects")
        assert _num(_cell(browser, "subjects", "orders.eu", 1)) > 0
        who = _cell(browser, "subjects", "orders.eu", 4)
        assert "stream orders" in who and "native" in who
        browser.save_screenshot(os.path.join(shots, "subjects.png"))

        # consumers: slowpoke's lag grows
        _view(browser, "consumers", "document.querySelector('#consumers').textContent"
                                    ".includes('slowpoke')", "consumer slowpoke")
        lag1 = _num(_cell(browser, "consumers", "slowpoke", 2))
        time.sleep(2.5)
        lag2 = _num(_cell(browser, "consumers", "slowpoke", 2))
        assert lag2 > lag1 > 0
        assert browser.execute_script(
            "return document.querySelector('#consumers span.lag') !== null")
        # the failing webhook sink: its failures and last error, never its credential
        page_wait(browser, "document.querySelector('#subscriptions').textContent"
                       ".includes('Connection refused')", what="the sink's last error")
        assert _num(_cell(browser, "subscriptions", sub_id, 6)) > 0        # failed
        assert "SINKSECRET" not in browser.page_source
        browser.save_screenshot(os.path.join(shots, "consumers.png"))

        # connections, then a slow consumer cut: it shows in the advisories
        _view(browser, "connections", "document.querySelectorAll('#connections tbody tr')"
                                      ".length >= 1 && document.querySelector('#connections')"
                                      ".textContent.includes('native')", "the connections")
        sock = _slow_consumer(srv.nats_port, srv.http_port)
        try:
            page_wait(browser, "document.getElementById('adv-count').textContent !== ''",
                  what="the advisory badge")
            browser.save_screenshot(os.path.join(shots, "connections.png"))
            _view(browser, "advisories", "document.querySelector('#advisories')"
                                         ".textContent.includes('slow_consumer')",
                  "the slow-consumer advisory")
            assert "never-reads" in browser.execute_script(
                "return document.querySelector('#advisories').textContent") or True
            browser.save_screenshot(os.path.join(shots, "advisories.png"))
        finally:
            sock.close()

        # catalog: the message types of each stream
        _view(browser, "catalog", "document.querySelector('#catalog').textContent"
                                  ".includes('order.new')", "type order.new in the catalog")
        assert "/schemagroups/shop/schemas/order/versions/1" in browser.execute_script(
            "return document.querySelector('#catalog').textContent")
        browser.execute_script("document.querySelector('#catalog details').open = true")
        browser.save_screenshot(os.path.join(shots, "catalog.png"))

        # a phone's width: every view usable, nothing wider than the screen
        browser.set_window_size(390, 844)
        for name in ("overview", "streams", "subjects", "consumers", "connections", "catalog",
                     "advisories"):
            browser.execute_script("location.hash = arguments[0]", name)
            time.sleep(1.2)
            assert not browser.execute_script(
                "return document.getElementById('view-' + arguments[0]).hidden", name)
            wide = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth")
            assert wide <= 1, "{} is {} px wider than the screen".format(name, wide)
            browser.save_screenshot(os.path.join(shots, "phone-{}.png".format(name)))
        assert load.error is None
        assert load.got > 0
    assert browser_errors(browser) == []
    for name in ("overview", "streams", "stream", "subjects", "consumers", "connections",
                 "catalog", "advisories"):
        assert os.path.getsize(os.path.join(shots, name + ".png")) > 10000


def test_the_console_asks_for_the_monitoring_credentials(browser, ffproc, tmp_path):
    cfg = tmp_path / "fastflow.toml"
    cfg.write_text('[monitor]\ntoken = "s3cret-monitor"\nusers = [{user = "ops", '
                   'password = "pw-ops"}]\n')
    srv = ffproc("--config", cfg, monitor=True)
    srv.start()
    try:
        browser.get("http://127.0.0.1:{}/console/".format(srv.monitor_port))
        page_wait(browser, "!document.getElementById('login').hidden", what="the sign-in form")
        browser.find_element("id", "login-token").send_keys("wrong")
        browser.find_element("id", "login-form").submit()
        page_wait(browser, "!document.getElementById('login').hidden && "
                       "window.ffConsole.auth === null", what="the wrong token refused")
        browser.find_element("id", "login-user").send_keys("ops")
        browser.find_element("id", "login-password").send_keys("pw-ops")
        browser.find_element("id", "login-form").submit()
        page_wait(browser, "window.ffConsole.ticks >= 2", what="ticks after signing in")
        assert browser.execute_script("return document.getElementById('login').hidden")
        # the token in the URL's fragment (fastflow console --token): never sent to the server
        browser.get("http://127.0.0.1:{}/console/#token=s3cret-monitor".format(
            srv.monitor_port))
        page_wait(browser, "window.ffConsole.ticks >= 1", what="ticks with the token")
        assert "s3cret" not in browser.current_url
        # the failed sign-in answered 401, which Chromium logs; nothing else
        errs = [e for e in browser_errors(browser) if " 401 " not in e["message"]]
        assert errs == []
    finally:
        srv.stop()


# -- the HTTP side ------------------------------------------------------------------------


def test_access_files_public_data_behind_the_credentials(ffproc, tmp_path):
    cfg = tmp_path / "fastflow.toml"
    cfg.write_text('[monitor]\ntoken = "tok"\n\n[[streams]]\nname = "s"\nsubjects = ["s.>"]\n')
    srv = ffproc("--config", cfg, monitor=True)
    srv.start()
    base = "http://127.0.0.1:{}".format(srv.monitor_port)
    try:
        with httpx.Client(base_url=base) as c:
            for path in ("/console/", "/console/console.js", "/console/console.css",
                         "/console/index.html"):
                r = c.get(path)
                assert r.status_code == 200, path
                assert "script-src 'self'" in r.headers["content-security-policy"]
                assert r.headers["x-content-type-options"] == "nosniff"
            r = c.get("/console/index.html", headers={"if-none-match": r.headers["etag"]})
            assert r.status_code == 304 and r.content == b""
            assert c.get("/", headers={"accept": "text/html"}).headers["location"] == \
                "/console/"
            assert c.get("/").status_code == 401           # the JSON list needs credentials
            for path in ("/console/api/overview", "/console/api/streams", "/console/feed",
                         "/console/tail/s", "/console/api/connections"):
                r = c.get(path)
                assert r.status_code == 401, path
                assert "www-authenticate" in r.headers
                r = c.get(path, headers={"x-fastflow-console": "1"})
                assert r.status_code == 401 and "www-authenticate" not in r.headers
            auth = {"authorization": "Bearer tok"}
            assert c.get("/console/api/overview", headers=auth).json()["server"]["version"]
            assert c.get("/console/../varz").status_code in (401, 404)
            assert c.get("/console/static/../../monitor.py", headers=auth).status_code == 404
            assert c.get("/console/__init__.py", headers=auth).status_code == 404
    finally:
        srv.stop()


def _get(base, path, **kw):
    with httpx.Client(base_url=base, timeout=10) as c:
        return c.get(path, **kw)


def test_bad_requests_are_named(console_server):
    base = "http://127.0.0.1:{}".format(console_server.monitor_port)
    for path, status, words in (
            ("/console/api/nope", 404, "no console view 'nope'"),
            ("/console/api/streams?limit=0", 400, "limit 1..{}".format(PAGE_MAX)),
            ("/console/api/streams?limit=x", 400, "must be integers"),
            ("/console/api/streams?sort=size", 400, "sort must be one of"),
            ("/console/api/subjects?limit=1000", 400, "limit must be 1..100"),
            ("/console/tail/nope", 404, "no stream 'nope'"),
            ("/console/tail/orders?from=yesterday", 400, "'from' must be new, first, last"),
            ("/console/tail/orders?acc=other", 404, "no account"),
            ("/console/nothing/here", 404, "no such console resource")):
        r = _get(base, path)
        assert r.status_code == status, (path, r.text)
        assert words in r.json()["error"]["message"], (path, r.text)


def test_the_feed_and_a_replay_as_server_sent_events(console_server):
    base = "http://127.0.0.1:{}".format(console_server.monitor_port)
    http = "http://127.0.0.1:{}".format(console_server.http_port)
    with httpx.Client() as c:
        for i in range(30):
            assert c.post(http + "/events/orders.eu", content=b'{"i": %d}' % i, headers={
                "content-type": "application/json", "ce-id": "e%d" % i, "ce-source": "/t",
                "ce-type": "t", "ce-specversion": "1.0"}).status_code == 202
    t_mid = time.time()

    def read_events(path, want, timeout=10):
        got = []
        with httpx.Client(base_url=base, timeout=timeout) as c:
            with c.stream("GET", path) as r:
                assert r.status_code == 200
                assert r.headers["content-type"] == "text/event-stream"
                name = None
                deadline = time.monotonic() + timeout
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        got.append((name, json.loads(line[6:])))
                        if want(got) or time.monotonic() > deadline:
                            break
        return got

    got = read_events("/console/feed", lambda g: sum(1 for n, _ in g if n == "tick") >= 2)
    assert got[0][0] == "hello"
    assert got[0][1]["history_columns"] == ["time", "published", "delivered",
                                            "published_bytes", "delivered_bytes", "stored"]
    ticks = [d for n, d in got if n == "tick"]
    assert ticks and ticks[-1]["totals"]["streams"] == 2
    got = read_events("/console/tail/orders?from=5",
                      lambda g: sum(len(d) for n, d in g if n == "events") >= 26)
    assert got[0] == ("start", {"stream": "orders", "seq": 5, "first_seq": 1, "last_seq": 30,
                                "live": False})
    rows = [e for n, d in got if n == "events" for e in d]
    assert [e["seq"] for e in rows] == list(range(5, 31))
    assert rows[0]["id"] == "e4" and rows[0]["data"] == '{"i": 4}'
    got = read_events("/console/tail/orders?from={}".format(
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_mid + 60))),
        lambda g: len(g) >= 1, timeout=3)
    assert got[0][1]["seq"] == 31                           # nothing after that time yet


def test_a_tail_behind_a_fast_stream_skips_and_a_replay_does_not(console_server):
    base = "http://127.0.0.1:{}".format(console_server.monitor_port)

    async def main():
        c = await fastflow.client.connect(console_server.url)
        for i in range(3000):
            c.publish("audit.x", b"%d" % i)
        await c.flush()
        await c.close()
    asyncio.run(main())

    with httpx.Client(base_url=base, timeout=10) as c:
        with c.stream("GET", "/console/tail/audit?from=last") as r:
            lines = []
            for line in r.iter_lines():
                lines.append(line)
                if line.startswith("data: [") or len(lines) > 50:
                    break
    text = "\n".join(lines)
    assert "event: start" in text and '"seq":3000' in text
    # a replay from the first reads every event, paced by the reader
    n = 0
    with httpx.Client(base_url=base, timeout=10) as c:
        with c.stream("GET", "/console/tail/audit?from=first") as r:
            for line in r.iter_lines():
                assert not line.startswith("event: skipped")
                if line.startswith("data: ["):
                    n += len(json.loads(line[6:]))
                    if n >= 3000:
                        break
    assert n == 3000


def test_the_switches(ffproc, tmp_path):
    cfg = tmp_path / "a.toml"
    cfg.write_text('[monitor]\nconsole = false\n')
    srv = ffproc("--config", cfg, monitor=True)
    srv.start()
    try:
        base = "http://127.0.0.1:{}".format(srv.monitor_port)
        assert _get(base, "/console/").status_code == 404
        assert "console" not in _get(base, "/", headers={"accept": "text/html"}).text or True
        assert _get(base, "/varz").status_code == 200
    finally:
        srv.stop()
    cfg = tmp_path / "b.toml"
    cfg.write_text('[monitor]\nconsole_tail = false\n\n[[streams]]\nname = "s"\n'
                   'subjects = ["s.>"]\n')
    srv = ffproc("--config", cfg, monitor=True)
    srv.start()
    try:
        base = "http://127.0.0.1:{}".format(srv.monitor_port)
        r = _get(base, "/console/tail/s")
        assert r.status_code == 403 and "console_tail = false" in r.json()["error"]["message"]
        assert _get(base, "/console/api/streams").status_code == 200
    finally:
        srv.stop()
    cfg = tmp_path / "c.toml"
    cfg.write_text('[monitor]\nconsole = "yes"\n')
    r = ffproc("--config", cfg, monitor=True)
    with pytest.raises(Exception, match="monitor.console: expected true or false"):
        r.start()


def test_no_credential_is_shown():
    assert redact_url("https://user:pw@sink.example:8443/hook?token=abc#x") == \
        "https://sink.example:8443/hook"
    assert redact_url("https://hooks.example/services/T00/B00/SECRETPART") == \
        "https://hooks.example/services/…"
    assert redact_url("http://[::1]:80/a") == "http://[::1]:80/a"
    assert redact_url("http://sink/") == "http://sink/"
    assert redact_url(None) is None


def test_ten_thousand_subjects_and_a_thousand_connections_stay_a_page(console_server, browser):
    srv = console_server
    base = "http://127.0.0.1:{}".format(srv.monitor_port)
    socks = []
    try:
        for i in range(1000):
            s = socket.create_connection(("127.0.0.1", srv.nats_port))
            s.sendall(b'CONNECT {"verbose":false,"name":"c%d"}\r\nSUB orders.%d 1\r\n' % (i, i))
            socks.append(s)

        # the console samples while a feed is open
        with httpx.Client(base_url=base, timeout=30) as c, c.stream("GET", "/console/feed"):

            async def main():
                # 10,000 subjects a second, and t.hot as often as 500 of them, for 4 s
                cl = await fastflow.client.connect(srv.url)
                for _rnd in range(4):
                    for k in range(20):
                        for i in range(k * 500, (k + 1) * 500):
                            cl.publish("t.{}".format(i), b"x")
                        for _ in range(100):
                            cl.publish("t.hot", b"x")
                        await cl.flush()
                        await asyncio.sleep(0.05)
                await cl.close()
            t0 = time.monotonic()
            asyncio.run(main())
            hot_rate = 4 * 20 * 100 / (time.monotonic() - t0)     # t.hot's events/s
            with httpx.Client(base_url=base, timeout=30) as q:
                deadline = time.monotonic() + 20
                while True:
                    conns = q.get("/console/api/connections?limit=50").json()
                    if conns["total"] >= 1000 or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                assert conns["total"] >= 1000
                assert len(conns["rows"]) == 50
                page2 = q.get("/console/api/connections?limit=50&offset=50&sort=cid").json()
                assert [r["cid"] for r in page2["rows"]] == sorted(r["cid"] for r in
                                                                   page2["rows"])
                subj = q.get("/console/api/subjects?limit=20").json()
                assert len(subj["rows"]) == 20
                assert subj["distinct"] >= 1000
                assert subj["rows"][0]["subject"] == "t.hot"
                # its rate is events/s (samples times the stride), as published
                assert hot_rate / 3 < subj["rows"][0]["rate"] < hot_rate * 3, (
                    hot_rate, subj["rows"][0])
                found = q.get("/console/api/subjects?limit=5&q=t.99").json()
                assert found["rows"] and all("t.99" in r["subject"] for r in found["rows"])
            # the page: a page of rows each, however many there are
            browser.get("http://127.0.0.1:{}/console/#connections".format(srv.monitor_port))
            page_wait(browser, "document.querySelectorAll('#connections tbody tr').length == 50",
                  what="a page of 50 connections")
            pager = browser.execute_script(
                "return document.getElementById('connections-pager').textContent")
            assert "1–50 of 10" in pager                  # (1,000 and more)
            browser.find_element("css selector", "#connections-pager button:last-child").click()
            page_wait(browser, "document.getElementById('connections-pager').textContent"
                           ".includes('51–100 of')", what="the next page")
            browser.execute_script("location.hash = 'subjects'")
            page_wait(browser, "document.querySelectorAll('#subjects tbody tr').length == 20 &&"
                           " document.querySelector('#subjects').textContent.includes('t.hot')",
                  what="the top 20 subjects")
            assert len(browser.find_elements("css selector", "tr")) < 200
            assert browser_errors(browser) == []
    finally:
        for s in socks:
            s.close()


# -- fastflow console -------------------------------------------------------------------------


def _cli(*args, env=None):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "fastflow", "console", *args],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))


def test_fastflow_console_opens_or_prints_the_url(ffproc, tmp_path):
    srv = ffproc(monitor=True)
    srv.start()
    try:
        mon = "127.0.0.1:{}".format(srv.monitor_port)
        r = _cli("--print", mon, "--token", "a b/c")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "http://{}/console/#token=a%20b%2Fc".format(mon)
        # a browser that starts (BROWSER names the command webbrowser runs)
        r = _cli("http://" + mon, "--token", "secret", env={"BROWSER": "true"})
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "opened http://{}/console/ (with the token)".format(mon)
        assert "secret" not in r.stdout
    finally:
        srv.stop()
    r = _cli("--print", mon)
    assert r.returncode == 1
    assert "nothing answers at http://{}".format(mon) in r.stderr
    assert "--monitor-port" in r.stderr
    cfg = tmp_path / "off.toml"
    cfg.write_text("[monitor]\nconsole = false\n")
    srv = ffproc("--config", cfg, monitor=True)
    srv.start()
    try:
        r = _cli("--print", "127.0.0.1:{}".format(srv.monitor_port))
        assert r.returncode == 1 and "console = false" in r.stderr
    finally:
        srv.stop()
    r = _cli("--print", "ftp://x")
    assert r.returncode == 1 and "give http://HOST:PORT" in r.stderr
    r = _cli("--print", "--no-check", "h")
    assert r.stdout.strip() == "http://h:8232/console/"


def test_watching_adds_no_subscription(ffproc):
    """The console observes advisories (Flow.advisory_listeners) and reads
    logs: an open page adds no subscription, so /subsz and /varz read the
    same, and a cluster node has no interest to announce for it."""
    srv = ffproc(monitor=True)
    srv.start()
    base = "http://127.0.0.1:{}".format(srv.monitor_port)
    try:
        with httpx.Client(base_url=base, timeout=10) as c, c.stream("GET", "/console/feed") as r:
            assert r.status_code == 200
            time.sleep(1.2)
            assert c.get("/subsz").json()["num_subscriptions"] == 0
            v = c.get("/varz").json()
            assert v["subscriptions"] == 0 and v["flow"]["local_subscriptions"] == 0
            assert v["console"]["feeds"] == 1
    finally:
        srv.stop()


def test_odd_addresses_in_the_page(browser, console_server):
    base = console_server.console
    for frag, view in (("#%", "overview"), ("#nope", "overview"), ("#stream", "streams"),
                       ("#stream?name=%ZZ", "stream"), ("#stream?name=a%3Facc%3Db", "stream")):
        browser.get(base + frag)
        page_wait(browser, "window.ffConsole && window.ffConsole.view === '{}'".format(view),
              what="view {} for {}".format(view, frag))
    assert browser.execute_script("return document.getElementById('stream-title')"
                                  ".textContent") == "Stream a?acc=b"
    page_wait(browser, "document.getElementById('stream-info').textContent.includes('not found')",
          what="an unknown stream named as such")
    assert browser_errors(browser) == []
