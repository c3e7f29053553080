"""The run ledger: one SQLite row per agent run (`fix` or `m2_task`), at `state_dir()/runs.sqlite`.

WAL mode plus a busy timeout lets several processes (a CLI run, two IDE servers)
write at once. The schema is versioned with `PRAGMA user_version`: to change it,
append a step to MIGRATIONS; each step upgrades the previous version by one.
Days are local calendar days. `status` is a result status, or `interrupted` for a task
whose server stopped (or was killed) before it finished.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import closing
from datetime import date, datetime, timedelta
from pathlib import Path

from m2_mcp.home import state_dir

BUSY_TIMEOUT_S = 30.0
SUCCESS = ("fixed", "already_passing")  # the statuses for which `fix` exits 0

MIGRATIONS: list[list[str]] = [
    [  # version 1
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            started_at REAL NOT NULL,
            repo TEXT NOT NULL,
            task TEXT NOT NULL,
            status TEXT NOT NULL,
            steps INTEGER NOT NULL DEFAULT 0,
            tool_calls INTEGER NOT NULL DEFAULT 0,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            duration_s REAL NOT NULL DEFAULT 0,
            branch TEXT,
            source TEXT NOT NULL,
            result_json TEXT NOT NULL
        )""",
        "CREATE INDEX runs_started ON runs (started_at)",
        "CREATE INDEX runs_repo ON runs (repo, started_at)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
COLUMNS = ("id", "started_at", "repo", "task", "status", "steps", "tool_calls", "prompt_tokens",
           "completion_tokens", "cost_usd", "duration_s", "branch", "source")


def ledger_path() -> Path:
    return state_dir() / "runs.sqlite"


def _connect(path: Path | None, create: bool) -> sqlite3.Connection | None:
    """An autocommit connection with the schema up to date; None if the ledger does not exist and create is False."""
    path = path or ledger_path()
    if not create and not path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        _wal(conn)
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL once. Changing the journal mode ignores the busy timeout, so while another
    process is creating the same ledger it can fail at once with "locked": wait and retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _migrate(conn: sqlite3.Connection) -> None:
    if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see the new version
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for step in MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {max(version, SCHEMA_VERSION)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def record_run(result: dict, *, task: str, repo: str, source: str, started_at: float, duration_s: float,
               run_id: str | None = None, path: Path | None = None) -> str:
    """Store one finished run (the section-5 result object); returns its id."""
    if source not in ("cli", "mcp"):
        raise ValueError(f"source must be 'cli' or 'mcp', not {source!r}")
    from m2_mcp.redact import redact_obj

    result, task = redact_obj(result), redact_obj(task)  # secret values never reach the ledger
    usage = result.get("usage") or {}
    run_id = run_id or f"r-{uuid.uuid4().hex[:12]}"
    row = (
        run_id, float(started_at), str(Path(repo).resolve()), task, str(result.get("status") or "error"),
        int(result.get("steps") or 0), int(result.get("tool_calls") or 0),
        int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
        float(usage.get("cost_usd") or 0.0), float(duration_s), result.get("branch"), source,
        json.dumps(result),
    )
    with closing(_connect(path, create=True)) as conn:
        conn.execute(f"INSERT INTO runs ({', '.join(COLUMNS)}, result_json) VALUES ({', '.join('?' * len(row))})", row)
    return run_id


def list_runs(limit: int = 50, repo: str | None = None, *, with_result: bool = False,
              path: Path | None = None) -> list[dict]:
    """The newest runs first, optionally only those of one repository."""
    conn = _connect(path, create=False)
    if conn is None:
        return []
    where, params = "", []
    if repo is not None:
        where, params = "WHERE repo = ?", [str(Path(repo).resolve())]
    with closing(conn):
        rows = conn.execute(
            f"SELECT *, rowid FROM runs {where} ORDER BY started_at DESC, rowid DESC LIMIT ?", [*params, limit]
        ).fetchall()
    runs = []
    for row in rows:
        run = {name: row[name] for name in COLUMNS}
        if with_result:
            run["result"] = json.loads(row["result_json"])
        runs.append(run)
    return runs


def _day_start(day: date) -> float:
    return datetime.combine(day, datetime.min.time()).timestamp()


def _totals(runs: int, fixed: int, already_passing: int, prompt: int, completion: int, cost: float) -> dict:
    return {
        "runs": runs, "fixed": fixed, "already_passing": already_passing,
        "success_rate": round((fixed + already_passing) / runs, 3) if runs else 0.0,
        "prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": round(float(cost), 6),
    }


def summary(days: int = 7, *, path: Path | None = None, today: date | None = None) -> dict:
    """Per-day totals over the last `days` local days (today included).

    Returns {"since", "days": [{day, runs, fixed, already_passing, success_rate, prompt_tokens,
    completion_tokens, cost_usd}, ...] (only days with runs, oldest first), "totals": {...},
    "today": {...}}. success_rate counts fixed and already_passing runs (those where `fix` exits 0).
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    today = today or date.today()
    since = today - timedelta(days=days - 1)
    rows = []
    conn = _connect(path, create=False)
    if conn is not None:
        with closing(conn):
            rows = conn.execute(
                """SELECT date(started_at, 'unixepoch', 'localtime') AS day, count(*),
                          sum(status = 'fixed'), sum(status = 'already_passing'),
                          sum(prompt_tokens), sum(completion_tokens), sum(cost_usd)
                   FROM runs WHERE started_at >= ? AND started_at < ? GROUP BY day ORDER BY day""",
                [_day_start(since), _day_start(today + timedelta(days=1))],
            ).fetchall()
    per_day = [{"day": row[0], **_totals(*row[1:])} for row in rows]
    sums = [sum(row[i] for row in rows) for i in range(1, 7)]
    todays = next((d for d in per_day if d["day"] == today.isoformat()), None)
    return {
        "since": since.isoformat(),
        "days": per_day,
        "totals": _totals(*sums),
        "today": todays or {"day": today.isoformat(), **_totals(0, 0, 0, 0, 0, 0.0)},
    }
