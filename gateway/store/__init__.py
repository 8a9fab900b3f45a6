"""The site's SQLite store: CDRs and the outbox (later customers and interactions).

``SiteStore`` is the seam; ``SqliteSiteStore`` the implementation; schema changes are numbered
``migrations/NNNN_name.sql`` files applied at open.
"""

from gateway.store.base import SchemaTooNewError, SiteStore, StoreError
from gateway.store.model import Cdr, OutboxEntry
from gateway.store.sqlite import SqliteSiteStore

__all__ = [
    "Cdr",
    "OutboxEntry",
    "SchemaTooNewError",
    "SiteStore",
    "SqliteSiteStore",
    "StoreError",
]
