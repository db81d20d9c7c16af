"""What the client's modules share: the protocol's numbers used per event as
plain ints, the body layouts and helpers of the requests they all send."""

import asyncio
import json
import struct

from fastflow._impl import ProtocolError
from fastflow.protocol import Flag, Op

# ops and flags used per event (publishing, a batch of MSGs), as module globals:
# one lookup, where ``Op.PUB`` costs two
_PUB = int(Op.PUB)
_PUB_BATCH = int(Op.PUB_BATCH)
_FL_NO_RESPONDERS = int(Flag.NO_RESPONDERS)

_u32 = struct.Struct("<I")


def _set_timeout(fut, what):
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError(what))


async def _await_with_timeout(loop, fut, timeout, what):
    """``await fut`` for at most ``timeout`` seconds (None: no limit), then
    ``asyncio.TimeoutError(what)``; cheaper than ``wait_for`` (no task)."""
    if timeout is None:
        return await fut
    h = loop.call_later(timeout, _set_timeout, fut, what)
    try:
        return await fut
    finally:
        h.cancel()


def _json(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def _loads(body):
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise ProtocolError(400, "the server sent a body that is not JSON: {!r}".format(
            bytes(body[:100]))) from None
