"""Decoding CloudEvents JSON, pure-Python reference for src_ext/cejson.pyx:
the JSON event format (``application/cloudevents+json``) and the batch
format (``application/cloudevents-batch+json``) into Events.

The semantics are fastflow.event's reference implementation
(``_from_json_py``, ``_from_json_batch_py``), which these call: the native
core decodes in C what it can and hands the rest to the same functions.
fastflow.event is imported when first needed (it imports the core).
"""

from fastflow._ref.event import Event

__all__ = ("decode_batch", "decode_event")


def decode_event(body, routing_subject=None):
    """The Event of a CloudEvents JSON event (bytes, str or a bytes-like
    object), with ``routing_subject`` as its routing key
    (``fastflow.event.from_json``)."""
    from fastflow import event

    return event._from_json_py(body, routing_subject, Event)


def decode_batch(body, routing_subject=None):
    """The Events of a CloudEvents JSON batch, each with ``routing_subject``
    (``fastflow.event.from_json_batch``)."""
    from fastflow import event

    return event._from_json_batch_py(body, routing_subject, Event)
