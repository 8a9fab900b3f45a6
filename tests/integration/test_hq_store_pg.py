"""HQ central store on a real PostgreSQL server: the SQLite store's behavioural tests, run again.

One server per module (tests/integration/pg_server.py: initdb in a temporary directory, a free
127.0.0.1 port, stopped by PID at teardown); one fresh database per test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from gateway.hq.store import PostgresCentralStore, SyncEntry

from ..unit.test_hq_store_sqlite import (
    Backend,
    cdr,
    customer,
    interaction,
    test_a_later_batch_updates_the_same_row,
    test_applied_rows_survive_reopen,
    test_batch_out_of_order_and_duplicated_is_applied_in_seq_order,
    test_concurrent_edits_at_two_sites_resolve_the_same_in_any_order,
    test_concurrent_replays_apply_once,
    test_customer_change_feed,
    test_failed_batch_leaves_nothing_and_high_water_unchanged,
    test_gap_is_applied_logged_as_an_error_and_late_lower_seqs_are_ignored,
    test_high_water_is_per_site_and_equal_ids_do_not_collide,
    test_history_is_append_only_and_keeps_every_value,
    test_lookup_by_each_key,
    test_mixed_batch_throughput,
    test_open_applies_migrations_once,
    test_phone_index_follows_the_merged_phones,
    test_replays_and_overlaps_apply_once,
    test_unknown_kinds_and_malformed_payloads_are_kept,
)
from .pg_server import PgServer, serve_pg

pytestmark = pytest.mark.integration

__all__ = [
    "test_a_later_batch_updates_the_same_row",
    "test_applied_rows_survive_reopen",
    "test_batch_out_of_order_and_duplicated_is_applied_in_seq_order",
    "test_concurrent_edits_at_two_sites_resolve_the_same_in_any_order",
    "test_concurrent_replays_apply_once",
    "test_customer_change_feed",
    "test_failed_batch_leaves_nothing_and_high_water_unchanged",
    "test_gap_is_applied_logged_as_an_error_and_late_lower_seqs_are_ignored",
    "test_high_water_is_per_site_and_equal_ids_do_not_collide",
    "test_history_is_append_only_and_keeps_every_value",
    "test_lookup_by_each_key",
    "test_mixed_batch_throughput",
    "test_open_applies_migrations_once",
    "test_phone_index_follows_the_merged_phones",
    "test_replays_and_overlaps_apply_once",
    "test_unknown_kinds_and_malformed_payloads_are_kept",
]


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    yield from serve_pg()


def _raw(url: str) -> Callable[[str], None]:
    import psycopg

    def run(sql: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)

    return run


@pytest.fixture
def backend(pg_server: PgServer) -> Backend:
    url = pg_server.create_database()
    return Backend(
        url=url,
        raw=_raw(url),
        fail_trigger_sql=[
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.call_id = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER boom BEFORE INSERT ON interactions FOR EACH ROW "
            "EXECUTE FUNCTION boom()",
        ],
    )


def test_reconnects_after_the_connection_is_killed(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        assert isinstance(store, PostgresCentralStore)
        try:
            assert await store.apply_batch("sh", [cdr(1, 1)]) == 1
            backend.raw(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            with pytest.raises(Exception):  # noqa: B017 - the call in flight fails...
                await store.high_water("sh")
            assert await store.apply_batch("sh", [cdr(1, 1), cdr(2, 2)]) == 2  # ...then reconnects
            assert (await store.counts())["cdrs"] == 2
        finally:
            await store.close()

    asyncio.run(main())


def test_two_hq_processes_apply_each_entry_once(backend: Backend) -> None:
    """Two stores (two connections) racing on the same site's entries: the sync_state row lock
    serialises them and the loser's entries are all at or below the new high-water mark."""

    async def main() -> None:
        a, b = await backend.open(), await backend.open()
        try:
            batches = [
                [
                    cdr(s, s) if s % 2 else customer(s, f"C{s % 7}", {"notes": f"{s}"}, s)
                    for s in range(lo, lo + 100)
                ]
                for lo in range(1, 1001, 100)
            ]
            for batch in batches:
                await asyncio.gather(a.apply_batch("sh", batch), b.apply_batch("sh", batch))
            counts = await a.counts()
            assert counts["cdrs"] == 500
            assert counts["customer_history"] == 500
            assert await b.high_water("sh") == 1000
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_interaction_payload_is_jsonb(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        assert isinstance(store, PostgresCentralStore)
        try:
            await store.apply_batch(
                "sh", [interaction(1, 1), SyncEntry(2, "voicemail", {"id": 1, "box": "b"}, 1)]
            )
            rows = await store._fetch("SELECT payload -> 'variables' ->> 'a' FROM interactions", [])
            assert rows == [("1",)]
        finally:
            await store.close()

    asyncio.run(main())


def test_pg_server_stops_by_pid(pg_server: PgServer) -> None:
    assert pg_server.proc is not None and pg_server.proc.poll() is None
    t0 = time.monotonic()
    url = pg_server.create_database()
    assert url.startswith("postgresql://postgres@127.0.0.1:")
    assert time.monotonic() - t0 < 10
