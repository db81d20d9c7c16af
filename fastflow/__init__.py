"""fastflow: an embeddable event-routing engine.

The native core (``fastflow._core``, built from ``src_ext/``) is loaded by
default; ``FASTFLOW_NO_EXTENSIONS=1`` selects the pure-Python reference core
(``fastflow._ref``) instead, for machines without a C compiler.
"""

import os as _os

from fastflow.errors import (
    CorruptLogError,
    EventTooLarge,
    FastflowError,
    GapError,
    LogFullError,
    StaleRecordError,
    SubjectError,
)

if _os.environ.get("FASTFLOW_NO_EXTENSIONS", "").strip().lower() in ("1", "true", "yes", "on"):
    from fastflow._ref.log import Batch, Log, Position, Record
    from fastflow._ref.matcher import Matcher, MatchBatch
    from fastflow._ref.subjects import validate_pattern, validate_subject

    COMPILED = False
else:
    try:
        from fastflow._core import (
            Batch,
            Log,
            Matcher,
            MatchBatch,
            Position,
            Record,
            validate_pattern,
            validate_subject,
        )
    except ImportError as _exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "fastflow's compiled core (fastflow._core) is missing or broken ({}); "
            "reinstall fastflow on a machine with a C compiler, or set "
            "FASTFLOW_NO_EXTENSIONS=1 to use the slow pure-Python core".format(_exc)
        ) from None
    COMPILED = True

from fastflow.mqtt import (  # noqa: E402
    mqtt_filter_to_patterns,
    mqtt_topic_to_subject,
    subject_to_mqtt_topic,
)

__version__ = "0.1.0"

__all__ = (
    "COMPILED",
    "Batch",
    "CorruptLogError",
    "EventTooLarge",
    "FastflowError",
    "GapError",
    "Log",
    "LogFullError",
    "MatchBatch",
    "Matcher",
    "Position",
    "Record",
    "StaleRecordError",
    "SubjectError",
    "mqtt_filter_to_patterns",
    "mqtt_topic_to_subject",
    "subject_to_mqtt_topic",
    "validate_pattern",
    "validate_subject",
)
