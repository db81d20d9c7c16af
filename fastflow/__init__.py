"""fastflow: an embeddable event-routing engine.

The native core (``fastflow._core``, built from ``src_ext/``) is loaded by
default; ``FASTFLOW_NO_EXTENSIONS=1`` selects the pure-Python reference core
(``fastflow._ref``) instead, for machines without a C compiler.
"""

from fastflow._impl import (
    COMPILED,
    Batch,
    Columns,
    Event,
    Log,
    MatchBatch,
    Matcher,
    Position,
    Record,
    validate_pattern,
    validate_subject,
)
from fastflow.consumer import Consumer, ConsumerConfig
from fastflow.errors import (
    CorruptLogError,
    EventError,
    EventTooLarge,
    FastflowError,
    GapError,
    LogFullError,
    SignatureError,
    SlowConsumerError,
    StaleRecordError,
    StorageFullError,
    SubjectError,
)
from fastflow.flow import Flow, Retention, Stream, Subscription
from fastflow.mqtt import mqtt_filter_to_patterns, mqtt_topic_to_subject, subject_to_mqtt_topic
from fastflow.tail import StreamReader, open_stream_reader
from fastflow._version import __version__ as __version__

__all__ = (
    "COMPILED",
    "Batch",
    "Columns",
    "Consumer",
    "ConsumerConfig",
    "CorruptLogError",
    "Event",
    "EventError",
    "EventTooLarge",
    "FastflowError",
    "Flow",
    "GapError",
    "Log",
    "LogFullError",
    "MatchBatch",
    "Matcher",
    "Position",
    "Record",
    "Retention",
    "SignatureError",
    "SlowConsumerError",
    "StaleRecordError",
    "StorageFullError",
    "Stream",
    "StreamReader",
    "SubjectError",
    "Subscription",
    "mqtt_filter_to_patterns",
    "open_stream_reader",
    "mqtt_topic_to_subject",
    "subject_to_mqtt_topic",
    "validate_pattern",
    "validate_subject",
)
