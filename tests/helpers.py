"""Plain helpers that several test modules share: bounded waits, the
command line as a subprocess, parser feeding, random cuts of a byte stream
and a raw TCP connection to a door that the tests read by hand.

Fixtures are in conftest.py, peer processes in peers.py; a test module
imports what it uses from here (``from helpers import wait_until``)."""

import asyncio
import socket
import subprocess
import sys
import time

from hypothesis import strategies as st

from peers import REPO


async def wait_until(pred, timeout=5.0, what="the condition"):
    """Returns once ``pred()`` is true; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after {} s waiting for {}".format(timeout, what))
        await asyncio.sleep(0.005)


def page_wait(driver, expr, timeout=30.0, what=None):
    """The value of the JavaScript expression ``expr`` in the page of
    ``driver`` (selenium) once it is truthy, polled; fails after
    ``timeout`` seconds naming ``what`` and the browser's errors."""
    deadline = time.monotonic() + timeout
    while True:
        v = driver.execute_script("return " + expr)
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for {} ({!r}); browser errors: {}".format(
                what or expr, v, browser_errors(driver)))
        time.sleep(0.05)


def browser_errors(driver):
    """The browser's console messages at level SEVERE since the last call
    (JavaScript errors, failed loads)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def cli(*args, timeout=30, input=None):
    """``python -m fastflow *args`` run to its end in the repository: the CompletedProcess
    (text output captured)."""
    return subprocess.run([sys.executable, "-m", "fastflow"] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, input=input, cwd=REPO)


def feed_all(p, chunks):
    """Everything a parser hands back for ``chunks``, fed one after the other."""
    out = []
    for c in chunks:
        out.extend(p.feed(c))
    return out


def chunked(draw, data, most_cuts=8):
    """``data`` cut at up to ``most_cuts`` random points (``draw``: hypothesis's
    ``st.data().draw``); empty data is one empty piece."""
    if not data:
        return [data]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=most_cuts)))
    out = []
    prev = 0
    for c in cuts + [len(data)]:
        out.append(data[prev:c])
        prev = c
    return out


class RawConnection:
    """A TCP connection to a door of a server on 127.0.0.1 that speaks the
    protocol by hand.  A subclass cuts the received bytes into items
    (``_cut``: an item, or None while it is incomplete) with its own code,
    independently of fastflow's parsers, and may hold some back
    (``_keep``)."""

    what = "item"                       # what an item is called in a timeout's message

    def __init__(self, sock):
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.buf = b""
        self.eof = False
        self.info = None

    @classmethod
    async def open(cls, port, rcvbuf=None, nodelay=False, **kw):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if nodelay:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(
                s, ("127.0.0.1", port)), 5)
        except BaseException:
            s.close()
            raise
        return cls(s, **kw)

    def close(self):
        self.sock.close()

    async def send(self, data):
        await asyncio.wait_for(self.loop.sock_sendall(self.sock, data), 5)

    async def _fill(self, timeout):
        """Reads what the server wrote (at most ``timeout`` seconds) and returns it."""
        try:
            data = await asyncio.wait_for(self.loop.sock_recv(self.sock, 1 << 16), timeout)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
        self.buf += data
        return data

    def _cut(self):
        raise NotImplementedError

    async def _keep(self, item):
        """Whether ``next`` hands ``item`` out (a subclass may answer it instead)."""
        return True

    def _timeout_message(self, timeout):
        return "no {} within {} s".format(self.what, timeout)

    async def next(self, timeout=5.0):
        """The next item (None once the server closed the connection)."""
        deadline = time.monotonic() + timeout
        while True:
            item = self._cut()
            if item is not None:
                if await self._keep(item):
                    return item
                continue
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError(self._timeout_message(timeout))
            await self._fill(left)
