"""The core in use: the native one (``fastflow._core``) by default, the
pure-Python reference (``fastflow._ref``) with ``FASTFLOW_NO_EXTENSIONS=1``.

Every module of the package takes core classes from here, so that one
switch selects them all."""

from fastflow._settings import env_flag

__all__ = (
    "COMPILED",
    "FLAGS",
    "OPS",
    "Batch",
    "Event",
    "FrameParser",
    "Log",
    "MatchBatch",
    "Matcher",
    "MsgBatch",
    "NativeTarget",
    "NatsError",
    "NatsParser",
    "NatsTarget",
    "OutBuf",
    "Publisher",
    "Position",
    "ProtocolError",
    "Record",
    "Router",
    "StreamTarget",
    "SubTarget",
    "WireTarget",
    "events_from_batch",
    "validate_pattern",
    "validate_subject",
)

if env_flag("FASTFLOW_NO_EXTENSIONS"):
    from fastflow._ref import (
        FLAGS,
        OPS,
        Batch,
        Event,
        FrameParser,
        Log,
        MatchBatch,
        Matcher,
        MsgBatch,
        NativeTarget,
        NatsError,
        NatsParser,
        NatsTarget,
        OutBuf,
        Position,
        ProtocolError,
        Publisher,
        Record,
        Router,
        StreamTarget,
        SubTarget,
        WireTarget,
        events_from_batch,
        validate_pattern,
        validate_subject,
    )

    COMPILED = False
else:
    try:
        from fastflow._core import (
            FLAGS,
            OPS,
            Batch,
            Event,
            FrameParser,
            Log,
            Matcher,
            MatchBatch,
            MsgBatch,
            NativeTarget,
            NatsError,
            NatsParser,
            NatsTarget,
            OutBuf,
            Publisher,
            Position,
            ProtocolError,
            Record,
            Router,
            StreamTarget,
            SubTarget,
            WireTarget,
            events_from_batch,
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
