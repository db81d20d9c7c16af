"""Several fastflow nodes as one system through a NATS cluster (the
backbone): docs/cluster.md.  ``Link`` is a node's connection to it."""

from fastflow.cluster.link import Link, Msg, parse_urls

__all__ = ("Link", "Msg", "parse_urls")
