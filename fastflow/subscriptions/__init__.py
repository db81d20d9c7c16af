"""Self-service flow: the CloudEvents Subscriptions API's subscriptions
over the engine's streams, their filters (``exact``, ``prefix``,
``suffix``, ``all``, ``any``, ``not``, CESQL) and their delivery to
webhooks and NATS subjects (docs/subscriptions.md).

``SubscriptionManager`` is the service; the server's HTTP door answers
the API with it (``fastflow.server.subscriptions``)."""

import fnmatch

from fastflow.subscriptions.filters import FilterError, FilterIndex, compile_filter
from fastflow.subscriptions.manager import SubscriptionLimit, SubscriptionManager
from fastflow.subscriptions.model import parse

__all__ = ("FilterError", "FilterIndex", "SubscriptionLimit", "SubscriptionManager",
           "compile_filter", "parse", "sink_host_check")


def sink_host_check(patterns):
    """``check(urlsplit) -> None or why not``: webhook sinks only on hosts
    matching one of ``patterns`` (fnmatch, lowercase; ``"*"``: any)."""
    patterns = tuple(p.lower() for p in patterns)
    if "*" in patterns:
        return None

    def check(u):
        host = (u.hostname or "").lower()
        if any(fnmatch.fnmatchcase(host, p) for p in patterns):
            return None
        return "webhook sinks on {!r} are not allowed here (subscriptions.sink_hosts)".format(
            host[:200])
    return check
