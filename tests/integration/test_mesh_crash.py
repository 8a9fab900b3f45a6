"""Crash tests of the site → HQ sync with real processes under SIPp load: ``kill -9`` HQ, then a
site, while calls flow; every record the site committed reaches HQ exactly once.

HQ (``ccgw hq``, on SQLite and on a real PostgreSQL) listens on 127.0.0.1; the Shanghai site
(``ccgw run``, ``[mesh] hq`` over mutual TLS with certificates made by ``ccgw certs``) on
127.0.0.2; SIPp is the site's carrier on 127.0.0.1 and sends a steady stream of calls
(``caller_ivr.xml``) to the support queue's DID, which answers them. Every port is a fixed free
one chosen by the test, so a restarted process comes back on the same address, with the same
config and the same database.

1. HQ ``kill -9`` mid-load (HQ on SQLite and on PostgreSQL): once HQ has applied some of the
   site's records, SIGKILL ``ccgw hq`` by its PID; the site keeps answering every call and keeps
   its records in the outbox; HQ comes back on the same port and database; when the load is over
   the site's outbox drains (``ccgw_sync_outbox_depth 0``) and HQ's rows equal the site's rows,
   ``(local id, Call-ID, caller, time)`` for ``(local id, Call-ID, caller, time)``, each once.
2. Site ``kill -9`` mid-load (HQ on SQLite): SIGKILL ``ccgw run`` while calls flow (SIPp sees
   the calls in flight fail: expected), restart it with the same config and store; its outbox
   drains and HQ's rows equal the rows the site committed, every local id once.

Both check HQ's high-water mark for the site equals the last outbox sequence the site ever
allocated (``sqlite_sequence``): every entry was applied, none is pending.
Processes are started by the test and ended by their PIDs (``peer_registry``), whatever happens.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from . import peers
from .gateway import TEST_IVR, site_config
from .pg_server import PgServer, serve_pg
from .procs import CcgwProcess, ccgw_argv, ccgw_env, metric, to_toml, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T = TypeVar("T")

SITE = "shanghai"
HQ_IP, SITE_IP, CARRIER_IP = "127.0.0.1", "127.0.0.2", "127.0.0.1"
CALLS, RATE, TALK_MS = 40, 8, 800
"""The load: 40 calls at 8 per second (5 s of arrivals), each talking 0.8 s (~7 at once)."""
DOWN_S = 1.0
"""How long a killed process stays dead before it is started again."""
DRAIN_S = 30.0
"""Bound on the outbox draining after the load (the sync client reconnects within 5 s)."""

CDR_COLS = ("call_id", "caller", "start_ts")
INTERACTION_COLS = ("call_id", "caller", "queue", "arrived_ts")
Records = dict[str, list[tuple[Any, ...]]]


# --------------------------------------------------------------------------------------------
# helpers


def _wait(cond: Callable[[], T], timeout: float, what: str) -> T:
    # HTTP not up yet, the database busy: not yet
    return wait_until(cond, timeout, what, every=0.1, errors=(OSError, sqlite3.Error, KeyError))


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as r:
        return str(r.read().decode())


def _sqlite_rows(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return list(conn.execute(sql, args).fetchall())
    finally:
        conn.close()


def _duplicates(rows: list[tuple[Any, ...]], index: int) -> dict[Any, int]:
    return {k: n for k, n in Counter(r[index] for r in rows).items() if n > 1}


# --------------------------------------------------------------------------------------------
# HQ and one site as processes


class CrashMesh:
    """``ccgw hq`` and the ``ccgw run`` site, each restartable on the same ports and database,
    and the readers the tests check them with."""

    def __init__(
        self, tmp: Path, pki: Path, database: str, registry: peers.ProcessRegistry
    ) -> None:
        self.tmp, self.pki, self.database, self.registry = tmp, pki, database, registry
        self.work = tmp / "work"
        self.site_db = tmp / f"{SITE}.db"
        self.hq_grpc = peers.free_port(HQ_IP, "tcp")
        self.hq_http = peers.free_port(HQ_IP, "tcp")
        self.site_sip = peers.free_port(SITE_IP, "both")
        self.site_http = peers.free_port(SITE_IP, "tcp")
        self.carrier_sip = peers.free_port(CARRIER_IP, "udp")
        self.hq: CcgwProcess | None = None
        self.site: CcgwProcess | None = None
        self._runs: Counter[str] = Counter()
        self._write_configs()

    def _write_configs(self) -> None:
        hq_doc = site_config((HQ_IP, 9), self.tmp / "hq-site.db")
        hq_doc["site"] = {"name": "hq"}
        hq_doc["hq"] = {
            "listen": f"{HQ_IP}:{self.hq_grpc}",
            "database": self.database,
            "pki": str(self.pki),
            "http": f"{HQ_IP}:{self.hq_http}",
        }
        (self.tmp / "hq.toml").write_text(to_toml(hq_doc))
        site_doc = site_config(
            (CARRIER_IP, self.carrier_sip),
            self.site_db,
            queues=[
                {"name": "support", "members": ["1001"], "wrapup": 0},
                {"name": "sales", "members": ["1001"], "wrapup": 0},
            ],
            ivr=TEST_IVR,
            extra={
                "site": {"name": SITE},
                "sip": {"listen": SITE_IP, "port": self.site_sip},
                "http": {"listen": SITE_IP, "port": self.site_http},
                "mesh": {"hq": f"{HQ_IP}:{self.hq_grpc}", "pki": str(self.pki)},
            },
        )
        (self.tmp / "site.toml").write_text(to_toml(site_doc))

    # -- life cycle

    def _incarnation(self, role: str) -> str:
        self._runs[role] += 1
        return f"{role}-{self._runs[role]}"

    def start_hq(self) -> CcgwProcess:
        """Start (or restart) ``ccgw hq``; returns once it serves."""
        self.hq = CcgwProcess(
            self._incarnation("hq"),
            ["hq", "--config", str(self.tmp / "hq.toml")],
            workdir=self.work,
            registry=self.registry,
        ).start("ccgw hq hq:")
        return self.hq

    def start_site(self) -> CcgwProcess:
        """Start (or restart) the site gateway; returns once it serves."""
        self.site = CcgwProcess(
            self._incarnation("site"),
            ["run", "--config", str(self.tmp / "site.toml")],
            workdir=self.work,
            registry=self.registry,
        ).start(f"ccgw site {SITE}:")
        return self.site

    def stop(self) -> None:
        """Stop the site, then HQ, cleanly (each store is closed: the files can be read)."""
        for p in (self.site, self.hq):
            if p is not None and p.running():
                rc = p.stop()
                assert rc == 0, f"{p.name} exited with {rc}\n{p.describe()}"

    # -- what the processes say

    def site_metrics(self) -> str:
        return _get(f"http://{SITE_IP}:{self.site_http}/metrics")

    def sync_connected(self) -> bool:
        return metric(self.site_metrics(), "ccgw_sync_connected") == 1

    def outbox_depth(self) -> float | None:
        return metric(self.site_metrics(), "ccgw_sync_outbox_depth")

    def hq_high_water(self) -> int:
        """HQ's high-water mark for the site, from its /healthz (0 until the site connects)."""
        health = json.loads(_get(f"http://{HQ_IP}:{self.hq_http}/healthz"))
        return int(health["sites"].get(SITE, 0))

    # -- the records on both sides

    def site_committed(self) -> int:
        """CDRs the site has committed so far."""
        return int(_sqlite_rows(self.site_db, "SELECT count(*) FROM cdrs")[0][0])

    def site_last_seq(self) -> int:
        """The last outbox sequence the site allocated (trimmed entries included)."""
        rows = _sqlite_rows(self.site_db, "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
        return int(rows[0][0]) if rows else 0

    def site_records(self) -> Records:
        return {
            "cdrs": _sqlite_rows(
                self.site_db, f"SELECT id, {', '.join(CDR_COLS)} FROM cdrs ORDER BY id"
            ),
            "interactions": _sqlite_rows(
                self.site_db,
                f"SELECT id, {', '.join(INTERACTION_COLS)} FROM interactions ORDER BY id",
            ),
        }

    def hq_query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` (``?`` placeholders) on HQ's database, read-only."""
        if self.database.startswith("sqlite:"):
            db = Path("/" + self.database.removeprefix("sqlite:").lstrip("/"))  # absolute
            return _sqlite_rows(db, sql, args) if db.exists() else []
        import psycopg

        with psycopg.connect(self.database, connect_timeout=5) as conn:
            conn.read_only = True
            return list(conn.execute(sql.replace("?", "%s"), args).fetchall())

    def hq_durable_high_water(self) -> int:
        """The site's high-water mark in HQ's database (what HQ committed; readable while HQ
        is frozen or dead)."""
        rows = self.hq_query("SELECT high_water FROM sync_state WHERE site = ?", (SITE,))
        return int(rows[0][0]) if rows else 0

    def hq_records(self) -> Records:
        out: Records = {}
        for table, cols in (("cdrs", CDR_COLS), ("interactions", INTERACTION_COLS)):
            out[table] = self.hq_query(
                f"SELECT local_id, {', '.join(cols)} FROM {table} WHERE site = ? ORDER BY local_id",
                (SITE,),
            )
        return out

    def hq_duplicate_keys(self) -> list[tuple[Any, ...]]:
        """``(table, local_id, n)`` for every ``(site, local_id)`` HQ holds more than once."""
        found: list[tuple[Any, ...]] = []
        for table in ("cdrs", "interactions"):
            found += [
                (table, *row)
                for row in self.hq_query(
                    f"SELECT local_id, count(*) FROM {table} WHERE site = ? "
                    "GROUP BY local_id HAVING count(*) > 1",
                    (SITE,),
                )
            ]
        return found

    def hq_unknown(self) -> int:
        rows = self.hq_query("SELECT count(*) FROM unknown_entries WHERE site = ?", (SITE,))
        return int(rows[0][0])

    def drained(self) -> bool:
        """The site's outbox is empty and HQ has applied every entry the site ever wrote."""
        return self.outbox_depth() == 0 and self.hq_high_water() == self.site_last_seq()

    # -- load

    def carrier(self, sipp_factory: Callable[..., peers.Sipp], calls: int) -> peers.Sipp:
        """The carrier's SIPp, started: ``calls`` calls at ``RATE``/s to the support queue."""
        return sipp_factory(
            "caller_ivr.xml", f"{SITE_IP}:{self.site_sip}", local_host=CARRIER_IP,
            local_port=self.carrier_sip, service="+864000", calls=calls, rate=RATE,
            keys={"talk_ms": str(TALK_MS), "d1_ms": "0", "digit1": "-", "d2_ms": "0",
                  "digit2": "-"},
            timeout=45, name="carrier",
        ).start()  # fmt: skip


def check_exactly_once(mesh: CrashMesh, *, expect_cdrs: int | None = None) -> Records:
    """After :meth:`CrashMesh.stop`: HQ holds the site's rows, each once; returns them."""
    site, hq = mesh.site_records(), mesh.hq_records()
    if expect_cdrs is not None:
        assert len(site["cdrs"]) == expect_cdrs, f"site committed {len(site['cdrs'])} CDRs"
    for table in ("cdrs", "interactions"):
        assert not _duplicates(site[table], 1), f"site {table}: a Call-ID twice"
        assert len(site[table]) == len(hq[table]), (
            f"{table}: site {len(site[table])}, HQ {len(hq[table])}; missing at HQ: "
            f"{sorted(set(site[table]) - set(hq[table]))[:5]}, "
            f"unknown to the site: {sorted(set(hq[table]) - set(site[table]))[:5]}"
        )
        assert hq[table] == site[table], f"{table}: HQ's rows differ from the site's"
        assert sorted(r[1] for r in hq[table]) == sorted(r[1] for r in site[table])
    assert len(site["cdrs"]) == len(site["interactions"]), site
    assert mesh.hq_duplicate_keys() == []
    assert mesh.hq_unknown() == 0
    return site


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mesh CA, HQ's certificate (127.0.0.1) and the site's (127.0.0.2), by ``ccgw certs``."""
    d = tmp_path_factory.mktemp("pki")
    argv = ccgw_argv(
        "certs", "--dir", str(d), "--ca", "--site", f"hq:{HQ_IP}", "--site", f"{SITE}:{SITE_IP}"
    )
    res = subprocess.run(argv, env=ccgw_env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return d


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    yield from serve_pg()


@pytest.fixture
def mesh(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    pki: Path,
    peer_registry: peers.ProcessRegistry,
) -> CrashMesh:
    if peers.SIPP_BIN is None:
        pytest.skip("sipp binary not found (apt-get install sip-tester)")
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        database = f"sqlite:///{tmp_path / 'central.db'}"
    else:
        server: PgServer = request.getfixturevalue("pg")
        database = server.create_database()
    return CrashMesh(tmp_path, pki, database, peer_registry)
    # peer_registry ends every process by its PID at teardown, pass or fail


# --------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("mesh", ["sqlite", "postgresql"], indirect=True)
def test_hq_kill_9_mid_load_every_record_arrives_once(
    mesh: CrashMesh, sipp_factory: Callable[..., peers.Sipp]
) -> None:
    t0 = time.monotonic()
    mesh.start_hq()
    mesh.start_site()
    _wait(mesh.sync_connected, 15, "the site's sync stream to HQ")
    carrier = mesh.carrier(sipp_factory, CALLS)

    # Mid-load: HQ has applied some of the site's records and more calls are coming. HQ is
    # frozen a moment before the kill, so that the site surely has entries HQ never applied
    # (sent into HQ's socket buffer or still in the outbox): the site must send them again.
    _wait(lambda: mesh.hq_high_water() >= 6, 15, "HQ applying the site's first records")
    assert mesh.hq is not None
    mesh.hq.pause()
    hw_stalled = mesh.hq_durable_high_water()
    _wait(lambda: mesh.site_last_seq() >= hw_stalled + 6, 10, "records written while HQ stalls")
    rc = mesh.hq.crash()
    t_kill = time.monotonic()
    assert rc == -9, rc
    assert carrier.running(), "the load was over before HQ was killed"
    hw_at_kill = mesh.hq_durable_high_water()  # what HQ had committed when it died
    seq_at_kill = mesh.site_last_seq()
    assert seq_at_kill > hw_at_kill, "HQ had applied everything: the kill proves nothing"

    time.sleep(DOWN_S)
    seq_at_restart = mesh.site_last_seq()
    mesh.start_hq()  # same port, same database
    restarted = time.monotonic() - t_kill

    res = carrier.wait(40)
    assert res.ok and res.successful == CALLS, res.describe()  # HQ down: calls unaffected
    t_load = time.monotonic()
    _wait(mesh.drained, DRAIN_S, "the outbox drained to HQ after its restart")
    drained = time.monotonic() - t_load
    assert mesh.sync_connected()
    assert seq_at_restart > seq_at_kill, "no record was written while HQ was dead"
    mesh.stop()
    site = check_exactly_once(mesh, expect_cdrs=CALLS)
    print(
        f"\nHQ killed at high water {hw_at_kill}, site at seq {seq_at_kill}; {seq_at_restart} "
        f"when HQ restarted ({restarted:.1f} s later); drained {drained:.1f} s after the load; "
        f"{len(site['cdrs'])} CDRs + {len(site['interactions'])} interactions at HQ once each; "
        f"total {time.monotonic() - t0:.1f} s"
    )


@pytest.mark.parametrize("hq_stalled", [False, True], ids=["hq-live", "hq-stalled"])
def test_site_kill_9_mid_load_outbox_drains_after_restart(
    mesh: CrashMesh, sipp_factory: Callable[..., peers.Sipp], hq_stalled: bool
) -> None:
    """``hq-stalled``: HQ is frozen (SIGSTOP) from before the kill until the site is back, so
    the dead site leaves unacked entries in its outbox and unread batches in HQ's socket
    buffer, which HQ reads when it resumes while the new incarnation connects."""
    t0 = time.monotonic()
    mesh.start_hq()
    mesh.start_site()
    _wait(mesh.sync_connected, 15, "the site's sync stream to HQ")
    carrier = mesh.carrier(sipp_factory, CALLS)

    _wait(lambda: mesh.site_committed() >= 8, 15, "the site committing its first calls")
    assert mesh.hq is not None and mesh.site is not None
    if hq_stalled:
        mesh.hq.pause()
        hw = mesh.hq_durable_high_water()
        _wait(lambda: mesh.site_last_seq() >= hw + 6, 10, "records written while HQ stalls")
    rc = mesh.site.crash()
    t_kill = time.monotonic()
    assert rc == -9, rc
    assert carrier.running(), "the load was over before the site was killed"
    committed_at_kill = mesh.site_committed()
    seq_at_kill = mesh.site_last_seq()
    hw_at_kill = mesh.hq_durable_high_water()
    if hq_stalled:
        assert seq_at_kill > hw_at_kill, "HQ had every entry: the kill proves nothing"

    time.sleep(DOWN_S)
    mesh.start_site()  # same config, same store, same ports
    restarted = time.monotonic() - t_kill
    if hq_stalled:
        time.sleep(0.5)  # the new incarnation dials HQ while HQ is still frozen
        mesh.hq.resume()

    res = carrier.wait(45)  # calls in flight at the kill fail: expected
    t_load = time.monotonic()
    _wait(mesh.drained, DRAIN_S, "the restarted site's outbox drained to HQ")
    drained = time.monotonic() - t_load
    mesh.stop()
    site = check_exactly_once(mesh)
    n = len(site["cdrs"])
    assert committed_at_kill <= n <= CALLS, (committed_at_kill, n)
    assert n > committed_at_kill, "the restarted site took no calls"
    assert res.successful <= n, f"SIPp completed {res.successful} calls, the site kept {n}"
    print(
        f"\nsite killed with {committed_at_kill} CDRs, outbox seq {seq_at_kill}, HQ at "
        f"{hw_at_kill}; back {restarted:.1f} s later; SIPp {res.successful} ok / {res.failed} "
        f"failed; the site kept {n} calls, all at HQ once; drained {drained:.1f} s after the "
        f"load; total {time.monotonic() - t0:.1f} s"
    )
