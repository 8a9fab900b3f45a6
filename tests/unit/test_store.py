"""The site SQLite store: migrations, CDRs, and the outbox written in the same transaction."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.store import Cdr, SchemaTooNewError, SiteStore, SqliteSiteStore, StoreError
from gateway.store.migrate import Migration, apply_migrations, load_migrations, schema_version


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cdr(**changes: object) -> Cdr:
    base = Cdr(
        call_id="a84b4c76e66710@127.0.0.2",
        site="shanghai",
        direction="inbound",
        caller="+8613800000000",
        callee="+862150000000",
        start_ts=1000.0,
        answer_ts=1004.5,
        end_ts=1064.5,
        cause_code=200,
        cause_text="normal clearing",
        destination="group:service",
        agent="1001",
        hangup_side="caller",
        trunk="china-telecom-sh",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteSiteStore]:
    s = SqliteSiteStore(tmp_path / "site.db", clock=FakeClock())
    yield s
    s.close()


def test_satisfies_protocol(store: SqliteSiteStore) -> None:
    seam: SiteStore = store
    assert seam.outbox_depth() == 0


def test_pragmas_wal_and_normal(store: SqliteSiteStore) -> None:
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_open_creates_parent_dir_and_applies_once(tmp_path: Path) -> None:
    path = tmp_path / "var" / "nested" / "hq.db"
    first = SqliteSiteStore(path)
    assert first.applied == [m.version for m in load_migrations()]
    first.write_cdr(cdr())
    first.close()
    second = SqliteSiteStore(path)
    assert second.applied == []
    assert len(second.recent_cdrs()) == 1
    rows = second._conn.execute("SELECT version FROM schema_version").fetchall()
    assert [r[0] for r in rows] == [m.version for m in load_migrations()]
    second.close()


def test_write_cdr_round_trip_with_derived_durations(store: SqliteSiteStore) -> None:
    cdr_id = store.write_cdr(cdr())
    [got] = store.recent_cdrs(10)
    assert got == replace(cdr(), id=cdr_id)
    assert got.duration_s == 64.5
    assert got.billsec_s == 60.0
    row = store._conn.execute("SELECT duration_s, billsec_s FROM cdrs").fetchone()
    assert row == (64.5, 60.0)


def test_unanswered_cdr(store: SqliteSiteStore) -> None:
    missed = cdr(answer_ts=None, agent=None, cause_code=487, cause_text="cancelled")
    store.write_cdr(missed)
    [got] = store.recent_cdrs()
    assert got.billsec_s == 0.0 and got.answer_ts is None and got.agent is None


def test_recent_cdrs_newest_first_and_limit(store: SqliteSiteStore) -> None:
    ids = [store.write_cdr(cdr(call_id=f"c{i}")) for i in range(5)]
    got = store.recent_cdrs(3)
    assert [c.id for c in got] == ids[::-1][:3]
    assert [c.call_id for c in got] == ["c4", "c3", "c2"]


def test_each_cdr_writes_one_outbox_row(store: SqliteSiteStore) -> None:
    cdr_id = store.write_cdr(cdr())
    [entry] = store.outbox_peek()
    assert entry.kind == "cdr"
    assert entry.created_ts == 1_700_000_000.0
    assert entry.payload["id"] == cdr_id
    assert entry.payload["call_id"] == "a84b4c76e66710@127.0.0.2"
    assert entry.payload["billsec_s"] == 60.0
    assert Cdr(
        **{k: v for k, v in entry.payload.items() if k not in ("duration_s", "billsec_s")}
    ) == replace(cdr(), id=cdr_id)


def test_failed_cdr_write_leaves_no_outbox_row(store: SqliteSiteStore) -> None:
    # Force the outbox insert to fail after the CDR insert: the whole transaction must roll back.
    store._conn.execute(
        "CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        store.write_cdr(cdr())
    assert store.recent_cdrs() == []
    assert store.outbox_depth() == 0
    store._conn.execute("DROP TRIGGER fail_outbox")
    store.write_cdr(cdr())  # the connection is usable afterwards
    assert store.outbox_depth() == 1


def test_rewriting_a_stored_cdr_is_refused(store: SqliteSiteStore) -> None:
    with pytest.raises(ValueError):
        store.write_cdr(cdr(id=5))


def test_outbox_peek_trim_depth(store: SqliteSiteStore) -> None:
    for i in range(10):
        store.write_cdr(cdr(call_id=f"c{i}"))
    assert store.outbox_depth() == 10
    first = store.outbox_peek(0, 4)
    assert [e.seq for e in first] == [1, 2, 3, 4]
    after = store.outbox_peek(first[-1].seq, 100)
    assert [e.seq for e in after] == list(range(5, 11))
    assert store.outbox_trim(4) == 4
    assert store.outbox_depth() == 6
    assert store.outbox_peek(0, 1)[0].seq == 5
    assert store.outbox_trim(4) == 0  # trimming again is harmless


def test_outbox_seq_never_reused_after_trim_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteSiteStore(path) as s:
        for _ in range(3):
            s.write_cdr(cdr())
        s.outbox_trim(3)
        assert s.outbox_depth() == 0
    with SqliteSiteStore(path) as s:
        s.write_cdr(cdr())
        assert [e.seq for e in s.outbox_peek()] == [4]


def test_transaction_helper_for_other_repositories(store: SqliteSiteStore) -> None:
    with store.transaction() as conn:
        seq = store.append_outbox(conn, "customer", {"id": 7, "name": "张三"})
    [entry] = store.outbox_peek()
    assert entry.seq == seq and entry.payload == {"id": 7, "name": "张三"}
    with pytest.raises(RuntimeError), store.transaction() as conn:
        store.append_outbox(conn, "customer", {"id": 8})
        raise RuntimeError("rollback")
    assert store.outbox_depth() == 1


def test_threaded_writers_serialise(store: SqliteSiteStore) -> None:
    def work(n: int) -> None:
        for i in range(20):
            store.write_cdr(cdr(call_id=f"t{n}-{i}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert store.outbox_depth() == 80
    assert len(store.recent_cdrs(1000)) == 80


def test_memory_database() -> None:
    with SqliteSiteStore(":memory:") as s:
        s.write_cdr(cdr())
        assert s.outbox_depth() == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"direction": "sideways"},
        {"hangup_side": "nobody"},
        {"end_ts": 999.0, "answer_ts": None},
        {"answer_ts": 2000.0},
    ],
)
def test_cdr_validation(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        cdr(**changes)


# --- migrations -----------------------------------------------------------------------------


def mig(version: int, sql: str, name: str = "step") -> Migration:
    return Migration(version, name, sql)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    known = load_migrations()
    future = [*known, mig(len(known) + 1, "CREATE TABLE future (x INTEGER);", "future")]
    SqliteSiteStore(path, migrations=future).close()
    with pytest.raises(SchemaTooNewError, match="newer"):
        SqliteSiteStore(path)


def test_pending_migration_applied_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "up.db"
    known = load_migrations()
    SqliteSiteStore(path, migrations=known).close()
    upgraded = [*known, mig(len(known) + 1, "ALTER TABLE cdrs ADD COLUMN queue TEXT;", "queue")]
    s = SqliteSiteStore(path, migrations=upgraded)
    assert s.applied == [len(known) + 1]
    s.close()
    s = SqliteSiteStore(path, migrations=upgraded)
    assert s.applied == []
    s.close()


def test_failed_migration_rolls_back_whole_step() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    steps = [mig(1, "CREATE TABLE a (x INTEGER); INSERT INTO nope VALUES (1);")]
    with pytest.raises(StoreError, match="0001_step failed"):
        apply_migrations(conn, steps)
    assert schema_version(conn) == 0
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'a'").fetchone() is None


def test_edited_migration_is_detected() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    apply_migrations(conn, [mig(1, "CREATE TABLE a (x INTEGER);")])
    with pytest.raises(StoreError, match="changed"):
        apply_migrations(conn, [mig(1, "CREATE TABLE a (x TEXT);")])


def test_load_migrations_from_directory(tmp_path: Path) -> None:
    (tmp_path / "0001_one.sql").write_text("CREATE TABLE one (x);")
    (tmp_path / "0002_two.sql").write_text("CREATE TABLE two (x);")
    (tmp_path / "README").write_text("ignored")
    assert [(m.version, m.name) for m in load_migrations(tmp_path)] == [(1, "one"), (2, "two")]
    (tmp_path / "0004_gap.sql").write_text("")
    with pytest.raises(StoreError, match="expected 0003"):
        load_migrations(tmp_path)


def test_badly_named_migration_file(tmp_path: Path) -> None:
    (tmp_path / "1_one.sql").write_text("")
    with pytest.raises(StoreError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)


def test_packaged_migrations_are_numbered_from_one() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert versions


def test_a_group_of_writes_commits_once_and_a_failing_one_leaves_the_others(
    tmp_path: Path,
) -> None:
    store = SqliteSiteStore(str(tmp_path / "site.db"))
    try:
        with store.transaction():
            store.write_interaction(_interaction_row("a"))
            with pytest.raises(sqlite3.IntegrityError), store.transaction() as conn:
                conn.execute("INSERT INTO interactions (call_id) VALUES (NULL)")  # NOT NULL
            store.write_interaction(_interaction_row("b"))
        rows = store.interactions(10)
        assert sorted(r["call_id"] for r in rows) == ["a", "b"]
        raw = store.outbox_peek(0, 10, raw=True)
        assert [json.loads(str(e.payload))["call_id"] for e in raw] == ["a", "b"]
    finally:
        store.close()


def _interaction_row(call_id: str) -> dict[str, Any]:
    return {
        "call_id": call_id, "site": "sh", "caller": "+861", "dialled": "+862",
        "arrived_ts": 1.0, "ended_ts": 2.0, "wait_s": 0.0, "talk_s": 0.0, "wrapup_s": 0.0,
        "outcome": "abandoned", "variables": {},
    }  # fmt: skip
