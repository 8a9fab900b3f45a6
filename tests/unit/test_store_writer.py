"""Group commit of the site's writes (StoreWriter) on a real SQLite store."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway.store.sqlite import SqliteSiteStore
from gateway.store.writer import Result, StoreWriter


def _row(call_id: str) -> dict[str, Any]:
    return {
        "call_id": call_id, "site": "sh", "caller": "+861", "dialled": "+862",
        "arrived_ts": 1.0, "ended_ts": 2.0, "wait_s": 0.0, "talk_s": 0.0, "wrapup_s": 0.0,
        "outcome": "abandoned", "variables": {},
    }  # fmt: skip


def test_writes_queued_together_commit_together_and_a_bad_one_fails_alone(tmp_path: Path) -> None:
    store = SqliteSiteStore(str(tmp_path / "site.db"))
    executor = ThreadPoolExecutor(1)
    results: list[Result] = []

    async def main() -> StoreWriter:
        writer = StoreWriter(store, asyncio.get_running_loop(), executor, results.extend)
        for i in range(200):
            row = _row(f"c{i}")
            if i == 50:
                del row["caller"]  # NOT NULL: this one fails
            writer.write(store.write_interaction, row, what=f"interaction {i}")
        while len(results) < 200:
            await asyncio.sleep(0.01)
        return writer

    try:
        writer = asyncio.run(main())
        assert len(store.interactions(1000)) == 199
        assert store.outbox_depth() == 199
        failed = [what for _, what, exc in results if exc is not None]
        assert failed == ["interaction 50"]
        assert [what for _, what, _ in results] == [f"interaction {i}" for i in range(200)]
        assert writer.batches < 200  # grouped: fewer commits than writes
        executor.shutdown(wait=True)
        writer._closing = True  # a write that arrives while the gateway stops ...
        writer.write(store.write_interaction, _row("late"), what="late")
        assert [w for _, w, e in writer.close() if e is None] == ["late"]  # ... is not lost
        assert len(store.interactions(1000)) == 200
    finally:
        executor.shutdown(wait=True)
        store.close()
