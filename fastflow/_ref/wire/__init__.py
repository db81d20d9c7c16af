"""The wire layer of the pure-Python reference core, twin of src_ext/wire/:
what turns bytes into publishes and deliveries into bytes, one pair of
modules per protocol.

- ``proto``: the native frame layout, op codes and flags (from
  ``fastflow.protocol``).
- ``outbuf``: a connection's output (``OutBuf``), the ``WireTarget`` base
  every network subscription derives from, and the ``WireMsg`` the router
  hands each of them.
- ``native_out`` / ``nats_out``: the native frame writer (``NativeTarget``,
  the client's ``Publisher``) and the NATS ``MSG`` / ``HMSG`` writer
  (``NatsTarget``); the byte layouts live there only.
- ``door``: ``DoorParser``, the input side every front door shares
  (buffering, limits, publish permissions, publish routing).
- ``native_in`` / ``nats_in``: ``FrameParser`` (with ``MsgBatch``) and
  ``NatsParser``.

The router imports only ``outbuf``; the parsers reach the router through
its public ``publish_wire`` only, so no module of this package imports it.
"""
