"""Type stubs of the native core (src_ext/core.pyx), and the declared contract
of a core: ``__all__`` lists the names that fastflow._core and the pure-Python
reference (fastflow._ref) both provide, each class with the methods and
attributes declared here (tests/test_contract.py checks both against this
file).  A name the core gains, loses or moves is changed here first."""

from typing import Any, Callable, Iterable, Iterator, Optional, Union

from fastflow.errors import FastflowError

__all__ = [
    "COMPILED",
    "DEBUG",
    "FLAGS",
    "OPS",
    "Batch",
    "ClusterTarget",
    "Columns",
    "CesqlProgram",
    "DoorParser",
    "Event",
    "FrameParser",
    "HttpError",
    "HttpParser",
    "ImportTarget",
    "Log",
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
    "SseTarget",
    "StreamTarget",
    "SubTarget",
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
]

Subject = Union[str, bytes]

COMPILED: bool
DEBUG: bool
OPS: dict[str, int]             # the native protocol's op codes by name (docs/protocol.md)
FLAGS: dict[str, int]           # its frame flags by name

def crc32c(data: Any, crc: int = 0) -> int: ...

CHAIN_IMPL: str                 # the SHA-256 behind the chain: "openssl", "portable", "hashlib"
def chain_genesis(name: str) -> bytes: ...          # the link before a log's first frame
def sha256_of_digests(parts: Any) -> bytes: ...      # SHA-256 of the SHA-256s of parts
def chain_link(prev: Any, body: Any) -> bytes: ...  # SHA-256(prev || body)
def chain_walk(buf: Any, off: int, prev: Any, after: int,
               stop: int) -> tuple[int, bytes, int, int]: ...  # fastflow.audit's fast path

def validate_subject(subject: Subject) -> None: ...
def validate_pattern(pattern: Subject) -> None: ...

class Int64Array:
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> int: ...
    def __iter__(self) -> Iterator[int]: ...
    def tolist(self) -> list[int]: ...

class MatchBatch:
    matcher: "Matcher"
    offsets: Int64Array
    handles: Int64Array
    @property
    def total(self) -> int: ...
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> list[Any]: ...
    def lists(self) -> list[list[Any]]: ...

class Matcher:
    def __init__(self, cache_size: int = 65536, cache_max_bytes: int = 67108864) -> None: ...
    @property
    def cache_size(self) -> int: ...
    def add(self, pattern: Subject, value: Any, queue: Optional[str] = None) -> int: ...
    def remove(self, handle: int) -> None: ...
    def remove_many(self, handles: Iterable[int]) -> int: ...
    def match(self, subject: Subject, /) -> list[Any]: ...
    def match_handles(self, subject: Subject) -> list[int]: ...
    def match_batch(self, subjects: Iterable[Subject]) -> MatchBatch: ...
    def cache_clear(self) -> None: ...
    def memory_bytes(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def __len__(self) -> int: ...
    def __contains__(self, handle: object) -> bool: ...

class Position:
    seq: int
    lost: int
    def __init__(self, seq: int, lost: int = 0) -> None: ...

class Record:
    log: "Log"
    seq: int
    ts: int
    time: int
    subject: str
    @property
    def data(self) -> bytes: ...
    def __bytes__(self) -> bytes: ...
    def __len__(self) -> int: ...

class Batch:
    buffer: bytes
    offsets: Int64Array
    seqs: Int64Array
    ts: Int64Array
    times: Int64Array
    subjects: list[str]
    next_seq: int
    lost: int
    def __len__(self) -> int: ...
    def subject(self, i: int) -> str: ...
    def data(self, i: int) -> memoryview: ...
    def __iter__(self) -> Iterator[tuple[int, int, str, memoryview]]: ...

class Columns:
    """Records as numpy arrays (Log.columns; docs/log.md)."""
    seq: Any            # numpy int64
    ts: Any             # numpy int64, append time (ns)
    time: Any           # numpy int64, producer time (ns)
    subject_id: Any     # numpy int32, into subjects
    subjects: tuple[str, ...]
    offsets: Any        # numpy int64, len + 1
    payload: Any        # numpy uint8
    lost: int
    next_seq: int
    def __init__(self, seq: Any, ts: Any, time: Any, subject_id: Any, subjects: Any,
                 offsets: Any, payload: Any, lost: int = 0, next_seq: int = 0) -> None: ...
    def __len__(self) -> int: ...
    def subject(self, i: int) -> str: ...
    def data(self, i: int) -> memoryview: ...
    def view(self, dtype: Any) -> Any: ...

class CesqlProgram:
    """A compiled CESQL expression (fastflow.cesql compiles; fastflow/_cesqlcode.py)."""
    code: tuple[tuple[int, int, int], ...]
    consts: tuple[Any, ...]
    type: int
    def __init__(self, code: Any, consts: Any, type: int) -> None: ...
    def evaluate(self, event: Any, fail_fast: bool = False) -> tuple[Any, list[Any]]: ...
    def matches(self, event: Any) -> bool: ...
    def match_batch(self, batch: "Batch") -> list[int]: ...

class Log:
    AGE_EVICT_STEP: int
    path: Optional[str]
    def __init__(self, *, max_events: int = 0, max_bytes: int = 0, max_age: float = 0,
                 max_per_subject: int = 0, max_event_size: int = 1048576, discard: str = "old",
                 dedup_window: float = 120.0, dedup_max: int = 100000, path: Any = None,
                 fsync: str = "interval", fsync_interval: float = 1.0,
                 segment_size: int = 67108864, strict: bool = False,
                 chain: Optional[bool] = None, chain_name: Optional[str] = None,
                 notify: bool = False) -> None: ...
    first_seq: int
    last_seq: int
    bytes: int
    subjects: int
    def __len__(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def append(self, subject: Subject, data: Any, time: Any = 0) -> int: ...
    def append_at(self, seq: int, subject: Subject, data: Any, time: Any = 0) -> int: ...
    def append_batch(self, subjects: Any, datas: Any, time: Any = 0) -> tuple[int, int]: ...
    def append_buffer(self, subjects: Any, buffer: Any, offsets: Any,
                      time: Any = 0) -> tuple[int, int]: ...
    def append_unique(self, subject: Subject, data: Any, msg_id: Union[str, bytes],
                      time: Any = 0) -> tuple[int, bool]: ...
    def expire(self) -> int: ...
    def purge(self, subject: Optional[Subject] = None, up_to: Optional[int] = None) -> int: ...
    def get(self, seq: int) -> Record: ...
    def read(self, seq: int = 1, limit: int = 1024, max_bytes: int = 0,
             filter: Optional[Subject] = None) -> Batch: ...
    def read_into(self, buffer: Any, seq: int = 1, limit: int = 1024,
                  filter: Optional[Subject] = None) -> Any: ...
    def columns(self, start: str = "first", *, seq: Optional[int] = None, time: Any = None,
                stop: Optional[int] = None, limit: Optional[int] = None,
                filter: Optional[str] = None, events: bool = False) -> Columns: ...
    def append_columns(self, payload: Any, offsets: Any = None, *, subject: Any = None,
                       subject_id: Any = None, subjects: Any = None,
                       time: Any = None) -> tuple[int, int]: ...
    def seek(self, start: str = "first", *, seq: Optional[int] = None, time: Any = None,
             strict: bool = False) -> Position: ...
    def last_per_subject(self, filter: Optional[Subject] = None) -> Batch: ...
    def latest_only(self, batch: Batch) -> Batch: ...
    def replay(self, start: str = "first", **kw: Any) -> Any: ...
    def areplay(self, start: str = "first", **kw: Any) -> Any: ...
    def set_cursor(self, name: str, seq: int) -> None: ...
    def cursor(self, name: str) -> int: ...
    def cursors(self) -> dict[str, int]: ...
    def delete_cursor(self, name: str) -> None: ...
    def lag(self, name: str) -> int: ...
    @property
    def closed(self) -> bool: ...
    @property
    def losses(self) -> list[dict[str, Any]]: ...
    def chain_head(self) -> tuple[int, Optional[bytes]]: ...
    @property
    def chain_name(self) -> Optional[str]: ...
    @staticmethod
    def open_reader(path: Any, start: str = "first", *, seq: Optional[int] = None,
                    time: Any = None, filter: Optional[Subject] = None, wait: str = "spin",
                    strict: bool = False, spin: Optional[int] = None,
                    poll_interval: float = 0.001) -> "TailReader": ...
    def flush(self) -> None: ...
    def close(self) -> None: ...

class TailReader:
    """Tails a file-backed log as its writer appends (docs/latency.md)."""
    path: str
    filter: Any
    strict: bool
    lost: int
    segment: int
    closed: bool
    def __init__(self, path: Any, start: str = "first", *, seq: Optional[int] = None,
                 time: Any = None, filter: Optional[Subject] = None, wait: str = "spin",
                 strict: bool = False, spin: Optional[int] = None,
                 poll_interval: float = 0.001) -> None: ...
    def read(self, limit: int = 1024, max_bytes: int = 0,
             timeout: Optional[float] = 0.0) -> Batch: ...
    def read_into(self, buffer: Any, limit: int = 1024,
                  timeout: Optional[float] = 0.0) -> tuple[int, int, Any]: ...
    def wait(self, timeout: Optional[float] = None) -> bool: ...
    def __iter__(self) -> Iterator[Batch]: ...
    @property
    def next_seq(self) -> int: ...
    @property
    def attached(self) -> bool: ...
    @property
    def last_seq(self) -> int: ...
    @property
    def lag(self) -> int: ...
    @property
    def writer_closed(self) -> bool: ...
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...

class SegmentStore:
    """The segment files of a Log with a path (internal to Log: not in __all__)."""
    segment_size: int
    losses: list[dict[str, Any]]
    def __init__(self, log: Log, path: str, fsync: str, fsync_interval: float, segment_size: int,
                 strict: bool) -> None: ...
    def load(self) -> None: ...
    def write_meta(self, last_seq: Optional[int] = None, tolerant: bool = False) -> bool: ...
    def load_cursors(self) -> dict[str, int]: ...
    def save_cursors(self, cursors: dict[str, int]) -> None: ...
    def sync(self, force: bool) -> None: ...
    def flush(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...

class Replay:
    lost: int
    next_seq: int
    def __iter__(self) -> Iterator[Any]: ...
    def __next__(self) -> Any: ...

class Event:
    routing_subject: Optional[str]
    source: str
    hops: int
    seq: int
    stream: Optional[str]
    ts: int
    deliveries: int
    def __init__(self, routing_subject: Optional[Subject] = None, data: Any = b"",
                 **attributes: Any) -> None: ...
    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def specversion(self) -> str: ...
    @property
    def from_mqtt(self) -> bool: ...
    @property
    def data(self) -> bytes: ...
    @property
    def time(self) -> Optional[str]: ...
    @property
    def subject(self) -> Optional[str]: ...
    @property
    def datacontenttype(self) -> Optional[str]: ...
    @property
    def dataschema(self) -> Optional[str]: ...
    @property
    def trace(self) -> str: ...
    @property
    def extensions(self) -> dict[str, Any]: ...
    def attributes(self) -> dict[str, Any]: ...
    def get(self, name: str, default: Any = None) -> Any: ...
    def __getitem__(self, name: str) -> Any: ...
    def derive(self, routing_subject: Optional[Subject] = None, data: Any = None,
               **attributes: Any) -> "Event": ...
    def ack(self) -> None: ...
    def nak(self, delay: float = 0.0) -> None: ...
    def term(self) -> None: ...
    def in_progress(self) -> None: ...
    def encode(self) -> bytes: ...
    @staticmethod
    def decode(routing_subject: Subject, record: Any, seq: int = 0, stream: Optional[str] = None,
               ts: int = 0) -> "Event": ...

def batch_payload_bytes(b: Batch, n: int = -1) -> int: ...
def events_from_batch(b: Batch, stream: Optional[str] = None, origin: Optional[str] = None,
                      rows: Optional[Iterable[int]] = None) -> list[Optional[Event]]: ...

# The subscription index (src_ext/subindex.pyx): fastflow.subscriptions' FilterIndex
class SubscriptionIndex:
    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, handle: object) -> bool: ...
    @property
    def nkeys(self) -> int: ...
    def add(self, handle: int, keys: Optional[Iterable[tuple]]) -> None: ...
    def remove(self, handle: int) -> None: ...
    def candidates(self, routing_subject: Optional[Subject], record: Any) -> list[int]: ...
    def candidates_batch(self, batch: Batch) -> tuple[list[int], list[int]]: ...
    def set_sink(self, handle: int, subject: Optional[Subject], hop: bool = False) -> None: ...
    def sink_delivered(self, handle: int) -> int: ...
    def route_batch(self, batch: Batch, router: "Router"
                    ) -> tuple[list[int], list[int], list[tuple[int, str]]]: ...

def sink_record(routing_subject: Optional[Subject], record: Any, hop: bool = False) -> bytes: ...

# CloudEvents JSON (src_ext/cejson.pyx): fastflow.event.from_json / from_json_batch
def decode_event(body: Any, routing_subject: Optional[Subject] = None) -> Event: ...
def decode_batch(body: Any, routing_subject: Optional[Subject] = None) -> list[Event]: ...

class RateLimit:
    """An account's ingress token bucket (engine use): taken from by the
    router for each publish of a connection; may go into debt."""
    msgs_rate: float
    bytes_rate: float
    burst: float
    taken: int
    taken_bytes: int
    def __init__(self, msgs_per_second: float = 0, bytes_per_second: float = 0,
                 burst: float = 1.0) -> None: ...
    def take(self, n: int = 1, nbytes: int = 0) -> None: ...
    def wait(self, n: int = 0, nbytes: int = 0) -> float: ...

class SubTarget:
    callback: Any
    pending: Any
    max_pending: int
    max_pending_bytes: int
    pending_bytes: int
    on_full: str
    wake: Any
    waiting: bool
    closed: bool
    cut: bool
    owner: Any
    delivered: int
    delivered_bytes: int
    dropped: int
    errors: int
    handle: int
    conflate: bool
    conflated: int
    def __init__(self, callback: Any = None, max_pending: int = 65536,
                 max_pending_bytes: int = 67108864, on_full: str = "drop_oldest",
                 conflate: bool = False) -> None: ...
    def pop(self) -> Event: ...
    def pop_many(self, n: int) -> list[Event]: ...
    def close(self) -> None: ...

class StreamTarget:
    name: str
    log: Log
    listeners: list[Any]
    appended: int
    appended_bytes: int
    rejected: int
    duplicates: int
    dedup: bool
    def __init__(self, name: str, log: Log) -> None: ...
    def append_at(self, seq: int, subject: Subject, record: Any) -> int: ...

class WireTarget:
    """The base of the protocols' wire targets (not instantiable itself)."""
    outbuf: "OutBuf"
    echo: bool
    remaining: int
    owner: Any
    on_end: Optional[Callable[["WireTarget"], Any]]
    delivered: int
    delivered_bytes: int
    dropped: int
    handle: int
    replies: Optional[list[bytes]]
    conflate: bool
    conflated: int
    remote: bool
    def __init__(self, outbuf: "OutBuf", echo: bool = True) -> None: ...
    def write_record(self, subject: Subject, record: Any, stream: Optional[str] = None,
                     seq: int = 0, ts: int = 0) -> bool: ...
    def write_batch(self, batch: "Batch", stream: Optional[str] = None,
                    last_seq: Optional[int] = None) -> int: ...

class NativeTarget(WireTarget):
    """A native subscription: MSG frames with its ``sid``."""
    sid: int
    def __init__(self, outbuf: "OutBuf", sid: int, echo: bool = True) -> None: ...

class NatsTarget(WireTarget):
    """A NATS subscription: MSG / HMSG lines with its ``sid``; ``headers``
    makes the header block of an event with attributes (None: plain MSG)."""
    sid: bytes
    headers: Optional[Callable[[Event, bool], bytes]]
    def __init__(self, outbuf: "OutBuf", sid: Subject, echo: bool = True,
                 headers: Optional[Callable[[Event, bool], bytes]] = None) -> None: ...

class ClusterTarget(WireTarget):
    """A cluster link's forwarder: ``PUB <prefix><subject> [<reply_prefix><reply>]``
    with the event's record as the payload, once per event however many of
    its patterns matched; ``remote`` is True (queue groups prefer local members)."""
    prefix: bytes
    reply_prefix: bytes
    fwd_msgs: int
    fwd_bytes: int
    max_payload: int
    max_line: int
    too_large: int
    def __init__(self, outbuf: "OutBuf", prefix: Union[str, bytes] = b"",
                 reply_prefix: Union[str, bytes] = b"") -> None: ...

class WsJsonTarget(WireTarget):
    """A WebSocket subscription (subprotocol ``cloudevents.json``): each event
    one text frame carrying its CloudEvents JSON (``fastflow.event.to_json``)."""
    lineage: bool
    def __init__(self, outbuf: "OutBuf", echo: bool = True, lineage: bool = True) -> None: ...

class SseTarget(WireTarget):
    """A Server-Sent Events subscription: each event one message, ``id: <seq>``
    when it was stored in ``stream``, then ``data: <CloudEvents JSON>``."""
    lineage: bool
    stream: Optional[str]
    def __init__(self, outbuf: "OutBuf", stream: Optional[str] = None, echo: bool = True,
                 lineage: bool = True) -> None: ...

def ws_frame_head(opcode: int, length: int, fin: bool = True) -> bytes: ...

def json_batch(events: Iterable["Event"], lineage: bool = True) -> bytes: ...

class MqttFlight:
    """A connection's QoS 1 deliveries in C: packet ids 1..32767, the
    client's Receive Maximum as window (at most 1,024 of its own), a
    bounded queue, PUBACKs taken by the parser."""
    outbuf: "OutBuf"
    receive_max: int
    others: int
    inflight: int
    queued: int
    max_queued: int
    queued_bytes: int
    sent: int
    acked: int
    dropped: int
    expired: int
    window: int
    wake: Optional[Callable[[], Any]]
    def __init__(self, outbuf: "OutBuf", receive_max: int = 65535,
                 max_queued: int = 10000) -> None: ...
    def push(self, packet: bytes, pid_offset: int, deadline: Optional[float] = None,
             expiry_offset: int = -1) -> bool: ...
    def ack(self, pid: int) -> bool: ...
    def owns(self, pid: int) -> bool: ...
    def drain(self) -> None: ...

class MqttTarget(WireTarget):
    """An MQTT subscription at QoS 0 (or 1, through an MqttFlight): each
    event one PUBLISH packet, its topic the routing subject translated
    back; ``mode`` "raw" (the data), "binary" (MQTT 5: CloudEvents
    attributes as properties) or "structured" (the CloudEvents JSON)."""
    version: int
    mode: str
    subscription_identifier: Optional[int]
    max_packet: int
    lineage: bool
    untranslatable: int
    too_large: int
    qos: int
    flight: Optional[MqttFlight]
    retain_as_published: bool
    fallback: Optional[Callable[["Event"], Any]]
    def __init__(self, outbuf: "OutBuf", version: int = 4, mode: str = "raw",
                 subscription_identifier: Optional[int] = None, max_packet: int = 0,
                 echo: bool = True, lineage: bool = False, qos: int = 0,
                 flight: Optional[MqttFlight] = None, retain_as_published: bool = False,
                 fallback: Optional[Callable[["Event"], Any]] = None) -> None: ...

def mqtt_parts(event: "Event", version: int = 5, mode: str = "binary",
               lineage: bool = False) -> tuple[bytes, bytes]: ...
def mqtt_subject_topic(subject: Subject) -> str: ...

class Router:
    matcher: Matcher
    name: str
    source: str
    hop_limit: int
    error_handler: Any
    advisory_handler: Any
    last_duplicate: bool
    last_stream: Optional[str]
    closed: bool
    n_published: int
    n_delivered: int
    n_appended: int
    ingress: Optional[RateLimit]
    trust_on: Optional[Matcher]
    trust_check: Any
    bytes_published: int
    bytes_delivered: int
    bytes_appended: int
    n_rejected: int
    n_dropped_slow: int
    n_conflated: int
    n_dropped_loop: int
    n_dropped_no_interest: int
    n_callback_errors: int
    @property
    def sample_every(self) -> int: ...
    def __init__(self, name: str = "fastflow", source: str = "/fastflow", hop_limit: int = 32,
                 cache_size: int = 65536) -> None: ...
    def add(self, pattern: Subject, target: Union[SubTarget, StreamTarget, WireTarget],
            queue: Optional[str] = None) -> int: ...
    def remove(self, handle: int) -> None: ...
    def remove_many(self, handles: Iterable[int]) -> int: ...
    def publish(self, subject: Union[Subject, Event], data: Any = b"", /,
                **attributes: Any) -> int: ...
    def publish_batch(self, subjects: Any, datas: Any, /, **attributes: Any) -> int: ...
    def publish_record(self, subject: Subject, record: Any, reply: Optional[Subject] = None,
                       origin: Optional[str] = None, *, trust_checked: bool = False,
                       groups: bool = True, group: Optional[str] = None) -> int: ...
    def publish_json(self, body: Any, routing_subject: Optional[Subject] = None, *,
                     origin: Optional["OutBuf"] = None,
                     check: Optional[Callable[[str], Any]] = None) -> int: ...
    def publish_json_batch(self, body: Any, routing_subject: Optional[Subject] = None, *,
                           origin: Optional["OutBuf"] = None,
                           check: Optional[Callable[[str], Any]] = None,
                           acks: bool = False) -> Union[int, list[tuple[Optional[str], int]]]: ...
    def stats(self) -> dict[str, int]: ...
    def sample_subjects(self, every: int) -> None: ...
    def take_samples(self) -> tuple[dict[str, int], int]: ...

class ImportTarget(WireTarget):
    """An account's import: registered in the exporting account's router on
    the exported pattern, it republishes each message matched into ``dest``
    (the record as received) on ``prefix + subject[strip:]``, or on what
    ``subject_map(subject)`` returns (None: refused); the reply only through
    ``reply_map`` (else dropped).  ``outbuf`` is None, ``echo`` True."""
    dest: Router
    strip: int
    prefix: bytes
    reply_map: Optional[Callable[[bytes], Optional[bytes]]]
    subject_map: Optional[Callable[[bytes], Optional[bytes]]]
    max_depth: int
    forwarded: int
    forwarded_bytes: int
    refused: int
    looped: int
    def __init__(self, dest: Router, strip: int = 0, prefix: bytes = b"",
                 reply_map: Optional[Callable[[bytes], Optional[bytes]]] = None,
                 subject_map: Optional[Callable[[bytes], Optional[bytes]]] = None,
                 max_depth: int = 8) -> None: ...

# -- the wire: output buffer, parsers, errors -------------------------------------------------

class ProtocolError(FastflowError):
    code: int
    frames: list[Any]
    def __init__(self, code: int, message: str) -> None: ...

class NatsError(FastflowError):
    text: str
    detail: Optional[str]
    frames: list[Any]
    def __init__(self, text: str, detail: Optional[str] = None) -> None: ...

class MqttError(FastflowError):
    reason: int
    message: str
    frames: list[Any]
    def __init__(self, reason: int, message: str) -> None: ...

class HttpError(FastflowError):
    status: int
    message: str
    headers: tuple[tuple[str, str], ...]
    close: bool
    frames: Optional[list[Any]]
    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = (),
                 close: bool = False) -> None: ...

class OutBuf:
    max_pending: int
    on_data: Optional[Callable[[bytes], Any]]
    flush_at: int
    on_flush: Optional[Callable[[], Any]]
    overflow: bool
    closed: bool
    frames: int
    msgs: int
    bytes_out: int
    backbone: bool
    pub_bytes: int
    dropped: int
    behind: bool
    kept_bytes: int
    kept_messages: int
    conflated: int
    def __init__(self, max_pending: int = 67108864, on_data: Any = None) -> None: ...
    def flush_kept(self, live: Any = None) -> int: ...
    def __len__(self) -> int: ...
    def frame(self, op: int, flags: int = 0, id: int = 0, subject: Subject = b"",
              reply: Subject = b"", body: Any = b"") -> bool: ...
    def publish(self, subject: Subject, data: Any, source: str, reply: Optional[Subject] = None,
                id: int = 0, flags: int = 0) -> bool: ...
    def publish_many(self, subject: Subject, datas: Any, source: str) -> int: ...
    def nats_msg(self, subject: Subject, sid: Subject, reply: Optional[Subject] = None,
                 headers: Optional[bytes] = None, data: Any = b"") -> bool: ...
    def write(self, data: Any) -> bool: ...
    def take(self) -> bytes: ...
    def clear(self) -> None: ...

class MsgBatch:
    sids: Int64Array
    flags: Int64Array
    offsets: Int64Array
    subjects: list[str]
    replies: list[Optional[str]]
    buffer: bytes
    def __len__(self) -> int: ...
    def record(self, i: int) -> memoryview: ...
    def event(self, i: int) -> Event: ...
    def events(self) -> list[Event]: ...
    def datas(self) -> list[bytes]: ...

class DoorParser:
    router: Optional[Router]
    out: Optional[OutBuf]
    pub_allow: Optional[Matcher]
    pub_deny: Optional[Matcher]
    resp_check: Optional[Callable[[str], bool]]
    max_payload: int
    max_control: int
    max_connect: int
    route_pubs: bool
    bytes_in: int
    pubs_in: int
    denied: int
    @property
    def buffered(self) -> int: ...
    def feed(self, data: Any) -> list[Any]: ...

class FrameParser(DoorParser):
    batch_msgs: bool
    frames_in: int
    def __init__(self, router: Optional[Router] = None, out: Optional[OutBuf] = None,
                 max_payload: int = 1048576, max_control: int = 65536) -> None: ...

class NatsRoute:
    """Where a cluster link's parser routes the MSGs of one sid."""
    router: Router
    strip: int
    group: Optional[str]
    reply_prefix: bytes
    msgs: int
    bad: int
    def __init__(self, router: Router, strip: int = 0, group: Optional[str] = None,
                 reply_prefix: Union[str, bytes] = b"") -> None: ...

class NatsParser(DoorParser):
    ops_in: int
    client: bool
    routes: Optional[dict[bytes, NatsRoute]]
    def __init__(self, router: Optional[Router] = None, out: Optional[OutBuf] = None,
                 max_payload: int = 1048576, max_control: int = 4096, *,
                 client: bool = False,
                 routes: Optional[dict[bytes, NatsRoute]] = None) -> None: ...
    def route(self, subject: Subject, reply: Optional[Subject], payload: Any) -> list[Any]: ...

class MqttParser(DoorParser):
    max_packet: int
    version: int
    packets_in: int
    acks_in: int
    flight: Optional[MqttFlight]
    def __init__(self, router: Optional[Router] = None, out: Optional[OutBuf] = None,
                 max_packet: int = 1048576, max_connect: int = 0) -> None: ...

def mqtt_topic_subject(topic: Subject) -> str: ...

class Request:
    method: str
    target: bytes
    path: str
    query: str
    headers: dict[str, str]
    pairs: list[tuple[str, str]]
    body: bytes
    keep_alive: bool
    version: str
    upgrade: bool
    rest: bytes
    t0: float
    def __init__(self) -> None: ...
    def header(self, name: str, default: Optional[str] = None) -> Optional[str]: ...
    def params(self) -> dict[str, str]: ...
    def param_list(self, name: str) -> list[str]: ...

class HttpParser(DoorParser):
    max_header: int
    max_headers: int
    max_body: int
    head_check: Optional[Callable[[Request], None]]
    def __init__(self, max_header: int = 16384, max_headers: int = 100,
                 max_body: int = 16777216) -> None: ...
    @property
    def in_request(self) -> float: ...
    @property
    def dead(self) -> bool: ...
    @property
    def ready(self) -> int: ...
    def feed(self, data: Any) -> list[Request]: ...

class Publisher:
    out: OutBuf
    slow: Any
    on_overflow: Any
    source: str
    vsubj: Any
    max_data: int
    def __init__(self, out: OutBuf, slow: Any, on_overflow: Any, source: str) -> None: ...
    def publish(self, subject: Subject, data: Any = b"", /, *, reply: Optional[Subject] = None,
                **attributes: Any) -> Any: ...
