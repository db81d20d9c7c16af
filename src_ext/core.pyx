# fastflow._core: the native core, one extension module built from the
# files included below (uvloop's layout), so that every part can call every
# other at C level.
#
# Only leaf modules of the package are imported: fastflow.errors (exception
# classes), fastflow.protocol (the wire protocols' numbers and error codes)
# and fastflow._attrs (CloudEvents attribute rules), all shared with the
# pure-Python reference core; fastflow.replay (the asyncio form of a replay)
# only when Log.areplay is called, so the core never imports asyncio.
#
# Include order: the core below, then the wire layer: outbuf (a
# connection's output, the WireTarget base) -> the protocols' targets ->
# the router (which knows only WireTarget) -> the parsers (which call the
# router).  Nothing calls back up except through registered callbacks.

import os

from fastflow.errors import (
    EventError,
    EventTooLarge,
    FastflowError,
    HttpError,
    LogFullError,
    MqttError,
    NatsError,
    ProtocolError,
    SignatureError,
    SubjectError,
)
from fastflow.protocol import error_code as _error_code

# (the C types and the classes' interfaces: fastflow/_core.pxd)
include "bytes.pxi"
include "mpack.pxi"

include "buffers.pyx"
include "subjects.pyx"
include "matcher.pyx"
include "log.pyx"
include "segments.pyx"
include "tail.pyx"
include "event.pyx"
include "columns.pyx"
include "cejson.pyx"
include "cesql.pyx"
include "subindex.pyx"
include "wire/proto.pxi"
include "wire/outbuf.pyx"
include "wire/native_out.pyx"
include "wire/nats_out.pyx"
include "wire/web_out.pyx"
include "wire/mqtt_out.pyx"
include "router.pyx"
include "wire/door.pyx"
include "wire/native_in.pyx"
include "wire/nats_in.pyx"
include "wire/mqtt_in.pyx"
include "wire/http_in.pyx"

COMPILED = True
DEBUG = bool(FASTFLOW_DEBUG)

# The names the core exports: the same as fastflow._ref (tests/test_contract.py
# holds both to fastflow/_core.pyi).
__all__ = (
    'COMPILED',
    'DEBUG',
    'FLAGS',
    'OPS',
    'Batch',
    'ClusterTarget',
    'Columns',
    'CesqlProgram',
    'CorruptLogError',
    'DoorParser',
    'Event',
    'EventError',
    'EventTooLarge',
    'FastflowError',
    'FrameParser',
    'GapError',
    'HttpError',
    'HttpParser',
    'ImportTarget',
    'Log',
    'LogFullError',
    'MatchBatch',
    'Matcher',
    'MqttError',
    'MqttFlight',
    'MqttParser',
    'MqttTarget',
    'MsgBatch',
    'NativeTarget',
    'NatsError',
    'NatsParser',
    'NatsRoute',
    'NatsTarget',
    'OutBuf',
    'Position',
    'ProtocolError',
    'Publisher',
    'Record',
    'Request',
    'Replay',
    'RateLimit',
    'Router',
    'StaleRecordError',
    'StorageFullError',
    'StreamTarget',
    'SubTarget',
    'SseTarget',
    'SubjectError',
    'SubscriptionIndex',
    'TailReader',
    'WireTarget',
    'WsJsonTarget',
    'CHAIN_IMPL',
    'chain_genesis',
    'chain_link',
    'chain_walk',
    'crc32c',
    'decode_batch',
    'decode_event',
    'batch_payload_bytes',
    'events_from_batch',
    'json_batch',
    'mqtt_parts',
    'mqtt_subject_topic',
    'mqtt_topic_subject',
    'sha256_of_digests',
    'sink_record',
    'validate_pattern',
    'validate_subject',
    'ws_frame_head',
)
