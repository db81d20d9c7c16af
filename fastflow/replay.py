"""The asyncio form of a log replay: ``Log.areplay`` (and ``Stream.areplay``)
return an ``AsyncReplay`` over the core's replay, so that the core itself
never touches the event loop (as asyncpg keeps its protocol core free of
it).  A leaf module: it imports only asyncio."""

import asyncio

__all__ = ("AsyncReplay",)


class AsyncReplay:
    """An async iterator over a core replay (``Log.replay``'s iterator):
    ``Batch``es as fast as possible, yielding to the loop after each, or
    with a ``speed`` one ``Record`` at a time at the original pace.  ``lost``
    and ``next_seq`` are the replay's."""

    __slots__ = ("_replay",)

    def __init__(self, replay):
        self._replay = replay

    @property
    def lost(self):
        return self._replay.lost

    @property
    def next_seq(self):
        return self._replay.next_seq

    def __aiter__(self):
        return self

    async def __anext__(self):
        r = self._replay
        if r._speed is None:
            b = r._read()
            if b is None:
                raise StopAsyncIteration
            await asyncio.sleep(0)
            return b
        step = r._next_paced()
        if step is None:
            raise StopAsyncIteration
        rec, delay = step
        await asyncio.sleep(delay)
        return rec
