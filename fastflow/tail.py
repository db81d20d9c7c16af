"""Tailing a stream of a ``Flow(data_dir)`` from another process, by name
(docs/latency.md): a ``TailReader`` of the stream's log that hands out
events, and the replay at the original pace from such a reader."""

import os
import time as _time

from fastflow._impl import TailReader, events_from_batch

__all__ = ("StreamReader", "open_stream_reader")


def open_stream_reader(data_dir, stream, start="first", *, seq=None, time=None, filter=None,
                       wait="spin", strict=False, spin=None, poll_interval=0.001):
    """A ``StreamReader`` of the file-backed stream ``stream`` of the flow
    whose ``data_dir`` is given, in this process or another one; the stream
    need not exist yet (the reader attaches when it does).  The position and
    the waits are those of ``TailReader``."""
    if not isinstance(stream, str) or not stream or "/" in stream or stream.startswith("."):
        raise ValueError("stream must be a stream's name, got {!r}".format(stream))
    path = os.path.join(os.fspath(data_dir), "streams", stream)
    return StreamReader(stream, TailReader(path, start, seq=seq, time=time, filter=filter,
                                           wait=wait, strict=strict, spin=spin,
                                           poll_interval=poll_interval))


class StreamReader:
    """Events of a stream as its flow (in any process) stores them."""

    def __init__(self, name, reader):
        self.name = name
        self.reader = reader

    def read(self, limit=1024, max_bytes=0, timeout=0.0):
        """The stored records (a ``Batch`` of CloudEvents records)."""
        return self.reader.read(limit, max_bytes, timeout)

    def read_into(self, buffer, limit=1024, timeout=0.0):
        return self.reader.read_into(buffer, limit, timeout)

    def read_events(self, limit=1024, timeout=0.0):
        """The events there now (waiting up to ``timeout`` for the first)."""
        return events_from_batch(self.reader.read(limit, 0, timeout), self.name)

    def wait(self, timeout=None):
        return self.reader.wait(timeout)

    def replay(self, speed=1.0, limit=None):
        """The events up to the writer's last one now, one at a time, paced
        by their original gaps (append times) divided by ``speed``."""
        if not isinstance(speed, (int, float)) or isinstance(speed, bool) or not speed > 0:
            raise ValueError("speed must be a number > 0, got {!r}".format(speed))
        stop = self.reader.last_seq
        t0 = ts0 = None
        n = 0
        while self.reader.next_seq <= stop and (limit is None or n < limit):
            b = self.reader.read(min(1024, limit - n) if limit is not None else 1024)
            if not len(b):
                break
            for ev in events_from_batch(b, self.name):
                if ev.seq > stop or (limit is not None and n >= limit):
                    return
                if t0 is None:
                    t0, ts0 = _time.monotonic(), ev.ts
                due = t0 + (ev.ts - ts0) / 1e9 / speed
                delay = due - _time.monotonic()
                if delay > 0:
                    _time.sleep(delay)
                n += 1
                yield ev

    def __iter__(self):
        """Events, waiting for each (until closed)."""
        while not self.reader.closed:
            yield from self.read_events(timeout=None)

    @property
    def next_seq(self):
        return self.reader.next_seq

    @property
    def lost(self):
        return self.reader.lost

    @property
    def lag(self):
        return self.reader.lag

    def stats(self):
        return self.reader.stats()

    def close(self):
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "StreamReader({!r}, next_seq={}, lost={})".format(
            self.name, self.reader.next_seq, self.reader.lost)
