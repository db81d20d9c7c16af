"""Replaying a stream's log from asyncio code: ``AsyncReplay`` iterates a
core replay (``Log.replay``, either core) without blocking the event loop.
The core stays free of asyncio (``Log.areplay`` returns one of these).
"""

import asyncio
from operator import attrgetter

__all__ = ("AsyncReplay",)


class AsyncReplay:
    """Async iterator over a core replay object: Batches, yielding to the
    loop between them, or with ``speed`` Records at their original pace
    (``await asyncio.sleep`` instead of the replay's blocking sleep).
    ``lost`` and ``next_seq`` are the replay's."""

    __slots__ = ("_replay",)

    def __init__(self, replay):
        self._replay = replay

    lost = property(attrgetter("_replay.lost"),
                    doc="Records no longer retained when the replay reached them.")
    next_seq = property(attrgetter("_replay.next_seq"),
                        doc="Where a later read would continue.")

    def __aiter__(self):
        return self

    async def __anext__(self):
        r = self._replay
        if r._speed is None:
            b = r._read()
            if b is None:
                raise StopAsyncIteration
            await asyncio.sleep(0)  # let other tasks run between batches
            return b
        p = r._next_paced()
        if p is None:
            raise StopAsyncIteration
        rec, delay = p
        await asyncio.sleep(delay)
        return rec
