"""The studio's SQLite log (sqlite-utils): sessions, generations, ratings, runs, metrics, adapters.

WAL journal and a busy timeout so many threads and processes can write at once; one
connection per thread (and so per process); schema changes are numbered migrations applied in
order and recorded in `PRAGMA user_version`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import sqlite_utils

BUSY_TIMEOUT_MS = 60_000


def _v1(db: sqlite_utils.Database) -> None:
    db["sessions"].create({"id": int, "started_at": float, "kind": str, "pid": int, "info": str}, pk="id")
    db["generations"].create({
        "id": int, "session_id": int, "created_at": float, "prompt": str, "negative": str,
        "model": str, "role": str, "steps": int, "seed": int, "frames": int, "height": int,
        "width": int, "guidance": float, "lora": str, "lora_scale": float, "nfe": int,
        "text_encode_s": float, "denoise_s": float, "decode_s": float, "total_s": float,
        "path": str, "settings": str,
    }, pk="id", foreign_keys=[("session_id", "sessions", "id")])
    db["ratings"].create({
        "id": int, "generation_id": int, "created_at": float, "kind": str, "value": float,
        "other_id": int,  # for pairwise choices: the clip that lost
    }, pk="id", foreign_keys=[("generation_id", "generations", "id")])
    db["runs"].create({
        "id": int, "kind": str, "created_at": float, "updated_at": float, "status": str,
        "config": str, "pid": int, "step": int, "checkpoint": str, "message": str,
    }, pk="id")
    db["run_metrics"].create({"id": int, "run_id": int, "step": int, "name": str, "value": float,
                              "created_at": float}, pk="id", foreign_keys=[("run_id", "runs", "id")])
    db["adapters"].create({"id": int, "run_id": int, "created_at": float, "path": str, "reward": str,
                           "base_model": str, "metadata": str}, pk="id")
    db["generations"].create_index(["created_at"])
    db["run_metrics"].create_index(["run_id", "step"])


def _v2(db: sqlite_utils.Database) -> None:
    """A run's phase ("loading", "fitting the reward model", "tuning", ...), the phase's own
    progress, and the run's smoothed ETA, as the run writes them (the UI shows, never computes)."""
    for name, kind in (("phase", str), ("phase_step", int), ("phase_total", int), ("eta_s", float)):
        db["runs"].add_column(name, kind)


MIGRATIONS = [_v1, _v2]


class Store:
    """Thread-safe access to the database: each thread gets its own connection."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrate()

    def __reduce__(self):  # a Store travels by its path (each process opens its own connections)
        return Store, (self.path,)

    @property
    def db(self) -> sqlite_utils.Database:
        conn = getattr(self._local, "db", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            raw = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                  check_same_thread=False)
            raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            raw.execute("PRAGMA foreign_keys = ON")
            conn = sqlite_utils.Database(raw)
            self._local.db, self._local.pid = conn, os.getpid()
        return conn

    def _migrate(self) -> None:
        db = self.db
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE")  # one process migrates at a time
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(db)
                db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _insert(self, table: str, row: dict) -> int:
        with self.db.conn:
            return self.db[table].insert(row).last_pk

    # sessions and generations
    def start_session(self, kind: str, info: dict | None = None) -> int:
        return self._insert("sessions", {"started_at": time.time(), "kind": kind, "pid": os.getpid(),
                                         "info": json.dumps(info or {})})

    def log_generation(self, session_id: int, settings: dict, path: str | None) -> int:
        timings = settings.get("timings", {})
        row = {k: settings.get(k) for k in ("prompt", "negative", "model", "role", "steps", "seed",
                                            "frames", "height", "width", "guidance", "lora",
                                            "lora_scale", "nfe")}
        row.update({k: timings.get(k) for k in ("text_encode_s", "denoise_s", "decode_s", "total_s")})
        row.update(session_id=session_id, created_at=time.time(), path=path,
                   settings=json.dumps(settings, default=str))
        return self._insert("generations", row)

    RATING_FILTERS = {  # Library filter -> the clips it keeps (a where clause on generations)
        "rated": "id in (select generation_id from ratings union select other_id from ratings)",
        "unrated": "id not in (select generation_id from ratings union select other_id from ratings "
                   "where other_id is not null)",
        "thumb up": "id in (select generation_id from ratings where kind = 'thumb' and value > 0)",
        "thumb down": "id in (select generation_id from ratings where kind = 'thumb' and value < 0)",
        "4+ stars": "id in (select generation_id from ratings where kind = 'stars' and value >= 4)",
        "A/B": "id in (select generation_id from ratings where kind = 'pair' union "
               "select other_id from ratings where kind = 'pair')",
    }

    def generations(self, limit: int = 50, text: str = "", role: str = "", model: str = "", adapter: str = "",
                    rating: str = "") -> list[dict]:
        """Logged clips, newest first; `text` filters by a prompt substring, `role` by role, `model`
        by model name, `adapter` by adapter path ("none": clips made without one), `rating` by one
        of RATING_FILTERS."""
        if rating and rating not in self.RATING_FILTERS:
            raise ValueError(f"rating filter must be one of {sorted(self.RATING_FILTERS)}, got {rating!r}")
        where, params = ["1 = 1"], []
        if text:
            where.append("prompt like ?")
            params.append(f"%{text}%")
        for column, value in (("role", role), ("model", model)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if adapter == "none":
            where.append("(lora is null or lora = '')")
        elif adapter:
            where.append("lora = ?")
            params.append(adapter)
        if rating:
            where.append(self.RATING_FILTERS[rating])
        return list(self.db["generations"].rows_where(" and ".join(where), params, order_by="id desc", limit=limit))

    def generation_values(self, column: str) -> list[str]:
        """The distinct non-empty values of a clip column ("model", "lora"), for the Library's filters."""
        if column not in ("model", "lora", "role"):
            raise ValueError(f"no filter on clip column {column!r}")
        return [r[0] for r in self.db.execute(f"select distinct {column} from generations where {column} is not null "
                                              f"and {column} != '' order by {column}").fetchall()]

    def _row(self, table: str, row_id: int) -> dict | None:
        rows = list(self.db[table].rows_where("id = ?", [row_id]))
        return rows[0] if rows else None

    def generation(self, generation_id: int) -> dict | None:
        return self._row("generations", generation_id)

    def delete_generation(self, generation_id: int) -> tuple[dict | None, bool]:
        """Delete a clip's row and its ratings in one transaction. Returns (the row as it was, or
        None; whether another clip's row names the same file, which must then be kept)."""
        with self.db.conn:
            row = self.generation(generation_id)
            if row is None:
                return None, False
            self.db.execute("delete from ratings where generation_id = ? or other_id = ?", [generation_id, generation_id])
            self.db.execute("delete from generations where id = ?", [generation_id])
            shared = bool(row["path"]) and self.db.execute(
                "select count(*) from generations where path = ?", [row["path"]]).fetchone()[0] > 0
        return row, shared

    # ratings
    def rate(self, generation_id: int, kind: str, value: float, other_id: int | None = None) -> int:
        return self._insert("ratings", {"generation_id": generation_id, "created_at": time.time(),
                                        "kind": kind, "value": value, "other_id": other_id})

    def ratings(self, kinds: tuple[str, ...] | None = None) -> list[dict]:
        """Every rating (of the given kinds), oldest first."""
        if not kinds:
            return list(self.db["ratings"].rows_where(order_by="id"))
        marks = ", ".join("?" for _ in kinds)
        return list(self.db["ratings"].rows_where(f"kind in ({marks})", list(kinds), order_by="id"))

    def rating_count(self) -> int:
        return self.db["ratings"].count

    # runs
    def runs(self, kind: str | None = None, statuses: tuple[str, ...] = (), limit: int | None = None) -> list[dict]:
        """Runs, newest first, of a kind and in the given statuses (any when empty)."""
        where, params = ["1 = 1"], []
        if kind:
            where.append("kind = ?")
            params.append(kind)
        if statuses:
            where.append(f"status in ({', '.join('?' for _ in statuses)})")
            params.extend(statuses)
        return list(self.db["runs"].rows_where(" and ".join(where), params, order_by="id desc", limit=limit))

    def create_run(self, kind: str, config: dict, status: str = "queued") -> int:
        now = time.time()
        return self._insert("runs", {"kind": kind, "created_at": now, "updated_at": now,
                                     "status": status, "config": json.dumps(config), "step": 0})

    def update_run(self, run_id: int, **fields) -> None:
        with self.db.conn:
            self.db["runs"].update(run_id, fields | {"updated_at": time.time()})

    def run(self, run_id: int) -> dict | None:
        return self._row("runs", run_id)

    def log_metrics(self, run_id: int, step: int, metrics: dict[str, float]) -> None:
        now = time.time()
        rows = [{"run_id": run_id, "step": step, "name": k, "value": float(v), "created_at": now}
                for k, v in metrics.items()]
        with self.db.conn:
            self.db["run_metrics"].insert_all(rows)

    # adapters
    def log_adapter(self, run_id: int | None, path: str, reward: str, base_model: str, metadata: dict) -> int:
        return self._insert("adapters", {"run_id": run_id, "created_at": time.time(), "path": path, "reward": reward,
                                         "base_model": base_model, "metadata": json.dumps(metadata)})

    def adapters(self, limit: int = 50) -> list[dict]:
        """Saved adapters, newest first."""
        return list(self.db["adapters"].rows_where(order_by="id desc", limit=limit))

    def metrics(self, run_id: int, name: str | None = None) -> list[dict]:
        where, params = "run_id = ?", [run_id]
        if name:
            where, params = where + " and name = ?", params + [name]
        return list(self.db["run_metrics"].rows_where(where, params, order_by="step, id"))
