"""Pure-Python reference implementations of the native core.

They are the oracles of the differential tests and the fallback core when
``FASTFLOW_NO_EXTENSIONS=1`` (no C compiler). They favour clarity over speed
and must behave exactly like ``src_ext/``: this package exports the names
``fastflow._core`` exports, from the modules that mirror its sources
(``wire/`` mirrors ``src_ext/wire/``).
"""

from fastflow._ref.cejson import decode_batch, decode_event
from fastflow._ref.cesql import CesqlProgram
from fastflow._ref.event import Event, batch_payload_bytes, events_from_batch
from fastflow._ref.log import (
    CHAIN_IMPL,
    Batch,
    Columns,
    Log,
    Position,
    Record,
    Replay,
    chain_genesis,
    chain_link,
    chain_walk,
    crc32c,
    sha256_of_digests,
)
from fastflow._ref.matcher import MatchBatch, Matcher
from fastflow._ref.router import ImportTarget, RateLimit, Router, StreamTarget, SubTarget
from fastflow._ref.subindex import SubscriptionIndex, sink_record
from fastflow._ref.subjects import validate_pattern, validate_subject
from fastflow._ref.tail import TailReader
from fastflow._ref.wire.door import DoorParser
from fastflow._ref.wire.http_in import HttpParser, Request
from fastflow._ref.wire.native_in import FrameParser, MsgBatch
from fastflow._ref.wire.mqtt_out import (
    MqttFlight,
    MqttTarget,
    mqtt_parts,
    mqtt_subject_topic,
)
from fastflow._ref.wire.native_out import NativeTarget, Publisher
from fastflow._ref.wire.mqtt_in import MqttParser, mqtt_topic_subject
from fastflow._ref.wire.nats_in import NatsParser, NatsRoute
from fastflow._ref.wire.nats_out import ClusterTarget, NatsTarget
from fastflow._ref.wire.outbuf import OutBuf, WireTarget
from fastflow._ref.wire.proto import FLAGS, OPS
from fastflow._ref.wire.web_out import SseTarget, WsJsonTarget, json_batch, ws_frame_head
from fastflow.errors import (
    CorruptLogError,
    EventError,
    EventTooLarge,
    FastflowError,
    GapError,
    HttpError,
    LogFullError,
    MqttError,
    NatsError,
    ProtocolError,
    StaleRecordError,
    StorageFullError,
    SubjectError,
)

__all__ = (
    "COMPILED",
    "DEBUG",
    "FLAGS",
    "OPS",
    "Batch",
    "ClusterTarget",
    "Columns",
    "CesqlProgram",
    "CorruptLogError",
    "DoorParser",
    "Event",
    "EventError",
    "EventTooLarge",
    "FastflowError",
    "FrameParser",
    "GapError",
    "HttpError",
    "HttpParser",
    "ImportTarget",
    "Log",
    "LogFullError",
    "MatchBatch",
    "Matcher",
    "MqttError",
    "MqttParser",
    "MqttFlight",
    "MqttTarget",
    "MsgBatch",
    "NativeTarget",
    "NatsError",
    "NatsParser",
    "NatsRoute",
    "NatsTarget",
    "OutBuf",
    "Position",
    "ProtocolError",
    "Publisher",
    "Record",
    "Request",
    "Replay",
    "RateLimit",
    "Router",
    "StaleRecordError",
    "StorageFullError",
    "StreamTarget",
    "SubTarget",
    "SseTarget",
    "SubjectError",
    "SubscriptionIndex",
    "TailReader",
    "WireTarget",
    "WsJsonTarget",
    "CHAIN_IMPL",
    "chain_genesis",
    "chain_link",
    "chain_walk",
    "crc32c",
    "decode_batch",
    "decode_event",
    "batch_payload_bytes",
    "events_from_batch",
    "json_batch",
    "mqtt_parts",
    "mqtt_subject_topic",
    "mqtt_topic_subject",
    "sha256_of_digests",
    "sink_record",
    "validate_pattern",
    "validate_subject",
    "ws_frame_head",
)

COMPILED = False
DEBUG = False
