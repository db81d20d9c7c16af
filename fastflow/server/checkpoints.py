"""Signed checkpoints of the server's file-backed streams (docs/provenance.md).

Every ``checkpoint_events`` events or ``checkpoint_interval`` seconds,
whichever comes first, and only when the stream changed, the server signs
``{stream, seq, head, time}`` (the stream's hash chain head, see
``Stream.checkpoint``) with its Ed25519 key, appends it to the stream's
``checkpoints.jsonl`` and publishes it as a CloudEvent on
``$SYS.stream.<name>.checkpoint`` (an account's stream:
``$SYS.account.<account>.stream.<name>.checkpoint``), through the same
flow the advisories go to.  ``fastflow audit`` verifies them.

The key lives in the data directory: ``server.key`` (PKCS8 PEM, mode 0600,
made at the first start) and ``server.pub`` (its public key, PEM) beside
it.  The config: ``[provenance]`` ``checkpoint_events`` (0: no count
trigger), ``checkpoint_interval`` (seconds; 0: no time trigger); both 0:
no checkpoints.
"""

import json
import logging
import os
import time

from fastflow._files import atomic_write
from fastflow.errors import FastflowError

log = logging.getLogger("fastflow.server")

KEY_FILE = "server.key"
PUB_FILE = "server.pub"
POLL_MAX = 0.5  # seconds between two looks at the streams, at most
CHECKPOINT_TYPE = "io.fastflow.checkpoint"


def load_or_create_key(data_dir):
    """The server's Ed25519 private key from ``data_dir/server.key``, made
    (mode 0600, with ``server.pub`` beside it) when there is none."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = os.path.join(data_dir, KEY_FILE)
    pub = os.path.join(data_dir, PUB_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        fd = None
    except OSError as exc:
        raise FastflowError("cannot open the server key {}: {}".format(path, exc.strerror)) \
            from None
    if fd is not None:
        with os.fdopen(fd, "rb") as f:
            data = f.read(64 << 10)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise FastflowError("{}: not a PEM private key ({})".format(path, exc)) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise FastflowError("{}: not an Ed25519 private key".format(path))
        if os.stat(path).st_mode & 0o077:
            log.warning("the server key %s is readable by others (chmod 600 it)", path)
    else:
        os.makedirs(data_dir, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        atomic_write(path, key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
        log.info("provenance: made the server key %s", path)
    want = key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        with open(pub, "rb") as f:
            have = f.read(64 << 10)
    except OSError:
        have = None
    if have != want:
        tmp = pub + ".tmp"
        with open(tmp, "wb") as f:
            f.write(want)
        os.replace(tmp, pub)
    return key


class Checkpointer:
    """Signs the checkpoints of every file-backed stream of every account."""

    def __init__(self, server, key, every_events, interval):
        self.server = server
        self.key = key
        self.every_events = every_events
        self.interval = interval
        self.last = {}  # (account, stream) -> (seq, head, monotonic time) of the last one
        self.timer = None
        self.signed = 0
        self.errors = 0

    @classmethod
    def start(cls, server):
        """A running Checkpointer for ``server``, or None (no data dir, or
        both triggers 0)."""
        cfg = server.config
        if not cfg.data_dir or not (cfg.checkpoint_events or cfg.checkpoint_interval):
            return None
        cp = cls(server, load_or_create_key(cfg.data_dir), cfg.checkpoint_events,
                 cfg.checkpoint_interval)
        cp._schedule()
        return cp

    def _poll_every(self):
        return min(POLL_MAX, self.interval) if self.interval else POLL_MAX

    def _schedule(self):
        self.timer = self.server.loop.call_later(self._poll_every(), self._poll)

    def stop(self):
        """Cancel the timer; sign a last checkpoint of every changed stream."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.run(force=True)

    def _poll(self):
        self.timer = None
        try:
            self.run()
        finally:
            if not self.server.stopping:
                self._schedule()

    def run(self, force=False):
        """Checkpoint every stream that is due (``force``: every changed one)."""
        now = time.monotonic()
        for acct in self.server.accounts or ():
            for name, st in list(acct.flow.streams().items()):
                lg = st.log
                if lg.path is None or lg.closed:
                    continue
                key = (acct.name, name)
                seq, link = lg.chain_head()
                if link is None:
                    continue
                prev = self.last.get(key)
                if prev is None:
                    prev = self.last[key] = (0, None, now)
                if link == prev[1]:
                    continue            # unchanged since the last one
                due = force or (self.every_events and seq - prev[0] >= self.every_events) or \
                    (self.interval and now - prev[2] >= self.interval)
                if due:
                    self.sign(acct, st, now)

    def sign(self, acct, st, now=None):
        """Sign, store and publish the checkpoint of stream ``st`` now."""
        try:
            cp = st.checkpoint(self.key)
        except (OSError, FastflowError) as exc:
            self.errors += 1
            log.warning("stream %s: checkpoint not written: %s", st.name, exc)
            return None
        self.last[(acct.name, st.name)] = (cp["seq"], bytes.fromhex(cp["head"]),
                                           time.monotonic() if now is None else now)
        self.signed += 1
        flow = acct.flow
        to = flow.advisory_flow if flow.advisory_flow is not None else flow
        prefix = flow.advisory_prefix
        if prefix.endswith("advisory."):
            prefix = prefix[:-len("advisory.")]
        try:
            to.publish("{}stream.{}.checkpoint".format(prefix, st.name),
                       json.dumps(cp, sort_keys=True).encode(), type=CHECKPOINT_TYPE,
                       datacontenttype="application/json")
        except Exception as exc:        # e.g. a stream on $SYS.> on a full disk
            log.warning("stream %s: checkpoint event not published: %s", st.name, exc)
        return cp
