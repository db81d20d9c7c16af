"""What the client's modules share: the ops, flags and states they test or
send per event, as fast module globals, and the helpers of their requests."""

import asyncio
import json
import struct

from fastflow._impl import ProtocolError
from fastflow.protocol import ClientState, Flag, Op

# the enums' members used per event (publishing, acknowledging, receiving) as module
# globals: on Python 3.11 ``ClientState.CLOSED`` costs ~150 ns (an enum class's
# attribute) and ``flags & Flag.ACK`` ~3 us (it builds a Flag); ops and flags are
# plain ints here, states the members themselves (``.label`` names them)
_PUB = int(Op.PUB)
_PUB_BATCH = int(Op.PUB_BATCH)
_ACK = int(Op.ACK)
_FL_ACK = int(Flag.ACK)
_FL_CLOSE = int(Flag.CLOSE)
_FL_DUPLICATE = int(Flag.DUPLICATE)
_FL_NO_RESPONDERS = int(Flag.NO_RESPONDERS)

_CONNECTING = ClientState.CONNECTING
_CONNECTED = ClientState.CONNECTED
_RECONNECTING = ClientState.RECONNECTING
_CLOSED = ClientState.CLOSED

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
