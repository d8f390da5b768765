"""Load test of the arena web app: N concurrent voters on loopback for D seconds, then a count check.

The server (uvicorn, one process, the real app from incasa/arena/app.py) runs in a child process on 127.0.0.1 over a
fresh store with four TEST STAND-IN variants (64 px patterns; no real model, so this measures the arena, not a
generator). Each simulated voter has its own cookie jar (its own anonymous id) and loops without pause:
    POST /api/battles  ->  GET both images  ->  POST /api/battles/{id}/vote (random choice)
Rate limits are lifted and the minimum viewing time is 0 for the run, so every vote should be accepted.
At the end every vote the server accepted (HTTP 200) must be in the database (the count check), and the p50 / p99
latency of the vote request and of the new-battle request (which includes generating both stand-in images) are
reported. --postgres starts a throwaway PostgreSQL cluster (Debian's postgresql: initdb + pg_ctl, as the postgres
user when run as root) instead of SQLite.

    python benchmarks/arena_load.py [--voters 50] [--duration 60] [--postgres]
"""

import argparse
import asyncio
import datetime
import json
import multiprocessing
import os
import platform
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """initdb + pg_ctl in a temporary directory; trust auth on loopback; removed on stop()."""

    def __init__(self):
        initdb = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not initdb:
            raise SystemExit("PostgreSQL is not installed: run .ci/arena.sh (apt-get install postgresql)")
        self.initdb, self.pg_ctl = str(initdb[-1]), str(initdb[-1].with_name("pg_ctl"))
        self.root = Path(tempfile.mkdtemp(prefix="arena-load-pg-"))
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self.user = "postgres" if self.as_root else os.environ.get("USER", "postgres")
        port = free_port()
        self._run(self.initdb, "-D", str(self.root / "data"), "--auth=trust", "-U", self.user, "--no-sync")
        self._run(self.pg_ctl, "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "-o",
                  f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300", "start")
        self.url = f"postgresql+psycopg://{self.user}@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.as_root:
            cmd = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in cmd)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def serve(db_url: str, port: int) -> None:
    import uvicorn

    from incasa.arena.app import ArenaConfig, create_app

    lifted = 10**9
    config = ArenaConfig(db_url=db_url, min_view_s=0.0, votes_per_minute_voter=lifted, votes_per_minute_ip=lifted,
                         battles_per_minute_ip=lifted)
    uvicorn.run(create_app(config), host="127.0.0.1", port=port, log_level="warning")


async def voter(base: str, stop_at: float, rng: random.Random, stats: dict) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60.0) as client:
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            response = await client.post("/api/battles", json={})
            if response.status_code != 200:
                stats["errors"].append(f"battle {response.status_code}: {response.text[:100]}")
                continue
            stats["battle_s"].append(time.perf_counter() - start)
            battle = response.json()
            for key in ("image_a", "image_b"):
                await client.get(battle[key])
            start = time.perf_counter()
            response = await client.post(f"/api/battles/{battle['battle_id']}/vote",
                                         json={"choice": rng.choice(["a", "b", "tie", "both_bad"])})
            if response.status_code == 200:
                stats["vote_s"].append(time.perf_counter() - start)
                stats["accepted"] += 1
            else:
                stats["errors"].append(f"vote {response.status_code}: {response.text[:100]}")


async def load(base: str, voters: int, duration: float) -> dict:
    stats = {"battle_s": [], "vote_s": [], "accepted": 0, "errors": []}
    stop_at = time.monotonic() + duration
    await asyncio.gather(*(voter(base, stop_at, random.Random(k), stats) for k in range(voters)))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voters", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL cluster instead of SQLite")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    console = Console()

    from sqlalchemy import func, select

    from incasa.arena import store

    cluster, tmp = None, Path(tempfile.mkdtemp(prefix="arena-load-"))
    try:
        if args.postgres:
            cluster = PostgresCluster()
            db_url = cluster.url
        else:
            db_url = store.sqlite_url(tmp / "arena.db")
        sessions = store.open_store(db_url)
        with sessions.begin() as s:
            for style in ("rings", "stripes", "checks"):
                store.add_variant(s, "standin", style, "standin", {"style": style})
            store.add_variant(s, "standin", "noisy", "standin", {"style": "rings", "quality": 0.5})
        port = free_port()
        server = multiprocessing.get_context("spawn").Process(target=serve, args=(db_url, port), daemon=True)
        server.start()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/api/leaderboard", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not server.is_alive():
                raise SystemExit("the arena server did not start")
            time.sleep(0.2)
        backend = "PostgreSQL" if args.postgres else "SQLite"
        console.log(f"{args.voters} voters for {args.duration:g} s against {backend}")
        stats = asyncio.run(load(base, args.voters, args.duration))
        board = httpx.get(base + "/api/leaderboard", timeout=120).json()
        server.terminate()
        server.join(10)
        with sessions.begin() as s:
            in_db = s.scalar(select(func.count()).select_from(store.Vote))
            counted = s.scalar(select(func.count()).select_from(store.Vote).where(store.Vote.counted.is_(True)))
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    vote_ms, battle_ms = np.array(stats["vote_s"]) * 1000, np.array(stats["battle_s"]) * 1000
    result = {
        "benchmark": "arena_load", "backend": "postgresql" if args.postgres else "sqlite", "voters": args.voters,
        "duration_s": args.duration, "accepted_votes": stats["accepted"], "votes_in_db": in_db,
        "counted_votes_in_db": counted, "count_check": stats["accepted"] == in_db == counted,
        "votes_per_s": stats["accepted"] / args.duration, "errors": len(stats["errors"]),
        "first_errors": stats["errors"][:5], "leaderboard_num_votes": board["num_votes"],
        "vote_latency_ms": {"p50": float(np.percentile(vote_ms, 50)), "p99": float(np.percentile(vote_ms, 99)),
                            "max": float(vote_ms.max())},
        "battle_latency_ms": {"p50": float(np.percentile(battle_ms, 50)), "p99": float(np.percentile(battle_ms, 99))},
    }
    table = Table(title=f"arena load: {args.voters} voters, {args.duration:g} s, {result['backend']}")
    for col in ("accepted votes", "in DB", "count check", "votes/s", "vote p50 ms", "vote p99 ms", "battle p50 ms",
                "battle p99 ms", "errors"):
        table.add_column(col, justify="right")
    table.add_row(str(stats["accepted"]), str(in_db), "ok" if result["count_check"] else "FAILED",
                  f"{result['votes_per_s']:.1f}", f"{result['vote_latency_ms']['p50']:.0f}",
                  f"{result['vote_latency_ms']['p99']:.0f}", f"{result['battle_latency_ms']['p50']:.0f}",
                  f"{result['battle_latency_ms']['p99']:.0f}", str(result["errors"]))
    console.print(table)

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        commit = "unknown"
    result |= {"date": datetime.datetime.now(datetime.UTC).isoformat(), "commit": commit,
               "device": f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, shared with the "
                         "client and other work), CPU only"}
    out = Path(args.out or f"benchmarks/results/arena_load_{result['backend']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(result, indent=1))
    os.replace(tmp_out, out)
    console.print(f"wrote {out}")
    if not result["count_check"]:
        raise SystemExit("count check failed: accepted votes are missing from the database")


if __name__ == "__main__":
    main()
