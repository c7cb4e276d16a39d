"""The SQL database: SQLite (embedded, the default) behind a tiny engine interface.

Statements use ``?`` placeholders. Migrations are numbered ``NNNN_name.sql`` files in
``storage/migrations``; each runs once, in order, inside a transaction. Calls are synchronous
and short (WAL mode); the async store methods wrap them so a PostgreSQL engine can slot in.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from minimix.protocol.stanza import StanzaError

log = logging.getLogger(__name__)

Row = tuple[Any, ...]

# SQLite primary result codes that mean "try again later", not "broken".
_TRANSIENT = frozenset({5, 6, 13})  # SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL


class StorageError(Exception):
    """The database refused or failed an operation (disk full, locked, corrupt).

    ``transient`` is true when retrying later may succeed (disk full, database locked).
    Whoever sent the stanza that could not be stored is told with :meth:`stanza_error`; the
    stanza is never acknowledged as handled in silence.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    @classmethod
    def wrap(cls, exc: sqlite3.Error) -> StorageError:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        log.error("database error: %s", exc)
        return cls(str(exc), transient=code in _TRANSIENT)

    def stanza_error(self) -> StanzaError:
        """The error for the sender of a stanza that could not be stored (RFC 6120 §8.3.3)."""
        if self.transient:
            return StanzaError("resource-constraint", "storage is full or busy; not stored")
        return StanzaError("internal-server-error", "storage failed; not stored")


class Database:
    """One SQLite file. Thread-safe enough for the event loop plus the CLI."""

    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        # For each with_jid of shared archive rows read so far, the archives whose span grows
        # (see ArchiveStore): every store of this database keeps it here.
        self.archive_spans: dict[str, frozenset[str]] = {}
        self._checkpointer: threading.Thread | None = None
        self._checkpoints_stop = threading.Event()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self.migrate()

    # ------------------------------------------------------------------ migrations
    def migrate(self) -> None:
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL)"
            )
            done = {r[0] for r in self._conn.execute("SELECT version FROM schema_migrations")}
            folder = resources.files("minimix.storage") / "migrations"
            files = sorted(
                (f.name for f in folder.iterdir() if f.name.endswith(".sql")),
                key=lambda n: int(n.split("_", 1)[0]),
            )
            for name in files:
                version = int(name.split("_", 1)[0])
                if version in done:
                    continue
                sql = (folder / name).read_text()
                log.info("applying migration %s", name)
                try:
                    self._conn.execute("BEGIN")
                    for statement in _split(sql):
                        self._conn.execute(statement)
                    self._conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                        (version, name),
                    )
                    self._conn.execute("COMMIT")
                except Exception:
                    self._conn.execute("ROLLBACK")
                    raise

    # ------------------------------------------------------------------ queries
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows changed."""
        with self._lock:
            try:
                cur = self._conn.execute(sql, params)
            except sqlite3.Error as exc:
                raise StorageError.wrap(exc) from exc
            return cur.rowcount

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run an INSERT; returns the new row id."""
        with self._lock:
            try:
                cur = self._conn.execute(sql, params)
            except sqlite3.Error as exc:
                raise StorageError.wrap(exc) from exc
            return int(cur.lastrowid or 0)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for many rows in a single transaction."""
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                self._conn.executemany(sql, rows)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise StorageError.wrap(exc) from exc

    def execute_rows(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for many rows inside the caller's :meth:`transaction`."""
        with self._lock:
            try:
                self._conn.executemany(sql, rows)
            except sqlite3.Error as exc:
                raise StorageError.wrap(exc) from exc

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            try:
                return list(self._conn.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise StorageError.wrap(exc) from exc

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        with self._lock:
            try:
                row = self._conn.execute(sql, params).fetchone()
            except sqlite3.Error as exc:
                raise StorageError.wrap(exc) from exc
            return tuple(row) if row is not None else None

    @property
    def lock(self) -> threading.RLock:
        """Held by every call; hold it across calls that belong together (a count read and
        the statement it decides), so another thread's calls do not come in between."""
        return self._lock

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_in_background(self, interval: float = 1.0) -> None:
        """Copy the write-ahead log into the database file from a thread of its own, every
        ``interval`` seconds, instead of inside whichever commit crosses 1,000 pages of log:
        the copy and the disk sync it ends with then no longer hold up the thread that writes
        (the server's event loop). A passive checkpoint on a second connection: writers carry
        on meanwhile; the log starts over once a checkpoint has copied all of it."""
        if self.path == ":memory:" or self._checkpointer is not None:
            return
        with self._lock:
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpoints_stop.clear()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_forever, args=(interval,), name="checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint_forever(self, interval: float) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            log.exception("the checkpoint thread could not open the database")
            with self._lock:  # the server's connection checkpoints as it did before
                self._conn.execute("PRAGMA wal_autocheckpoint=1000")
            return
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            while not self._checkpoints_stop.wait(interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("checkpoint failed (tried again later): %s", exc)
        finally:
            conn.close()

    def close(self) -> None:
        thread = self._checkpointer
        if thread is not None:
            self._checkpoints_stop.set()
            thread.join()
            self._checkpointer = None
        with self._lock:
            if thread is not None:
                try:  # what the log holds goes into the file before the server stops
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("final checkpoint failed: %s", exc)
            self._conn.close()


class _Transaction:
    def __init__(self, db: Database) -> None:
        self.db = db

    def __enter__(self) -> Database:
        self.db._lock.acquire()
        try:
            self.db._conn.execute("BEGIN")
        except sqlite3.Error as err:
            self.db._lock.release()
            raise StorageError.wrap(err) from err
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        conn = self.db._conn
        try:
            if exc_type is None:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as err:
                    _rollback(conn)
                    raise StorageError.wrap(err) from err
            else:
                _rollback(conn)
        finally:
            self.db._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise StorageError.wrap(exc) from exc


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open; SQLite may have done it already (after SQLITE_FULL, say)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("rollback failed")


def _split(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip()]
