"""The server's settings: defaults, the TOML config file, command-line
overrides and their validation (docs/server.md lists every key).

``ServerConfig`` is plain data; ``load_config(path)`` reads a TOML file
(Python 3.11's ``tomllib``, or ``tomli`` on 3.9/3.10), ``config_from_dict``
validates a dict of the same shape, ``apply_args`` lays command-line flags
over it.  Sizes are bytes (an int) or a string with a unit (``"64MiB"``,
``"4 KiB"``, ``"1GiB"``, ``"1GB"``); durations are seconds (a number) or a
string (``"500ms"``, ``"2s"``, ``"5m"``, ``"1h30m"``, ``"1d"``).
"""

import math
import os
import re

from fastflow.errors import FastflowError
from fastflow.flow import Retention
from fastflow.flow import _check_name as _check_stream_name

__all__ = ("ConfigError", "ServerConfig", "apply_args", "config_from_dict", "load_config",
           "parse_duration", "parse_size")

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

LOOPS = ("auto", "uvloop", "asyncio")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
STREAM_PERMS = ("manage", "read", "none")


class ConfigError(FastflowError, ValueError):
    """An invalid setting; the message names the key and the value."""


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2,
          "g": 1000 ** 3, "gb": 1000 ** 3, "t": 1000 ** 4, "tb": 1000 ** 4,
          "kib": KiB, "mib": MiB, "gib": GiB, "tib": 1 << 40,
          "ki": KiB, "mi": MiB, "gi": GiB, "ti": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*\Z")
# a duration: one number, or number+unit parts ("1h30m", "1d 12h", "1.5s", "500ms")
_DUR_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)")
_DUR_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "m": 60.0, "h": 3600.0,
              "d": 86400.0, "w": 604800.0}


def parse_size(value, key="size"):
    """Bytes (an int) from an int or a string: a number with an optional
    unit, ``"512"``, ``"4KiB"``, ``"64MiB"``, ``"1GiB"`` (powers of 1024),
    ``"1KB"``, ``"1MB"``, ``"1GB"`` (powers of 1000); case and a space
    before the unit do not matter."""
    if isinstance(value, bool):
        raise ConfigError("{}: expected a size (bytes, or a string like '64MiB'), got {!r}"
                          .format(key, value))
    if isinstance(value, int):
        if value < 0:
            raise ConfigError("{}: a size must be >= 0, got {}".format(key, value))
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m and m.group(2).lower() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ConfigError("{}: expected a size (bytes, or a string like '512MiB', '1GiB', '4KiB', "
                      "'1GB'), got {!r}".format(key, value))


def parse_duration(value, key="duration"):
    """Seconds (a float) from a number or a string: a number of seconds
    (``"90"``), or parts with units ``ms``, ``s``, ``m``, ``h``, ``d``,
    ``w`` (``"500ms"``, ``"2s"``, ``"5m"``, ``"1h30m"``, ``"1d"``)."""
    if isinstance(value, bool):
        raise ConfigError("{}: expected a duration, got {!r}".format(key, value))
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ConfigError("{}: a duration must be a finite number of seconds >= 0, got {!r}"
                              .format(key, value))
        return float(value)
    if isinstance(value, str):
        total = 0.0
        pos = 0
        parts = 0
        bare = False
        text = value.rstrip()
        while pos < len(text):
            m = _DUR_PART.match(text, pos)
            unit = m.group(2).lower() if m else None
            if m is None or unit not in _DUR_UNITS or bare:
                parts = 0
                break
            bare = unit == ""           # a number without a unit stands alone
            total += float(m.group(1)) * _DUR_UNITS[unit]
            parts += 1
            pos = m.end()
        if parts and not (bare and parts > 1) and math.isfinite(total):
            return total
    raise ConfigError("{}: expected a duration (seconds, or a string like '500ms', '2s', '5m', "
                      "'1h30m', '1d'), got {!r}".format(key, value))


def _int(value, key, minimum=0):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError("{}: expected an int >= {}, got {!r}".format(key, minimum, value))
    return value


def _str(value, key, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError("{}: expected a non-empty string, got {!r}".format(key, value))
    return value


def _bool(value, key):
    if not isinstance(value, bool):
        raise ConfigError("{}: expected true or false, got {!r}".format(key, value))
    return value


def _str_list(value, key):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError("{}: expected a list of non-empty strings, got {!r}".format(key, value))
    return list(value)


def _check_keys(d, allowed, where):
    if not isinstance(d, dict):
        raise ConfigError("{}: expected a table, got {!r}".format(where, d))
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ConfigError("{}: unknown key{} {} (known: {})".format(
            where, "s" if len(unknown) > 1 else "", ", ".join(map(repr, unknown)),
            ", ".join(sorted(allowed))))


class ServerConfig:
    """Every setting of ``fastflow serve``, with its default."""

    # (name, default); the order is the order of docs/server.md
    FIELDS = (
        ("host", "127.0.0.1"),
        ("port", 4232),
        ("name", None),                 # the server's name in INFO (default: the id)
        ("data_dir", None),             # None: streams in memory
        ("fsync", "interval"),          # file-backed streams: "always" | "interval" | "never"
        ("wake_readers", False),        # file-backed streams wake blocked tail readers
        ("loop", "auto"),
        ("log_level", "info"),
        ("monitor_host", None),         # None: the same as host
        ("monitor_port", 8232),         # 0: no monitoring endpoint
        ("monitor_token", None),        # HTTP Bearer token the endpoints require (but /healthz)
        ("monitor_users", ()),          # [{"user", "password"}]: HTTP Basic users (likewise)
        ("monitor_console", True),      # the operator console at /console/ (docs/console.md)
        ("monitor_console_tail", True),  # ... with stream tails (events' data) on this port
        ("nats_host", None),            # the NATS door (docs/nats.md); None: the same as host
        ("nats_port", 0),               # 0: no NATS door (its usual port: 4222)
        ("mqtt_ws", True),              # MQTT over WebSocket on the HTTP listener (/mqtt, /ws)
        ("mqtt_host", None),            # the MQTT door (docs/mqtt.md); None: the same as host
        ("mqtt_port", 0),               # 0: no MQTT door (its usual port: 1883)
        ("mqtt_max_queued", 10000),     # QoS 1/2 messages a session keeps for its client
        ("mqtt_session_expiry_max", 0xFFFFFFFF),  # longest session expiry granted (s; max: never)
        ("mqtt_max_inflight", 20),      # MQTT 5 Receive Maximum: a client's QoS 1/2 in flight
        ("mqtt_max_topic_alias", 10),   # MQTT 5 Topic Alias Maximum (0: no aliases)
        ("mqtt_max_packet", 0),         # largest packet (0: max_payload + 64 KiB of headers)
        ("mqtt_max_keepalive", 65535),  # MQTT 5 Server Keep Alive cap, seconds (0: none)
        ("mqtt_structured", ()),        # topic filters whose publishes are structured CloudEvents
        ("nats_max_control", 4 * KiB),  # longest NATS control line (nats-server's default)
        ("nats_lineage", "keep"),       # ffhops/fftrace on the NATS door: "keep" or "strip"
        ("http_host", None),            # the web doors (docs/http.md); None: the same as host
        ("http_port", 0),               # 0: no HTTP door (CloudEvents, WebSocket, SSE)
        ("http_max_header", 16 * KiB),  # request line and headers of one request
        ("http_max_headers", 100),      # header fields of one request
        ("http_max_body", 16 * MiB),    # one request's body (a batch of events)
        ("http_idle_timeout", 60.0),    # seconds a keep-alive connection may sit idle
        ("http_request_timeout", 30.0), # seconds one request (head and body) may take to arrive
        ("http_cors_origins", ()),      # browser origins allowed (CORS); ["*"]: any
        ("http_webhook_origins", ("*",)),  # WebHook-Request-Origin values allowed to deliver
        ("http_webhook_rate", 0),       # WebHook-Allowed-Rate answered (0: "*", no limit)
        ("http_lineage", "keep"),       # ffhops/fftrace on the web doors: "keep" or "strip"
        # the Subscriptions API on the HTTP door (docs/subscriptions.md)
        ("subscriptions_max", 100000),  # subscriptions on the server (0: no limit)
        ("subscriptions_max_per_user", 10000),  # per owner (0: no limit)
        ("subscriptions_sink_hosts", ("*",)),   # webhook sink hosts allowed (fnmatch patterns)
        ("subscriptions_callback_url", None),   # the HTTP door's public URL (webhook callbacks)
        # conflation (docs/server.md "Conflation"): subscriptions inside these patterns keep
        # only the latest message per subject while their connection is behind, on every door
        ("conflate_subjects", ()),
        # the cluster (docs/cluster.md): the NATS servers of the backbone (none: one node)
        ("cluster_urls", ()),
        ("cluster_interest_interval", 1.0),    # seconds between heartbeats
        ("cluster_token", None),
        ("cluster_user", None),
        ("cluster_password", None),
        ("cluster_connect_wait", 2.0),  # seconds start waits for the first connection
        # replicated streams (JetStream): seconds an API request, a publish's
        # acknowledgement may take; a mirror's heartbeat (silent for 3: made again)
        ("cluster_api_timeout", 2.0),
        ("cluster_ack_timeout", 3.0),
        ("cluster_heartbeat", 1.0),
        # limits
        ("max_payload", MiB),
        ("max_control", 64 * KiB),
        ("max_connections", 65536),
        ("max_subscriptions", 65536),   # per connection, 0 = no limit
        ("max_pending", 64 * MiB),      # per connection: output not taken by the kernel
        ("max_pending_total", GiB),     # all connections: the largest one is cut above it
        ("max_connect", 8 * KiB),       # the largest frame/payload before CONNECT
        ("max_preauth_bytes", 64 * MiB),  # partial input of all unauthenticated clients
        ("write_high_water", 4 * MiB),  # a subscriber's transport buffer: publishers pause
        ("write_low_water", MiB),       # ... and resume below this
        ("stall_timeout", 2.0),         # seconds publishers may wait for a stalled subscriber
        ("ping_interval", 30.0),
        ("max_pings_out", 2),
        ("auth_timeout", 2.0),
        ("drain_timeout", 10.0),
        # auth
        ("token", None),                # one token with every permission
        ("tokens", ()),                 # [{"token", "permissions"}]
        ("users", ()),                  # [{"user", "password", "permissions"}]
        ("default_permissions", None),  # for users and tokens without their own
        ("login_free_failures", 5),     # failed logins from one address before the back-off
        ("login_backoff", 0.1),         # seconds: its first delay, doubled per failure (0: off)
        ("login_backoff_max", 1.0),     # ... up to this; a CONNECT that would wait longer is
                                        # refused at once
        # TLS
        ("tls_cert", None),
        ("tls_key", None),
        ("tls_ca", None),
        ("tls_verify", False),          # require a client certificate signed by tls_ca
        ("tls_handshake_timeout", 5.0),
        # streams created at start-up: [{"name", "subjects", "storage", retention...}]
        ("streams", ()),
        # accounts (docs/accounts.md): {name: {"exports", "imports", "streams"}}
        ("accounts", None),
        ("system_account", None),       # None: $SYS with accounts, else the one account
        ("metering_interval", 60.0),    # seconds between usage reports (0: none; the
                                        # totals are still kept, and saved at stop)
        # the trust policy of $G (docs/provenance.md): {"keys": {id: PEM file},
        # "rules": [{"subjects", "keys", "require"}]}; an account's: accounts.<name>.trust
        ("trust", None),
        # signed checkpoints of the streams' hash chains (server/checkpoints.py)
        ("checkpoint_events", 10000),   # events between two (0: no count trigger)
        ("checkpoint_interval", 10.0),  # seconds between two (0: no time trigger)
    )

    __slots__ = tuple(name for name, _ in FIELDS)

    def __init__(self, **settings):
        for name, default in self.FIELDS:
            setattr(self, name, default)
        for k, v in settings.items():
            if k not in self.__slots__:
                raise ConfigError("unknown setting {!r}".format(k))
            setattr(self, k, v)
        self.validate()

    def account_specs(self):
        """``{name: AccountSpec}`` of the accounts (``$G`` alone without any)."""
        from fastflow.accounts import AccountConfigError, check_accounts

        system = self.system_account
        if self.accounts and system is None:
            system = "$SYS"
        try:
            return check_accounts(self.accounts or {}, system)
        except AccountConfigError as exc:
            raise ConfigError(str(exc)) from None

    def trust_policies(self):
        """``{account name: TrustPolicy}`` of the accounts with a trust policy
        (``[trust]`` is ``$G``'s); ConfigError naming what is wrong."""
        from fastflow.trust.policy import TrustPolicy

        tables = {}
        if self.trust:
            tables["$G"] = (self.trust, "trust")
        for name, d in (self.accounts or {}).items():
            if isinstance(d, dict) and d.get("trust"):
                tables[name] = (d["trust"], "accounts.{}.trust".format(name))
        out = {}
        for name, (d, where) in tables.items():
            try:
                out[name] = TrustPolicy.from_config(d, where)
            except (ValueError, TypeError, OSError) as exc:
                raise ConfigError(str(exc)) from None
        return out

    def _check_accounts(self):
        specs = self.account_specs()
        for kind, items in (("users", self.users), ("tokens", self.tokens)):
            for i, u in enumerate(items):
                a = u.get("account")
                if a is not None and a not in specs:
                    raise ConfigError("auth.{}[{}].account: no account {!r} (accounts: {})".format(
                        kind, i, a, ", ".join(sorted(specs))))
        for name, spec in specs.items():
            for i, s in enumerate(spec.streams):
                stream_spec(s, "accounts.{}.streams[{}]".format(name, i))
        self.trust_policies()
        from fastflow.server.quotas import ACCOUNT_LIMITS, USER_LIMITS, Limits

        for kind, items in (("users", self.users), ("tokens", self.tokens)):
            for i, u in enumerate(items):
                if not isinstance(u.get("admin", False), bool):
                    raise ConfigError("auth.{}[{}].admin: true or false, got {!r}".format(
                        kind, i, u.get("admin")))

        for name, spec in specs.items():
            Limits.from_dict(spec.limits, "accounts.{}.limits".format(name), ACCOUNT_LIMITS)
        for kind, items in (("users", self.users), ("tokens", self.tokens)):
            for i, u in enumerate(items):
                Limits.from_dict(u.get("limits"), "auth.{}[{}].limits".format(kind, i),
                                 USER_LIMITS)

    @property
    def tls(self):
        return self.tls_cert is not None

    @property
    def auth_required(self):
        return bool(self.token or self.tokens or self.users)

    def to_dict(self):
        return {name: getattr(self, name) for name in self.__slots__}

    def copy(self, **changes):
        d = self.to_dict()
        d.update(changes)
        return ServerConfig(**d)

    def validate(self):
        """Check every value (raises ConfigError naming the setting)."""
        _str(self.host, "host")
        self.port = _int(self.port, "port")
        if self.port > 65535:
            raise ConfigError("port: expected 0..65535, got {}".format(self.port))
        self.monitor_port = _int(self.monitor_port, "monitor_port")
        if self.monitor_port > 65535:
            raise ConfigError("monitor_port: expected 0..65535 (0 = off), got {}".format(
                self.monitor_port))
        _str(self.monitor_host, "monitor_host", allow_none=True)
        self.mqtt_ws = _bool(self.mqtt_ws, "mqtt_ws")
        self.wake_readers = _bool(self.wake_readers, "wake_readers")
        self.monitor_console = _bool(self.monitor_console, "monitor.console")
        self.monitor_console_tail = _bool(self.monitor_console_tail, "monitor.console_tail")
        self.mqtt_port = _int(self.mqtt_port, "mqtt_port")
        if self.mqtt_port > 65535:
            raise ConfigError("mqtt_port: expected 0..65535 (0 = off), got {}".format(
                self.mqtt_port))
        _str(self.mqtt_host, "mqtt_host", allow_none=True)
        self.mqtt_max_queued = _int(self.mqtt_max_queued, "mqtt_max_queued")
        self.mqtt_session_expiry_max = min(0xFFFFFFFF, int(parse_duration(
            self.mqtt_session_expiry_max, "mqtt_session_expiry_max")))
        for key, lo, hi in (("mqtt_max_inflight", 1, 65535), ("mqtt_max_topic_alias", 0, 65535),
                            ("mqtt_max_keepalive", 0, 65535)):
            v = _int(getattr(self, key), key)
            if not lo <= v <= hi:
                raise ConfigError("{}: expected {}..{}, got {}".format(key, lo, hi, v))
            setattr(self, key, v)
        self.mqtt_max_packet = parse_size(self.mqtt_max_packet, "mqtt_max_packet")
        if self.mqtt_max_packet and not 64 <= self.mqtt_max_packet <= 268435460:
            raise ConfigError("mqtt_max_packet: expected 64 bytes to 256 MiB (0: from "
                              "max_payload), got {}".format(self.mqtt_max_packet))
        self.mqtt_structured = _str_list(self.mqtt_structured, "mqtt_structured")
        for flt in self.mqtt_structured:
            from fastflow.mqtt import mqtt_filter_to_patterns

            try:
                mqtt_filter_to_patterns(flt)
            except ValueError as exc:
                raise ConfigError("mqtt_structured: {}".format(exc)) from None
        self.conflate_subjects = _str_list(self.conflate_subjects, "conflate.subjects")
        for p in self.conflate_subjects:
            from fastflow._impl import validate_pattern

            try:
                validate_pattern(p)
            except ValueError as exc:
                raise ConfigError("conflate.subjects: {}".format(exc)) from None
        if isinstance(self.cluster_urls, str):
            self.cluster_urls = [u for u in self.cluster_urls.split(",") if u.strip()]
        self.cluster_urls = tuple(_str_list(self.cluster_urls, "cluster.urls"))
        if self.cluster_urls:
            from fastflow.cluster.link import parse_urls

            try:
                parse_urls(self.cluster_urls)
            except ValueError as exc:
                raise ConfigError("cluster.urls: {}".format(exc)) from None
        for key in ("cluster_interest_interval", "cluster_connect_wait", "cluster_api_timeout",
                    "cluster_ack_timeout", "cluster_heartbeat"):
            setattr(self, key, parse_duration(getattr(self, key), key))
        for key in ("cluster_interest_interval", "cluster_api_timeout", "cluster_ack_timeout",
                    "cluster_heartbeat"):
            if getattr(self, key) <= 0:
                raise ConfigError("{}: must be > 0".format(key.replace("_", ".", 1)))
        for key in ("cluster_token", "cluster_user", "cluster_password"):
            _str(getattr(self, key), key.replace("_", ".", 1), allow_none=True)
        self.nats_port = _int(self.nats_port, "nats_port")
        if self.nats_port > 65535:
            raise ConfigError("nats_port: expected 0..65535 (0 = off), got {}".format(
                self.nats_port))
        _str(self.nats_host, "nats_host", allow_none=True)
        self.nats_max_control = parse_size(self.nats_max_control, "nats_max_control")
        if not 32 <= self.nats_max_control <= MiB:
            raise ConfigError("nats_max_control: expected 32 bytes to 1 MiB, got {}".format(
                self.nats_max_control))
        self.http_port = _int(self.http_port, "http_port")
        if self.http_port > 65535:
            raise ConfigError("http_port: expected 0..65535 (0 = off), got {}".format(
                self.http_port))
        _str(self.http_host, "http_host", allow_none=True)
        self.http_max_header = parse_size(self.http_max_header, "http_max_header")
        if not 1 * KiB <= self.http_max_header <= MiB:
            raise ConfigError("http_max_header: expected 1 KiB to 1 MiB, got {}".format(
                self.http_max_header))
        self.http_max_headers = _int(self.http_max_headers, "http_max_headers")
        if not 8 <= self.http_max_headers <= 1000:
            raise ConfigError("http_max_headers: expected 8..1000, got {}".format(
                self.http_max_headers))
        self.http_max_body = parse_size(self.http_max_body, "http_max_body")
        if self.http_max_body < 1:
            raise ConfigError("http_max_body: expected at least 1 byte, got {}".format(
                self.http_max_body))
        for key in ("http_idle_timeout", "http_request_timeout"):
            v = parse_duration(getattr(self, key), key)
            if not v > 0:
                raise ConfigError("{}: expected a duration > 0, got {!r}".format(key, v))
            setattr(self, key, v)
        for key in ("http_cors_origins", "http_webhook_origins"):
            v = getattr(self, key)
            if isinstance(v, str) or not all(isinstance(o, str) and o and
                                             not any(c in o for c in "\r\n\0 ,")
                                             for o in v):
                raise ConfigError("{}: expected a list of origins (strings without spaces, "
                                  "commas or control characters), got {!r}".format(key, v))
            setattr(self, key, tuple(v))
        self.http_webhook_rate = _int(self.http_webhook_rate, "http_webhook_rate")
        if self.http_lineage not in ("keep", "strip"):
            raise ConfigError("http_lineage: expected \"keep\" or \"strip\", got {!r}".format(
                self.http_lineage))
        for key in ("subscriptions_max", "subscriptions_max_per_user"):
            setattr(self, key, _int(getattr(self, key), key))
        v = self.subscriptions_sink_hosts
        if isinstance(v, str) or not all(isinstance(o, str) and o and
                                         not any(c in o for c in "\r\n\0 ,/") for o in v):
            raise ConfigError("subscriptions_sink_hosts: expected a list of host name patterns "
                              "(\"*\", \"*.example.com\", \"127.0.0.1\"), got {!r}".format(v))
        self.subscriptions_sink_hosts = tuple(o.lower() for o in v)
        cb = self.subscriptions_callback_url
        if cb is not None and (not isinstance(cb, str) or not re.match(
                r"https?://[!-~]+\Z", cb) or "?" in cb or "#" in cb):
            raise ConfigError("subscriptions_callback_url: expected the HTTP door's public "
                              "http(s) URL (printable ASCII, no query), got {!r}".format(cb))
        if self.nats_lineage not in ("keep", "strip"):
            raise ConfigError("nats_lineage: expected \"keep\" or \"strip\", got {!r}".format(
                self.nats_lineage))
        _str(self.name, "name", allow_none=True)
        if self.data_dir is not None:
            self.data_dir = os.fspath(self.data_dir)
        if self.fsync not in ("always", "interval", "never"):
            raise ConfigError("fsync: expected 'always', 'interval' or 'never', got {!r}".format(
                self.fsync))
        if self.loop not in LOOPS:
            raise ConfigError("loop: expected one of {}, got {!r}".format(", ".join(LOOPS),
                                                                          self.loop))
        if str(self.log_level).lower() not in LOG_LEVELS:
            raise ConfigError("log_level: expected one of {}, got {!r}".format(
                ", ".join(LOG_LEVELS), self.log_level))
        self.log_level = str(self.log_level).lower()
        for key in ("max_payload", "max_control", "max_pending", "write_high_water",
                    "write_low_water", "max_pending_total", "max_connect",
                    "max_preauth_bytes"):
            setattr(self, key, parse_size(getattr(self, key), key))
        if not 256 <= self.max_connect <= MiB:
            raise ConfigError("max_connect: expected 256 bytes to 1 MiB, got {}".format(
                self.max_connect))
        if self.max_preauth_bytes and self.max_preauth_bytes < self.max_connect:
            raise ConfigError("max_preauth_bytes ({}) must hold one frame of max_connect ({}) "
                              "(or be 0 = no limit)".format(self.max_preauth_bytes,
                                                            self.max_connect))
        if self.max_payload < 1:
            raise ConfigError("max_payload: expected at least 1 byte, got {}".format(
                self.max_payload))
        if not 256 <= self.max_control <= 65535 * 2:
            raise ConfigError("max_control: expected 256 bytes to 128 KiB, got {}".format(
                self.max_control))
        if self.max_pending and self.max_pending < self.max_payload + 2 * 65536:
            raise ConfigError("max_pending ({}) must leave room for one message of max_payload "
                              "({}) and its subject and reply (or be 0 = no limit)".format(
                                  self.max_pending, self.max_payload))
        if self.write_low_water > self.write_high_water:
            raise ConfigError("write_low_water ({}) must not exceed write_high_water ({})".format(
                self.write_low_water, self.write_high_water))
        for key in ("max_connections", "max_subscriptions", "max_pings_out",
                    "login_free_failures", "checkpoint_events"):
            setattr(self, key, _int(getattr(self, key), key))
        for key in ("stall_timeout", "ping_interval", "auth_timeout", "drain_timeout",
                    "tls_handshake_timeout", "login_backoff", "login_backoff_max",
                    "metering_interval", "checkpoint_interval"):
            setattr(self, key, parse_duration(getattr(self, key), key))
        if self.auth_timeout <= 0:
            raise ConfigError("auth_timeout: must be > 0, got {}".format(self.auth_timeout))
        if self.tls_handshake_timeout <= 0:
            raise ConfigError("tls_handshake_timeout: must be > 0")
        _str(self.token, "token", allow_none=True)
        self.tokens = tuple(self.tokens)
        self.users = tuple(self.users)
        for i, t in enumerate(self.tokens):
            _check_keys(t, ("token", "name", "permissions", "account", "limits", "admin"),
                        "auth.tokens[{}]".format(i))
            _str(t.get("token"), "auth.tokens[{}].token".format(i))
        seen = set()
        for i, u in enumerate(self.users):
            _check_keys(u, ("user", "password", "permissions", "account", "limits", "admin"),
                        "auth.users[{}]".format(i))
            name = _str(u.get("user"), "auth.users[{}].user".format(i))
            _str(u.get("password"), "auth.users[{}].password".format(i))
            if name in seen:
                raise ConfigError("auth.users: user {!r} is listed twice".format(name))
            seen.add(name)
        _str(self.monitor_token, "monitor.token", allow_none=True)
        self.monitor_users = tuple(self.monitor_users)
        for i, u in enumerate(self.monitor_users):
            _check_keys(u, ("user", "password"), "monitor.users[{}]".format(i))
            _str(u.get("user"), "monitor.users[{}].user".format(i))
            _str(u.get("password"), "monitor.users[{}].password".format(i))
        self.tls_verify = _bool(self.tls_verify, "tls_verify")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls: give both a certificate (tls_cert) and its key (tls_key)")
        if self.tls_verify and self.tls_ca is None:
            raise ConfigError("tls_verify needs tls_ca, the CA file that signs client "
                              "certificates")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ConfigError("tls_ca given without tls_cert/tls_key")
        self.streams = tuple(self.streams)
        self._check_accounts()
        names = set()
        for i, s in enumerate(self.streams):
            if stream_spec(s, "streams[{}]".format(i))[4] > 1 and not self.cluster_urls:
                raise ConfigError("streams[{}] ({!r}): replicas = {} needs a cluster "
                                  "([cluster] urls, or --cluster)".format(
                                      i, s["name"], s["replicas"]))
            if s["name"] in names:
                raise ConfigError("streams: stream {!r} is listed twice".format(s["name"]))
            names.add(s["name"])
        return self


_RETENTION_KEYS = ("max_events", "max_bytes", "max_age", "max_per_subject", "max_event_size",
                   "discard", "duplicate_window")


MAX_REPLICAS = 5                        # JetStream's most replicas of a stream


def stream_spec(s, where):
    """Check one ``[[streams]]`` entry; returns (name, subjects, Retention,
    storage, replicas)."""
    _check_keys(s, ("name", "subjects", "storage", "replicas") + _RETENTION_KEYS, where)
    name = _str(s.get("name"), where + ".name")
    try:
        _check_stream_name("stream", name)
    except ValueError as exc:
        raise ConfigError("{}.name: {}".format(where, exc)) from None
    subjects = _str_list(s.get("subjects", ()), where + ".subjects")
    if not subjects:
        raise ConfigError("{}.subjects: a stream needs at least one subject pattern".format(where))
    storage = s.get("storage")
    if storage not in (None, "memory", "file"):
        raise ConfigError("{}.storage: expected 'memory' or 'file', got {!r}".format(
            where, storage))
    kw = {}
    for k in _RETENTION_KEYS:
        if k not in s:
            continue
        v = s[k]
        if k in ("max_bytes", "max_event_size"):
            v = parse_size(v, "{}.{}".format(where, k))
        elif k in ("max_age", "duplicate_window"):
            v = parse_duration(v, "{}.{}".format(where, k))
        kw[k] = v
    try:
        retention = Retention(**kw)
    except ValueError as exc:
        raise ConfigError("{}: {}".format(where, exc)) from None
    replicas = s.get("replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or \
            not 1 <= replicas <= MAX_REPLICAS:
        raise ConfigError("{}.replicas: expected an int in 1..{} (1: a local stream; more: "
                          "replicated in the cluster's JetStream), got {!r}".format(
                              where, MAX_REPLICAS, replicas))
    return name, subjects, retention, storage, replicas


# -- the TOML file -------------------------------------------------------------------

# top-level key -> ServerConfig field (tables are flattened below)
_TOP = {"host": "host", "port": "port", "name": "name", "data_dir": "data_dir",
        "fsync": "fsync", "wake_readers": "wake_readers", "loop": "loop", "log_level": "log_level",
        "system_account": "system_account"}
_TABLES = {
    "monitor": {"host": "monitor_host", "port": "monitor_port", "token": "monitor_token",
                "users": "monitor_users", "console": "monitor_console",
                "console_tail": "monitor_console_tail"},
    "nats": {"host": "nats_host", "port": "nats_port", "max_control": "nats_max_control",
             "lineage": "nats_lineage"},
    "mqtt": {"host": "mqtt_host", "port": "mqtt_port", "max_queued": "mqtt_max_queued",
             "max_inflight": "mqtt_max_inflight", "max_topic_alias": "mqtt_max_topic_alias",
             "max_packet": "mqtt_max_packet", "max_keepalive": "mqtt_max_keepalive",
             "structured": "mqtt_structured", "ws": "mqtt_ws",
             "session_expiry_max": "mqtt_session_expiry_max"},
    "http": {"host": "http_host", "port": "http_port", "max_header": "http_max_header",
             "max_headers": "http_max_headers", "max_body": "http_max_body",
             "idle_timeout": "http_idle_timeout", "request_timeout": "http_request_timeout",
             "cors_origins": "http_cors_origins", "webhook_origins": "http_webhook_origins",
             "webhook_rate": "http_webhook_rate", "lineage": "http_lineage"},
    "subscriptions": {"max": "subscriptions_max", "max_per_user": "subscriptions_max_per_user",
                      "sink_hosts": "subscriptions_sink_hosts",
                      "callback_url": "subscriptions_callback_url"},
    "conflate": {"subjects": "conflate_subjects"},
    "cluster": {"urls": "cluster_urls", "interest_interval": "cluster_interest_interval",
                "token": "cluster_token", "user": "cluster_user",
                "password": "cluster_password", "connect_wait": "cluster_connect_wait",
                "api_timeout": "cluster_api_timeout", "ack_timeout": "cluster_ack_timeout",
                "heartbeat": "cluster_heartbeat"},
    "limits": {k: k for k in ("max_payload", "max_control", "max_connections",
                              "max_subscriptions", "max_pending", "write_high_water",
                              "write_low_water", "stall_timeout", "ping_interval",
                              "max_pings_out", "auth_timeout", "drain_timeout",
                              "max_pending_total", "max_connect", "max_preauth_bytes")},
    "auth": {"token": "token", "tokens": "tokens", "users": "users",
             "default_permissions": "default_permissions",
             "login_free_failures": "login_free_failures", "login_backoff": "login_backoff",
             "login_backoff_max": "login_backoff_max"},
    "metering": {"interval": "metering_interval"},
    "provenance": {"checkpoint_events": "checkpoint_events",
                   "checkpoint_interval": "checkpoint_interval"},
    "tls": {"cert": "tls_cert", "key": "tls_key", "ca": "tls_ca", "verify": "tls_verify",
            "handshake_timeout": "tls_handshake_timeout"},
}


def _toml_module():
    try:
        import tomllib
        return tomllib
    except ImportError:
        pass
    try:
        import tomli
        return tomli
    except ImportError:
        raise ConfigError("reading a TOML config file needs Python 3.11 (tomllib) or the "
                          "'tomli' package on Python 3.9/3.10: pip install tomli") from None


def load_config(path):
    """The settings of a TOML config file (a dict for ``config_from_dict``)."""
    toml = _toml_module()
    try:
        with open(path, "rb") as f:
            data = toml.load(f)
    except OSError as exc:
        raise ConfigError("{}: cannot read the config file: {}".format(
            path, exc.strerror or exc)) from None
    except ValueError as exc:           # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError("{}: not valid TOML: {}".format(path, exc)) from None
    base = os.path.dirname(os.path.abspath(path))
    out = config_from_dict(data, where=os.fspath(path))
    # relative paths in the file are relative to the file
    for key in ("data_dir", "tls_cert", "tls_key", "tls_ca"):
        v = out.get(key)
        if isinstance(v, str) and not os.path.isabs(v):
            out[key] = os.path.join(base, v)
    trusts = [out.get("trust")] + [a.get("trust") for a in (out.get("accounts") or {}).values()
                                   if isinstance(a, dict)]
    for t in trusts:        # (the key files of trust policies, too)
        keys = t.get("keys") if isinstance(t, dict) else None
        if isinstance(keys, dict):
            for kid, v in keys.items():
                if isinstance(v, str) and "-----BEGIN" not in v and not os.path.isabs(v):
                    keys[kid] = os.path.join(base, v)
    return out


def config_from_dict(data, where="config"):
    """Flatten and check the shape of a config dict (the TOML file's
    layout); returns ServerConfig keyword arguments."""
    allowed = set(_TOP) | set(_TABLES) | {"streams", "accounts", "trust"}
    _check_keys(data, allowed, where)
    out = {}
    for k, v in data.items():
        if k in _TOP:
            out[_TOP[k]] = v
        elif k == "streams":
            if not isinstance(v, list):
                raise ConfigError("{}: 'streams' must be an array of tables ([[streams]])"
                                  .format(where))
            out["streams"] = v
        elif k == "trust":
            if not isinstance(v, dict):
                raise ConfigError("{}: 'trust' must be a table ([trust])".format(where))
            out["trust"] = v
        elif k == "accounts":
            if not isinstance(v, dict):
                raise ConfigError("{}: 'accounts' must be tables ([accounts.<name>])".format(
                    where))
            out["accounts"] = v
        else:
            table = _TABLES[k]
            _check_keys(v, table, "{}: [{}]".format(where, k))
            for tk, tv in v.items():
                out[table[tk]] = tv
    if "users" in out and not isinstance(out["users"], list):
        raise ConfigError("{}: 'auth.users' must be an array of tables ([[auth.users]])"
                          .format(where))
    if "tokens" in out and not isinstance(out["tokens"], list):
        raise ConfigError("{}: 'auth.tokens' must be an array of tables ([[auth.tokens]])"
                          .format(where))
    return out


# command-line flag (argparse dest) -> ServerConfig field
_ARGS = {"host": "host", "port": "port", "data_dir": "data_dir", "monitor_port": "monitor_port",
         "nats_port": "nats_port", "nats_host": "nats_host",
         "mqtt_port": "mqtt_port", "mqtt_host": "mqtt_host",
         "http_port": "http_port", "http_host": "http_host",
         "monitor_host": "monitor_host", "name": "name", "max_payload": "max_payload",
         "max_connections": "max_connections", "max_subscriptions": "max_subscriptions",
         "max_pending": "max_pending", "auth_token": "token", "tls_cert": "tls_cert",
         "tls_key": "tls_key", "tls_ca": "tls_ca", "loop": "loop", "log_level": "log_level",
         "cluster": "cluster_urls"}


def apply_args(settings, args):
    """Lay the command-line flags that were given (not None) over
    ``settings`` (a dict of ServerConfig keywords); returns the dict."""
    out = dict(settings)
    for dest, field in _ARGS.items():
        v = getattr(args, dest, None)
        if v is not None:
            out[field] = v
    if getattr(args, "tls_verify", False):
        out["tls_verify"] = True
    user = getattr(args, "user", None)
    password = getattr(args, "password", None)
    if (user is None) != (password is None):
        raise ConfigError("--user and --password go together")
    if user is not None:
        users = [u for u in out.get("users", ()) if u.get("user") != user]
        users.append({"user": user, "password": password})
        out["users"] = users
    return out
