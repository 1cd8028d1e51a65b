"""SQLite storage for todos: one connection per thread, one shared database."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS todos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
)
"""


@dataclass
class Todo:
    id: int
    title: str
    done: bool
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "done": self.done,
            "created_at": self.created_at,
        }


class TodoStore:
    def __init__(self, path: str | None = None) -> None:
        if path is None:
            # A named shared-cache in-memory database: every thread's connection sees it,
            # and it lives as long as the keeper connection below.
            self.uri = f"file:todos-{uuid.uuid4().hex}?mode=memory&cache=shared"
        else:
            self.uri = f"file:{path}"
        self._local = threading.local()
        self._keeper = self._connect()
        self._keeper.execute(SCHEMA)
        self._keeper.commit()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.uri, uri=True, check_same_thread=False, timeout=5.0)
        conn.row_factory = sqlite3.Row
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def add(self, title: str, done: bool = False) -> Todo:
        with self.conn as conn:
            cur = conn.execute("INSERT INTO todos (title, done) VALUES (?, ?)", (title, int(done)))
            todo_id = cur.lastrowid
        todo = self.get(int(todo_id or 0))
        if todo is None:  # pragma: no cover - the row was just inserted
            raise RuntimeError(f"todo {todo_id} vanished after insert")
        return todo

    def get(self, todo_id: int) -> Todo | None:
        row = self.conn.execute("SELECT * FROM todos WHERE id = ?", (todo_id,)).fetchone()
        return _todo(row) if row else None

    def list(self, done: bool | None = None) -> list[Todo]:
        if done is None:
            rows = self.conn.execute("SELECT * FROM todos ORDER BY id").fetchall()
        else:
            rows = self.conn.execute(
                "SELECT * FROM todos WHERE done = ? ORDER BY id", (int(done),)
            ).fetchall()
        return [_todo(row) for row in rows]

    def update(
        self, todo_id: int, title: str | None = None, done: bool | None = None
    ) -> Todo | None:
        if self.get(todo_id) is None:
            return None
        with self.conn as conn:
            if title is not None:
                conn.execute("UPDATE todos SET title = ? WHERE id = ?", (title, todo_id))
            if done is not None:
                conn.execute("UPDATE todos SET done = ? WHERE id = ?", (int(done), todo_id))
        return self.get(todo_id)

    def delete(self, todo_id: int) -> bool:
        with self.conn as conn:
            cur = conn.execute("DELETE FROM todos WHERE id = ?", (todo_id,))
        return cur.rowcount > 0

    def close(self) -> None:
        self._keeper.close()


def _todo(row: sqlite3.Row) -> Todo:
    return Todo(
        id=row["id"], title=row["title"], done=bool(row["done"]), created_at=row["created_at"]
    )
