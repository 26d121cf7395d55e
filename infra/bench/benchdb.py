"""The benchmark databases: pgbench's tables plus an `events` table that does not compress well.

pgbench alone is misleading: its filler columns are blank, so a 755 MB database dumps to
13 MB and compression costs nothing. `events` holds what real application rows hold
(uuids, timestamps, integers, hashes, jsonb with random numbers), about 2.5 million rows
at scale 1. Scale 1 is about 1.3 GB on disk; `BENCH_SCALE=0.1` about 0.13 GB.

A database is built once per scale (named ``bench_s<scale>``) and reused while its
comment says it was built completely with the same recipe.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PGBENCH_SCALE = 50
EVENT_ROWS = 2_500_000
EVENT_BATCHES = 10
# Bump when the recipe changes: a database built by another recipe is rebuilt.
RECIPE = "drsentry-bench/1"

EVENTS_TABLE = """
create table events (
    event_id uuid not null,
    account_id integer not null,
    occurred_at timestamptz not null,
    kind smallint not null,
    quantity integer not null,
    note text not null,
    payload jsonb not null
)
"""

# Random content in every column: zstd and gzip find little to squeeze out of it.
EVENTS_INSERT = """
insert into events
select gen_random_uuid(),
       1 + floor(random() * %(accounts)s)::int,
       timestamptz '2024-01-01 00:00:00+00' + random() * interval '730 days',
       floor(random() * 12)::smallint,
       floor(random() * 100000)::int,
       'order ' || md5(random()::text),
       jsonb_build_object(
           'price', round((random() * 10000)::numeric, 2),
           'score', random(),
           'lat', round((random() * 180 - 90)::numeric, 6),
           'items', floor(random() * 50)::int
       )
from generate_series(1, %(rows)s)
"""


@dataclass(frozen=True)
class BenchDatabase:
    name: str
    scale: float
    dsn: str
    size_bytes: int
    build_seconds: float | None  # None when an existing database was reused

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "scale": self.scale,
            "pgbench_scale": pgbench_scale(self.scale),
            "event_rows": event_rows(self.scale),
            "size_bytes": self.size_bytes,
            "built_seconds": self.build_seconds,
            "reused": self.build_seconds is None,
        }


def database_name(scale: float) -> str:
    """`bench_s1`, `bench_s0_1`, `bench_s0_05`: a plain identifier per scale."""
    return "bench_s" + f"{scale:g}".replace(".", "_").replace("-", "m")


def pgbench_scale(scale: float) -> int:
    return max(1, round(PGBENCH_SCALE * scale))


def event_rows(scale: float) -> int:
    return max(1000, round(EVENT_ROWS * scale))


def marker(scale: float) -> str:
    return f"{RECIPE} pgbench_scale={pgbench_scale(scale)} event_rows={event_rows(scale)} complete"


def ensure(admin_dsn: str, bin_dir: Path, scale: float) -> BenchDatabase:
    """The database for `scale`, built now unless a complete one of the same recipe exists."""
    name = database_name(scale)
    dsn = make_conninfo(admin_dsn, dbname=name)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        row = admin.execute(
            "select shobj_description(oid, 'pg_database') from pg_database where datname = %s", (name,)
        ).fetchone()
        if row is not None and row[0] == marker(scale):
            return BenchDatabase(name, scale, dsn, _size(dsn), None)
        if row is not None:
            print(f"bench: {name} is incomplete or from another recipe; rebuilding", file=sys.stderr)
            admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    started = time.perf_counter()
    _pgbench_init(bin_dir, dsn, pgbench_scale(scale))
    _events(dsn, event_rows(scale), accounts=pgbench_scale(scale) * 100_000)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("comment on database {} is {}").format(sql.Identifier(name), sql.Literal(marker(scale)))
        )
    seconds = round(time.perf_counter() - started, 1)
    database = BenchDatabase(name, scale, dsn, _size(dsn), seconds)
    print(f"bench: built {name} ({database.size_bytes / 1e9:.2f} GB) in {seconds:.0f}s", file=sys.stderr)
    return database


def _pgbench_init(bin_dir: Path, dsn: str, scale: int) -> None:
    print(f"bench: pgbench -i -s {scale}", file=sys.stderr)
    parts = conninfo_to_dict(dsn)
    env = dict(os.environ, PGPASSWORD=str(parts.get("password", "")))
    subprocess.run(
        [
            str(bin_dir / "pgbench"),
            "--initialize",
            "--quiet",
            f"--scale={scale}",
            f"--host={parts['host']}",
            f"--port={parts['port']}",
            f"--username={parts['user']}",
            str(parts["dbname"]),
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _events(dsn: str, rows: int, *, accounts: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(EVENTS_TABLE)
        done = 0
        batch = -(-rows // EVENT_BATCHES)
        while done < rows:
            size = min(batch, rows - done)
            conn.execute(EVENTS_INSERT, {"rows": size, "accounts": accounts})
            done += size
            print(f"bench: events {done:,}/{rows:,}", file=sys.stderr)
        # Built after the load: a sorted build instead of random inserts into the btrees.
        conn.execute("alter table events add primary key (event_id)")
        # Sets hint bits and the visibility map now, so no timed dump pays for them.
        conn.execute("vacuum (freeze, analyze) events")


def _size(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select pg_database_size(current_database())").fetchone()
        assert row is not None
        return int(row[0])
