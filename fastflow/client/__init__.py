"""The asyncio client of fastflow's native protocol (docs/protocol.md).

```python
import fastflow.client

client = await fastflow.client.connect("fastflow://127.0.0.1:4232", name="billing")
client.publish("orders.eu.created", b'{"id": 42}', type="com.acme.order.created")
sub = client.subscribe("orders.>", lambda ev: print(ev.routing_subject, ev.data))
answer = await client.request("svc.price", b"AAPL", timeout=1.0)
await client.drain()
```

Publishing does not wait: ``publish`` buffers and returns.  While the client
is disconnected (and reconnecting), and while the socket is backed up, up to
``pending_limit`` bytes are buffered; past that ``publish`` raises
``ClientBufferFull``.  ``await client.wait_writable()`` (or ``flush()``)
lets a fast producer follow the connection's pace; ``publish_many`` is the
fastest way to publish many payloads.

A client belongs to the event loop it connected in (asyncio or uvloop) and
is not thread-safe: from another thread, go through
``loop.call_soon_threadsafe``.  Callbacks run inline in the loop, in the
order the server sent the messages.

The package, as nats.py splits its client: ``connection`` (``Client``: the
connection, reconnecting, publishing, request/reply), ``subscription``
(``Subscription`` and the delivery of received messages), ``streams``
(streams, durable consumers, ``Replay``, ``Delivery``, ``PubAck``) and
``url`` (server URLs); the errors are ``fastflow.errors``'.  The web
doors (HTTP, SSE, WebSocket) have their own small client, imported by
name: ``fastflow.client.http`` (docs/client.md, "The web doors").
"""

from fastflow.client.connection import Client
from fastflow.client.streams import Delivery, PubAck, Replay
from fastflow.client.subscription import Subscription
from fastflow.client.url import DEFAULT_PORT as DEFAULT_PORT  # explicit re-export
from fastflow.client.url import DEFAULT_URL, parse_url
from fastflow.errors import (
    AuthenticationError,
    ClientBufferFull,
    ConflictError,
    ConnectError,
    ConnectionClosedError,
    NoRespondersError,
    NotFoundError,
    PayloadTooLarge,
    PermissionDeniedError,
    ServerError,
    SignatureError,
)

__all__ = (
    "AuthenticationError",
    "Client",
    "ClientBufferFull",
    "ConflictError",
    "ConnectError",
    "ConnectionClosedError",
    "Delivery",
    "NoRespondersError",
    "NotFoundError",
    "PayloadTooLarge",
    "PermissionDeniedError",
    "PubAck",
    "Replay",
    "ServerError",
    "SignatureError",
    "Subscription",
    "connect",
    "parse_url",
)


async def connect(url=DEFAULT_URL, **options):
    """Connect to a fastflow server and return the ``Client``
    (``Client(url, **options)``, connected; see its options)."""
    client = Client(url, **options)
    await client._connect_first()
    return client
