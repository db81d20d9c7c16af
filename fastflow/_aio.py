"""Running a coroutine to the end on an event loop of its own: the one way
the command line and ``fastflow serve`` do it (a leaf module: asyncio only)."""

import asyncio

__all__ = ("run",)


def run(coro, factory):
    """Run ``coro`` on a new loop from ``factory``, then cancel the tasks it
    left, finish the async generators and the default executor (the scrypt
    threads of the server) and close the loop (works on 3.9+)."""
    loop = factory()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            if hasattr(loop, "shutdown_default_executor"):
                loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
