"""The site's customer repository: merged records, their history, and the outbox to HQ.

A local edit (:meth:`SiteCustomers.upsert`) writes the merged record, one history row per
changed field and a ``"customer"`` outbox entry in one SQLite transaction, so HQ learns of every
edit exactly when it is committed. Changes pushed from HQ (:meth:`SiteCustomers.apply_remote`)
are merged the same way but not sent back. There is no delete: records and history are kept
forever (the schema's triggers refuse deletes too).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.store.hlc import Hlc, HlcClock
from gateway.store.merge import (
    CUSTOMER_FIELDS,
    STAMPS,
    CustomerChange,
    merge,
    merge_records,
    normalize_phone,
    record_changes,
)
from gateway.store.sqlite import SqliteSiteStore

__all__ = ["CUSTOMER_KIND", "ExportFilter", "SiteCustomers", "customer_search_sql"]

log = logging.getLogger(__name__)

CUSTOMER_KIND: Final = "customer"
"""Outbox kind of a customer change; payload = :meth:`CustomerChange.to_payload`."""


@dataclass(frozen=True, slots=True)
class ExportFilter:
    """Which of a site's data leaves for HQ. Data not exported stays in the site database.

    ``kinds``: outbox kinds sent to HQ (``"cdr"``, ``"interaction"``, ``"voicemail"``,
    ``"callback"``, ``"customer"``); ``None`` (default) sends all. ``customer_fields``: customer
    fields sent to HQ; ``None`` (default) sends all; ``customer_id`` always goes (it is the
    identity). A customer edit that touches only local fields writes no outbox entry.
    """

    kinds: frozenset[str] | None = None
    customer_fields: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.customer_fields is not None:
            unknown = set(self.customer_fields) - set(CUSTOMER_FIELDS)
            if unknown:
                raise ValueError(f"export customer_fields: unknown fields {sorted(unknown)}")

    def allows_kind(self, kind: str) -> bool:
        """Does data of outbox ``kind`` leave the site?"""
        return self.kinds is None or kind in self.kinds

    def customer_payload(self, change: CustomerChange) -> dict[str, Any] | None:
        """The outbox payload for ``change``, with local-only fields left out; ``None`` when
        nothing of it leaves the site."""
        if not self.allows_kind(CUSTOMER_KIND):
            return None
        payload = change.to_payload(self.customer_fields)
        return payload if payload["fields"] else None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _greatest_hlc(record: Mapping[str, Any]) -> str:
    return max((s["hlc"] for s in record[STAMPS].values()), default="")


class SiteCustomers:
    """Customer records in a site's :class:`SqliteSiteStore` (migration 0004).

    ``site`` names this site in the changes it makes; ``now`` stamps ``applied_ts`` and
    ``updated_ts`` (Unix seconds). Methods are synchronous small transactions, like the store's.
    """

    def __init__(
        self,
        store: SqliteSiteStore,
        site: str,
        *,
        export_filter: ExportFilter | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not site:
            raise ValueError("site is empty")
        self._store = store
        self.site = site
        self.export_filter = ExportFilter() if export_filter is None else export_filter
        self._now = now

    # --- writes ---------------------------------------------------------------------------

    def upsert(
        self, customer_id: str, fields: Mapping[str, Any], author: str, *, clock: HlcClock
    ) -> CustomerChange:
        """Create or edit a customer: merge ``fields`` (stamped ``clock.tick()``) into the
        record, append history, and queue the exported part for HQ, all in one transaction.
        Returns the change. ``ValueError`` for an invalid change (nothing is written)."""
        with self._store.transaction() as conn:
            # Tick under the store's lock, so stamps follow commit order at this site.
            change = CustomerChange(customer_id, dict(fields), clock.tick(), self.site, author)
            self._apply(conn, change)
            payload = self.export_filter.customer_payload(change)
            if payload is not None:
                self._store.append_outbox(conn, CUSTOMER_KIND, payload)
        return change

    def apply_remote(
        self, change: CustomerChange, *, clock: HlcClock | None = None
    ) -> dict[str, Any]:
        """Merge a change made elsewhere (pushed by HQ) without queueing it for HQ; applying
        it again changes nothing. ``clock``: observe the change's stamp, so later local edits
        order after it. Returns the merged record."""
        if clock is not None:
            clock.observe(change.hlc)
        with self._store.transaction() as conn:
            return self._apply(conn, change)

    def apply_remote_record(
        self, record: Mapping[str, Any], *, clock: HlcClock | None = None
    ) -> dict[str, Any]:
        """Merge a whole merged record from HQ's change feed (see
        :meth:`gateway.hq.store.CentralStore.customer_changes`); returns the merged record."""
        changes = record_changes(record)
        if clock is not None:
            for change in changes:
                clock.observe(change.hlc)
        with self._store.transaction() as conn:
            current = self._load(conn, record["customer_id"])
            merged = merge_records(current, record)
            self._write(conn, current, merged, changes)
            return merged

    def _apply(self, conn: sqlite3.Connection, change: CustomerChange) -> dict[str, Any]:
        current = self._load(conn, change.customer_id)
        merged = merge(current, change)
        self._write(conn, current, merged, [change])
        return merged

    def _write(
        self,
        conn: sqlite3.Connection,
        current: Mapping[str, Any] | None,
        merged: dict[str, Any],
        changes: Collection[CustomerChange],
    ) -> None:
        now = self._now()
        cid = merged["customer_id"]
        conn.executemany(
            "INSERT OR IGNORE INTO customer_history "
            "(customer_id, field, value, hlc, site, author, applied_ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (cid, name, _dumps(value), str(c.hlc), c.site, c.author, now)
                for c in changes
                for name, value in c.fields.items()
            ],
        )
        if current == merged:
            return
        name = merged["name"] or ""
        conn.execute(
            "INSERT INTO customers "
            "(customer_id, record, name, name_lc, region, updated_hlc, updated_ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (customer_id) DO UPDATE SET record = excluded.record, "
            "name = excluded.name, name_lc = excluded.name_lc, region = excluded.region, "
            "updated_hlc = excluded.updated_hlc, updated_ts = excluded.updated_ts",
            (cid, _dumps(merged), name, name.lower(), merged["region"], _greatest_hlc(merged), now),
        )
        if current is None or current.get("phones") != merged["phones"]:
            conn.execute("DELETE FROM customer_phones WHERE customer_id = ?", (cid,))
            conn.executemany(
                "INSERT OR IGNORE INTO customer_phones (phone, customer_id) VALUES (?, ?)",
                [(p, cid) for p in merged["phones"]],
            )

    @staticmethod
    def _load(conn: sqlite3.Connection, customer_id: str) -> dict[str, Any] | None:
        row = conn.execute(
            "SELECT record FROM customers WHERE customer_id = ?", (customer_id,)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    # --- reads ----------------------------------------------------------------------------

    def get(self, customer_id: str) -> dict[str, Any] | None:
        """The merged record of ``customer_id`` (with ``"_stamps"``), or ``None``."""
        with self._store.transaction() as conn:
            return self._load(conn, customer_id)

    def by_phone(self, number: str) -> list[dict[str, Any]]:
        """Customers with phone ``number`` (any formatting; see
        :func:`~gateway.store.merge.normalize_phone`), by customer id; ``[]`` when ``number``
        is not a phone number (``"anonymous"``)."""
        return self.search(phone=number, limit=100)

    def search(
        self,
        *,
        phone: str | None = None,
        customer_id: str | None = None,
        region: str | None = None,
        name: str | None = None,
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        """Customers matching every criterion given (``name``: case-blind substring), by
        customer id. ``ValueError`` when no criterion is given."""
        sql, args = customer_search_sql(phone, customer_id, region, name, limit)
        if not sql:
            return []
        with self._store.transaction() as conn:
            return [dict(json.loads(r[0])) for r in conn.execute(sql, args)]

    def history(self, customer_id: str) -> list[CustomerChange]:
        """Every change of ``customer_id`` this site has seen, oldest stamp first (fields of
        one change grouped back together; values as they were set)."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                "SELECT field, value, hlc, site, author FROM customer_history "
                "WHERE customer_id = ? ORDER BY hlc, site, author, id",
                (customer_id,),
            ).fetchall()
        groups: dict[tuple[str, str, str], dict[str, Any]] = {}
        for field, value, hlc, site, author in rows:
            groups.setdefault((hlc, site, author), {})[field] = json.loads(value)
        return [
            CustomerChange(customer_id, fields, Hlc.parse(hlc), site, author)
            for (hlc, site, author), fields in groups.items()
        ]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def customer_search_sql(
    phone: str | None,
    customer_id: str | None,
    region: str | None,
    name: str | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """SQL (``?`` placeholders) and arguments for a customer search over the ``customers`` and
    ``customer_phones`` tables (site and HQ share their shape); ``""`` when nothing can match.
    ``ValueError`` when no criterion is given."""
    if phone is None and customer_id is None and region is None and name is None:
        raise ValueError("give at least one of phone, customer_id, region, name")
    where: list[str] = []
    args: list[Any] = []
    sql = "SELECT c.record FROM customers c"
    if phone is not None:
        try:
            number = normalize_phone(phone)
        except ValueError:
            return "", []
        sql += " JOIN customer_phones p ON p.customer_id = c.customer_id"
        where.append("p.phone = ?")
        args.append(number)
    if customer_id is not None:
        where.append("c.customer_id = ?")
        args.append(customer_id)
    if region is not None:
        where.append("c.region = ?")
        args.append(region)
    if name is not None:
        where.append("c.name_lc LIKE ? ESCAPE '\\'")
        args.append(f"%{_like_escape(name.lower())}%")
    sql += " WHERE " + " AND ".join(where) + " ORDER BY c.customer_id LIMIT ?"
    args.append(max(0, limit))
    return sql, args
