"""The results store: one SQLite row per measurement, committed as it finishes.

Ctrl-C loses nothing that finished, and a rerun skips what is already measured on this machine. Every row
carries the machine fingerprint and tool versions, so results from a Jetson and a desktop can be merged
into one table without ever being confused.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from segedge.core.errors import ArtifactError

COLUMNS = {
    "created": "TEXT",
    "machine_id": "TEXT",
    "machine": "TEXT",  # JSON fingerprint
    "profile": "TEXT",
    "backend": "TEXT",
    "variant": "TEXT",  # how the backend ran the row beyond its name: device, arithmetic, which INT8 graph won
    "model": "TEXT",
    "precision": "TEXT",
    "height": "INTEGER",
    "width": "INTEGER",
    "batch": "INTEGER",
    "threads": "INTEGER",
    "status": "TEXT",  # ok | drop | uncertain | failed
    "reason": "TEXT",
    "median_ms": "REAL",
    "p90_ms": "REAL",
    "p99_ms": "REAL",
    "min_ms": "REAL",
    "runs": "INTEGER",
    "fps": "REAL",
    "throughput": "REAL",  # images/s at this batch size
    "pre_ms": "REAL",
    "post_ms": "REAL",
    "peak_rss_mb": "REAL",
    "camera": "TEXT",  # HxW of the frames the end-to-end figures fed (the profile's camera_size)
    "e2e_ms": "REAL",  # segedge.Predictor on a camera frame: resize + normalise, the row's median inference, mask at frame size
    "e2e_pre_ms": "REAL",
    "e2e_post_ms": "REAL",
    "e2e_fps": "REAL",
    "miou": "REAL",
    "reference_miou": "REAL",
    "miou_drop": "REAL",  # points, on the timed runner
    "drop_low": "REAL",  # 95 % paired bootstrap interval of the drop over images
    "drop_high": "REAL",
    "parity_miou": "REAL",  # the export-time parity check (ONNX Runtime, CPU), stored apart
    "parity_drop": "REAL",
    "parity_agreement": "REAL",
    "data": "TEXT",  # the evaluation data: synthetic or KIND:ROOT
    "argmax_agreement": "REAL",
    "tolerance": "REAL",
    "eval_images": "INTEGER",
    "quick": "INTEGER",  # 1: a --quick smoke row (3 runs, 4 images): labelled, never reused for a full run
    "artifact": "TEXT",
    "artifact_sha256": "TEXT",
    # what decides the figures (segedge.flows.bench.row_identity): model file, data bytes, preprocessing, build,
    # profile content; a row is resumed only under the same identity
    "identity": "TEXT",
    "data_fingerprint": "TEXT",  # sha256 (16 hex) of the evaluation files the row was scored on
    "model_fingerprint": "TEXT",  # sha256 (16 hex) of the model's file or weights and code
    "classes": "TEXT",  # the model's class names (JSON list): what the report names each score by
}
RESUME_KEY = ("machine_id", "profile", "model", "precision", "height", "width", "batch")
STATUS_MARK = {"ok": "✅", "drop": "❎", "uncertain": "❔", "failed": "❌", "pruned": "✂"}
MEASURED = ("ok", "drop", "uncertain")  # statuses of a row that ran and holds figures (pruned/failed ones do not)

# a row is shown by these; a store whose table lacks one is another program's, a row with one NULL is damaged
_SHOWN_BY = ("profile", "model", "precision")
_PYTHON_TYPES = {"TEXT": str, "INTEGER": int, "REAL": (int, float)}
_TYPE_WORDS = {"TEXT": "text", "INTEGER": "an integer", "REAL": "a number"}


class ResultsStore:
    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        """``read_only`` for what only reads (``report``, the other side of a merge): SQLite opens the file with
        ``mode=ro``, so a store on a read-only disk or of another user reads, and nothing is created or altered;
        columns an older store lacks are None in the rows read instead of added to the file."""
        self.path = Path(path)
        self.read_only = read_only
        if self.path.is_dir():
            raise ArtifactError(f"results store {self.path} is a directory; give a file path, e.g. {self.path / 'results.sqlite'}")
        if read_only:
            if not self.path.is_file():
                raise ArtifactError(f"no results store at {self.path}; run `segedge bench` first")
            try:
                self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
                self._add_missing_columns()
            except sqlite3.DatabaseError as exc:
                raise ArtifactError(f"results store {self.path} is not a usable SQLite file ({exc})") from None
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(f"cannot create the results store {self.path}: {exc.strerror or exc}") from None
        if not os.access(self.path.parent, os.W_OK) or (self.path.exists() and not os.access(self.path, os.W_OK)):
            raise ArtifactError(f"cannot write the results store {self.path}: the file or its folder is read-only")
        try:
            self.db = sqlite3.connect(self.path)
            if not self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'").fetchone():  # new or empty
                columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
                self.db.execute(f"CREATE TABLE measurements (id INTEGER PRIMARY KEY, {columns})")
            self._add_missing_columns()
            self.db.commit()
        except sqlite3.DatabaseError as exc:
            raise ArtifactError(f"results store {self.path} is not a usable SQLite file ({exc})") from None

    def _add_missing_columns(self) -> None:
        """Stores written by an older segedge gain the newer columns. Rows from before ``quick`` was stored
        are smoke rows when they ran 3 timed runs or fewer (what --quick does; a profile asks for 10 or more).
        Read-only, the file stays as it is and :meth:`rows` fills in what ``self.absent`` names. Another program's
        SQLite file is refused before anything is read from or written to it."""
        tables = [row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        have = {row[1] for row in self.db.execute("PRAGMA table_info(measurements)")}
        lacking = [name for name in _SHOWN_BY if name not in have]
        if tables and (not have or lacking):
            self.db.close()
            what = (f"its measurements table has no {', '.join(lacking)}" if have
                    else f"it has no measurements table (it holds {', '.join(tables)})")
            raise ArtifactError(f"results store {self.path} is not a segedge results store: {what}; give --results the "
                                f"file `segedge bench` wrote")
        self.has_table = bool(have)  # False: an empty file, read-only (writing creates the table)
        self.absent = [name for name in COLUMNS if name not in have] if self.read_only else []
        for name, kind in COLUMNS.items():
            if name not in have and not self.read_only:
                self.db.execute(f"ALTER TABLE measurements ADD COLUMN {name} {kind}")
                if name == "quick":
                    self.db.execute("UPDATE measurements SET quick = (runs IS NOT NULL AND runs <= 3)")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, row: dict[str, Any]) -> None:
        """Insert and commit at once (a sweep killed after this call keeps the row)."""
        row = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "quick": 0, **row}
        if isinstance(row.get("machine"), dict):
            row["machine"] = json.dumps(row["machine"], sort_keys=True)
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown result columns: {sorted(unknown)}")
        names = list(row)
        try:
            self.db.execute(
                f"INSERT INTO measurements ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
                [row[n] for n in names],
            )
            self.db.commit()
        except sqlite3.Error as exc:  # a full disk, a read-only file, a store truncated under us
            raise ArtifactError(f"cannot save to the results store {self.path}: {exc}") from None

    def has_finished(self, quick: bool = False, eval_images: int | None = None, identity: str | None = None,
                     **key: Any) -> bool:
        """Whether a row that ran (ok or over tolerance, not failed) exists for this key, measured the way asked:
        a full run reuses only full rows; a quick run any; ``eval_images`` and ``identity`` (what decides the
        figures: model file, data, preprocessing, profile content) must match when given. A row stored before
        identities were recorded matches none."""
        where = " AND ".join(f"{k} = ?" for k in RESUME_KEY)
        values = [key[k] for k in RESUME_KEY]
        if identity is not None:
            where += " AND identity = ?"
            values.append(identity)
        where += " AND (quick = 0 OR quick = ?)"
        values.append(int(bool(quick)))
        if eval_images is not None:
            where += " AND eval_images = ?"
            values.append(eval_images)
        cur = self.db.execute(f"SELECT 1 FROM measurements WHERE {where} AND status IN {MEASURED} LIMIT 1", values)
        return cur.fetchone() is not None

    def finished_row(self, identity: str, quick: bool = False) -> dict[str, Any] | None:
        """The newest row that ran under ``identity`` (a full one unless ``quick``), or None."""
        cur = self.db.execute(f"SELECT * FROM measurements WHERE identity = ? AND status IN {MEASURED} "
                              f"AND (quick = 0 OR quick = ?) ORDER BY id DESC LIMIT 1", [identity, int(bool(quick))])
        found = cur.fetchone()
        return None if found is None else dict(zip([d[0] for d in cur.description], found))

    def rows(self) -> list[dict[str, Any]]:
        try:
            if not self.has_table:
                return []
            cur = self.db.execute("SELECT * FROM measurements ORDER BY rowid")  # the order rows were added
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, values)) for values in cur.fetchall()]
        except sqlite3.DatabaseError as exc:  # a truncated or corrupt page
            raise ArtifactError(f"results store {self.path} is damaged ({exc}); keep a copy and start a new store "
                                f"with --results, or merge what is readable from a backup") from None
        for number, row in enumerate(rows, 1):
            lacking = [name for name in _SHOWN_BY if not isinstance(row[name], str)]
            if lacking:  # a page cut short reads back as a row of NULLs
                raise ArtifactError(f"results store {self.path} is damaged: row {number} has no {', '.join(lacking)} (a "
                                    f"copy cut short?); keep a copy and start a new store with --results, or merge what "
                                    f"is readable from a backup")
            for name, value in row.items():
                kind = COLUMNS.get(name)
                if value is not None and kind and not isinstance(value, _PYTHON_TYPES[kind]):
                    raise ArtifactError(f"results store {self.path}: row {number}, column {name} holds {value!r}, not "
                                        f"{_TYPE_WORDS[kind]}; is it a store `segedge bench` wrote?")
            # an older store read without altering it: what the newer columns would hold
            row.update((name, None) for name in self.absent)
            if "quick" in self.absent:
                row["quick"] = int(row.get("runs") is not None and row["runs"] <= 3)
        return rows

    def latest_rows(self) -> list[dict[str, Any]]:
        """The newest row per (machine, profile, model, precision, size, batch, data); a full measurement is preferred
        to a newer --quick smoke row of the same key."""
        latest: dict[tuple, dict] = {}
        for row in self.rows():
            key = (*(row.get(k) for k in RESUME_KEY), row.get("data"))  # rows on other data are other rows
            kept = latest.get(key)
            if kept is None or not (row.get("quick") and not kept.get("quick") and kept["status"] != "failed"):
                latest[key] = row
        return list(latest.values())

    def merge(self, other: str | Path) -> int:
        """Copy rows from another store (e.g. a Jetson's) that this one lacks; returns how many. A store with a column
        this segedge does not know is refused whole, before any row is copied: merging would drop what it holds."""
        other = Path(other)
        if not other.is_file():
            raise ArtifactError(f"results store {other} does not exist")
        with ResultsStore(other, read_only=True) as theirs:
            rows = theirs.rows()
        unknown = sorted({name for row in rows for name in row} - set(COLUMNS) - {"id"})
        if unknown:
            some = "a column" if len(unknown) == 1 else "columns"
            raise ArtifactError(f"cannot merge {other}: it has {some} this segedge does not know ({', '.join(unknown)}); "
                                f"it was written by a newer segedge: upgrade this one to merge it")
        key = lambda r: tuple(r.get(k) for k in ("machine_id", "created", "profile", "model", "precision", "batch"))  # noqa: E731
        mine = {key(r) for r in self.rows()}
        added = 0
        for row in rows:
            if key(row) not in mine:
                row.pop("id", None)
                self.add(row)
                added += 1
        return added


def iter_columns() -> Iterable[str]:
    return COLUMNS.keys()
