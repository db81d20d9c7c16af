"""The web doors from a real browser: headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by selenium) opens a page the
test serves from another origin (so CORS is exercised), subscribes with
``WebSocket`` (subprotocol ``cloudevents.json``) and with ``EventSource``
on a file-backed stream, publishes with ``fetch()``, and the test checks
that every event arrived in order, including across a restart of the
server, which ``EventSource`` survives by reconnecting with
``Last-Event-ID``.

Skipped when Chromium or its driver is missing, unless
FASTFLOW_REQUIRE_PEERS=1 (CI) makes that a failure.
"""

import http.server
import json
import threading

import httpx
import pytest

from helpers import page_wait
from peers import free_port

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>fastflow web doors</title></head>
<body><script>
const FF = "http://127.0.0.1:%(port)d";
window.ws_got = []; window.sse_got = []; window.sse_ids = []; window.errors = [];
window.ws_open = false; window.sse_open = 0;
const ws = new WebSocket("ws://127.0.0.1:%(port)d/ws?subject=browser.%%3E",
                         "cloudevents.json");
ws.onopen = () => { window.ws_open = true; };
ws.onmessage = (m) => {
  try {
    const ev = JSON.parse(m.data);
    if (ev.specversion) window.ws_got.push(ev.id);
  } catch (e) { window.errors.push("ws: " + e); }
};
ws.onerror = () => window.errors.push("ws error");
const es = new EventSource(FF + "/streams/browser/events?start=first");
es.onopen = () => { window.sse_open += 1; };
es.onmessage = (m) => {
  const ev = JSON.parse(m.data);
  window.sse_got.push(ev.id); window.sse_ids.push(m.lastEventId);
};
window.publish = async (from, to) => {
  for (let i = from; i < to; i++) {
    const r = await fetch(FF + "/events/browser.page", {method: "POST",
      headers: {"content-type": "application/cloudevents+json"},
      body: JSON.stringify({specversion: "1.0", id: "b" + i, source: "/browser",
                            type: "browser.click", data: {i: i}})});
    if (r.status !== 202) window.errors.push("POST " + i + ": " + r.status);
  }
  return true;
};
</script></body></html>
"""


@pytest.fixture
def page_server():
    """``url, pages = page_server()``: serves ``pages["/"]`` at / from
    another origin than fastflow's (set the page once the URL is known)."""
    servers = []

    def serve():
        pages = {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = pages.get(self.path, "").encode()
                self.send_response(200 if self.path in pages else 404)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return "http://127.0.0.1:{}/".format(srv.server_address[1]), pages

    yield serve
    for s in servers:
        s.shutdown()
        s.server_close()


def test_browser_websocket_eventsource_and_fetch_across_a_restart(browser, page_server, ffproc,
                                                                    tmp_path):
    http_port = free_port()
    url, pages = page_server()
    origin = url.rstrip("/")
    cfg = tmp_path / "fastflow.toml"
    cfg.write_text('[http]\nport = {}\ncors_origins = ["{}"]\n\n[[streams]]\nname = "browser"\n'
                   'subjects = ["browser.>"]\n'.format(http_port, origin))
    srv = ffproc("--config", cfg, "--data-dir", tmp_path / "data")
    srv.start()
    pages["/"] = PAGE % {"port": http_port}
    browser.get(url)
    page_wait(browser, "window.ws_open && window.sse_open > 0",
              what="WebSocket and EventSource open")
    browser.execute_async_script("const done = arguments[0]; window.publish(0, 40).then(done);")
    want = ["b{}".format(i) for i in range(40)]
    page_wait(browser, "window.ws_got.length >= 40 && window.sse_got.length >= 40",
          what="40 events on both")
    assert browser.execute_script("return window.ws_got") == want
    assert browser.execute_script("return window.sse_got") == want
    assert browser.execute_script("return window.sse_ids") == [str(i) for i in range(1, 41)]

    # a restart: EventSource reconnects by itself and resumes after its
    # Last-Event-ID; what was published while it was away arrives once
    srv.stop()
    srv.start()
    with httpx.Client() as c:
        for i in range(40, 60):
            r = c.post("http://127.0.0.1:{}/events/browser.page".format(http_port),
                       headers={"content-type": "application/cloudevents+json"},
                       content=json.dumps({"specversion": "1.0", "id": "b{}".format(i),
                                           "source": "/browser", "type": "browser.click"}))
            assert r.status_code == 202
    page_wait(browser, "window.sse_got.length >= 60", timeout=30, what="the SSE resume")
    want = ["b{}".format(i) for i in range(60)]
    assert browser.execute_script("return window.sse_got") == want
    assert browser.execute_script("return window.sse_ids") == [str(i) for i in range(1, 61)]
    assert browser.execute_script("return window.sse_open") >= 2
    assert browser.execute_script("return window.errors") == []
    srv.stop()
