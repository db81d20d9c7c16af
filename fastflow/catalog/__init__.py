"""The discovery catalog (docs/catalog.md): an xRegistry of the server's
doors (``endpoints``), its streams and the CloudEvents types seen in them
(``messagegroups``), and the JSON Schemas producers register
(``schemagroups``).

``Catalog`` is the service; the server's HTTP door answers the xRegistry
HTTP binding with it (``fastflow.server.catalog``)."""

from fastflow.catalog.model import SPECVERSION, XRegistryError, check_document, model
from fastflow.catalog.registry import Access, Catalog, message_id
from fastflow.catalog.tracker import Trackers, TypeTracker

__all__ = ("SPECVERSION", "Access", "Catalog", "Trackers", "TypeTracker", "XRegistryError",
           "check_document", "message_id", "model")
