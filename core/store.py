"""The session store: conversation key -> Claude Code session, in SQLite under STATE_DIR.

A conversation is whatever a face calls one: a Telegram chat, an explicit id sent by an
HTTP client, or a history the proxy recognised. `transcript` is what the session holds,
as the face described it (the proxy recognises a resent history by it), and `head` its
lookup key; `context` is a fingerprint of the client instructions last sent into it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite

from core.errors import StoreError
from core.events import LimitWindow
from core.limits import WindowState
from core.transcript import Transcript

log = logging.getLogger("core.store")

DB_NAME = "sessions.sqlite3"


@dataclass(frozen=True)
class LedgerEntry:
    key: str
    face: str
    model: str
    duration_ms: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    outcome: str


@dataclass(frozen=True)
class UsageTotals:
    """A conversation's turns over all its sessions (a session's own count is `Conversation.turns`)."""

    turns: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    answered: int = 0  # the turns that ended with an answer; the others failed, were stopped or timed out
    last_model: str = ""  # the model that gave the latest answer


@dataclass(frozen=True)
class UsageRow:
    day: str
    face: str
    model: str
    turns: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class StoredResponse:
    """A Responses API answer kept for `previous_response_id`: the items it added to its conversation
    (the request's input, then its output), and the response it followed."""

    id: str
    scope: str  # the API key's: a response is found only by requests of the same key
    previous: str | None
    items: list[Any]


@dataclass(frozen=True)
class Conversation:
    key: str
    session_id: str
    model: str
    workdir: str
    head: str | None
    context: str | None
    turns: int
    created_at: float
    updated_at: float
    transcript: Transcript | None = None

    @classmethod
    def from_row(cls, row: Any) -> Conversation:
        values = dict(row)
        text = values.pop("transcript", None)
        return cls(**values, transcript=Transcript.loads(text) if text else None)


async def _m1_conversations(db: aiosqlite.Connection) -> None:
    await db.execute(
        """
        CREATE TABLE conversations (
            key TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            model TEXT NOT NULL DEFAULT '',
            workdir TEXT NOT NULL,
            head TEXT,
            context TEXT,
            turns INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )
        """
    )
    await db.execute("CREATE INDEX conversations_head ON conversations(head)")


async def _m2_ledger_and_preferences(db: aiosqlite.Connection) -> None:
    await db.execute(
        """
        CREATE TABLE turns (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL,
            face TEXT NOT NULL,
            model TEXT NOT NULL,
            finished_at REAL NOT NULL,
            duration_ms INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            outcome TEXT NOT NULL
        )
        """
    )
    await db.execute("CREATE INDEX turns_key ON turns(key)")
    await db.execute("CREATE INDEX turns_finished ON turns(finished_at)")
    await db.execute("CREATE TABLE preferences (key TEXT PRIMARY KEY, model TEXT NOT NULL)")


async def _m3_transcripts(db: aiosqlite.Connection) -> None:
    # Sessions recorded before hold no transcript and are no longer found by history (explicit keys still work).
    await db.execute("ALTER TABLE conversations ADD COLUMN transcript TEXT")


async def _m4_permission_modes(db: aiosqlite.Connection) -> None:
    await db.execute("CREATE TABLE permission_modes (key TEXT PRIMARY KEY, mode TEXT NOT NULL)")


async def _m5_responses(db: aiosqlite.Connection) -> None:
    await db.execute(
        """
        CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            scope TEXT NOT NULL,
            previous TEXT,
            items TEXT NOT NULL,
            created_at REAL NOT NULL
        )
        """
    )


async def _m6_subscription_limits(db: aiosqlite.Connection) -> None:
    await db.execute(
        "CREATE TABLE subscription_limits (window TEXT PRIMARY KEY, utilization REAL, resets_at REAL,"
        " status TEXT NOT NULL, observed_at REAL NOT NULL)"
    )


async def _m7_limit_warnings(db: aiosqlite.Connection) -> None:
    # The warning level already told of in a window's reset period: a restart does not tell it again.
    await db.execute("ALTER TABLE subscription_limits ADD COLUMN warned REAL NOT NULL DEFAULT 0")


async def _m8_chat_projects(db: aiosqlite.Connection) -> None:
    await db.execute("CREATE TABLE chat_projects (key TEXT PRIMARY KEY, project TEXT NOT NULL)")


# Numbered migrations; applied names are kept in the `migrations` table. Append only.
MIGRATIONS: list[tuple[str, Callable[[aiosqlite.Connection], Awaitable[None]]]] = [
    ("m001_conversations", _m1_conversations),
    ("m002_ledger_and_preferences", _m2_ledger_and_preferences),
    ("m003_transcripts", _m3_transcripts),
    ("m004_permission_modes", _m4_permission_modes),
    ("m005_responses", _m5_responses),
    ("m006_subscription_limits", _m6_subscription_limits),
    ("m007_limit_warnings", _m7_limit_warnings),
    ("m008_chat_projects", _m8_chat_projects),
]


P = ParamSpec("P")
R = TypeVar("R")


def _writes(
    method: Callable[Concatenate[SessionStore, P], Awaitable[R]],
) -> Callable[Concatenate[SessionStore, P], Awaitable[R]]:
    """A write: a failure (a full disk, a read-only or broken database) is a `StoreError`, and the store
    says it is failing (for /health) until a write succeeds again."""

    @functools.wraps(method)
    async def write(store: SessionStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = await method(store, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            store.failure = f"writing failed: {exc}"
            log.error("store_write_failed operation=%s error=%s", method.__name__.strip("_"), exc)
            with contextlib.suppress(sqlite3.Error, ValueError):
                await store.db.rollback()
            raise StoreError(f"the session store {store.path} could not be written: {exc}") from exc
        store.failure = None
        return result

    return write


class SessionStore:
    """The conversations, the ledger and the chats' preferences, in SQLite.

    Conversations read are kept in memory (the most recent `CACHED` of them), so a warm turn
    does not wait for the database before its prompt goes out; every write goes to the
    database and updates or drops the copy. That is safe because one daemon owns a state
    directory (`core.hygiene.StateLock`) and only the daemon writes conversations.
    """

    CACHED = 1024

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DB_NAME
        self._db: aiosqlite.Connection | None = None
        self._recent: OrderedDict[str, Conversation] = OrderedDict()
        self.failure: str | None = None  # what went wrong with the last write, until one succeeds

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch(mode=0o600)  # conversations, transcripts and the ledger: the owner's only
            self._db = await aiosqlite.connect(self.path)
            self._db.row_factory = aiosqlite.Row
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")  # with WAL: safe from corruption, no fsync per commit
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._migrate()
            for path in (self.path, self.path.with_name(self.path.name + "-wal"),
                         self.path.with_name(self.path.name + "-shm")):  # fmt: skip
                if path.exists():  # (a store made by an earlier version may be 0644; SQLite copies the mode)
                    path.chmod(0o600)
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise StoreError(f"cannot use the session store {self.path} (STATE_DIR): {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the session store is not open")
        return self._db

    async def _migrate(self) -> None:
        db = self.db
        await db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        async with db.execute("SELECT name FROM migrations") as cursor:
            applied = {row[0] for row in await cursor.fetchall()}
        for name, migrate in MIGRATIONS:
            if name in applied:
                continue
            await migrate(db)
            await db.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
            await db.commit()

    async def get(self, key: str) -> Conversation | None:
        if (cached := self._recent.get(key)) is not None:
            self._recent.move_to_end(key)
            return cached
        async with self.db.execute("SELECT * FROM conversations WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        conversation = Conversation.from_row(row)
        self._remember(conversation)
        return conversation

    def _remember(self, conversation: Conversation) -> None:
        self._recent[conversation.key] = conversation
        self._recent.move_to_end(conversation.key)
        while len(self._recent) > self.CACHED:
            self._recent.popitem(last=False)

    async def find_holding(self, history: Transcript) -> Conversation | None:
        """The most recent conversation whose session holds `history` (see `Transcript.holds`)."""
        query = "SELECT * FROM conversations WHERE head = ? ORDER BY updated_at DESC LIMIT 50"
        async with self.db.execute(query, (history.key,)) as cursor:
            rows = await cursor.fetchall()
        for row in rows:
            conversation = Conversation.from_row(row)
            if conversation.transcript is not None and conversation.transcript.holds(history):
                return conversation
        return None

    @_writes
    async def record(
        self,
        key: str,
        *,
        session_id: str,
        model: str,
        workdir: str,
        head: Transcript | None,
        context: str | None,
        ledger: LedgerEntry | None = None,
        answered: bool = True,
    ) -> None:
        """Remember that `key` now continues in `session_id`, and account for the turn in the same
        transaction. Called after the CLI reported success; `answered=False` for a keyed conversation's
        turn that was stopped before its answer (it goes on in that session, no answered turn counted)."""
        now = time.time()
        before = self._recent.pop(key, None)  # dropped first: a failed write leaves no stale copy
        if ledger is not None:
            await self._insert_turn(ledger)
        await self.db.execute(
            """
            INSERT INTO conversations
                (key, session_id, model, workdir, head, transcript, context, turns, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(key) DO UPDATE SET
                session_id = excluded.session_id, model = excluded.model, workdir = excluded.workdir,
                head = excluded.head, transcript = excluded.transcript, context = excluded.context,
                turns = turns + excluded.turns, updated_at = excluded.updated_at
            """,
            (
                key,
                session_id,
                model,
                workdir,
                head and head.key,
                head and head.dumps(),
                context,
                int(answered),
                now,
                now,
            ),
        )
        await self.db.commit()
        if before is not None:  # what the database now holds, without reading it back
            self._remember(Conversation(
                key, session_id, model, workdir, head.key if head else None, context, before.turns + int(answered),
                before.created_at, now,
                head,
            ))  # fmt: skip

    @_writes
    async def forget(self, key: str) -> bool:
        self._recent.pop(key, None)
        cursor = await self.db.execute("DELETE FROM conversations WHERE key = ?", (key,))
        await self.db.commit()
        return cursor.rowcount > 0

    async def _insert_turn(self, entry: LedgerEntry) -> None:
        await self.db.execute(
            "INSERT INTO turns (key, face, model, finished_at, duration_ms, prompt_tokens, completion_tokens,"
            " cached_tokens, cost_usd, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.key, entry.face, entry.model, time.time(), entry.duration_ms, entry.prompt_tokens,
             entry.completion_tokens, entry.cached_tokens, entry.cost_usd, entry.outcome),
        )  # fmt: skip

    @_writes
    async def add_turn(self, entry: LedgerEntry) -> None:
        await self._insert_turn(entry)
        await self.db.commit()

    async def usage(self, key: str) -> UsageTotals:
        answered = "outcome IN ('ok', 'error_max_turns')"
        query = (
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
            f" COALESCE(SUM(cost_usd), 0), COALESCE(SUM({answered}), 0) FROM turns WHERE key = ?"
        )
        async with self.db.execute(query, (key,)) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        last = f"SELECT model FROM turns WHERE key = ? AND {answered} ORDER BY finished_at DESC, id DESC LIMIT 1"
        async with self.db.execute(last, (key,)) as cursor:
            model = await cursor.fetchone()
        return UsageTotals(int(row[0]), int(row[1]), int(row[2]), float(row[3]), int(row[4]), model[0] if model else "")

    async def usage_by_day(self, since: float) -> list[UsageRow]:
        """Turns, tokens and cost per local day, face and model, since a Unix time; newest day first."""
        query = """
            SELECT date(finished_at, 'unixepoch', 'localtime') AS day, face, model, COUNT(*),
                   SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), SUM(cost_usd)
            FROM turns WHERE finished_at >= ? GROUP BY day, face, model ORDER BY day DESC, face, model
        """
        async with self.db.execute(query, (since,)) as cursor:
            rows = await cursor.fetchall()
        return [UsageRow(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), int(r[6]), float(r[7])) for r in rows]

    async def preferred_model(self, key: str) -> str | None:
        return await self._choice("preferences", "model", key)

    async def set_preferred_model(self, key: str, model: str | None) -> None:
        await self._choose("preferences", "model", key, model)

    async def permission_mode(self, key: str) -> str | None:
        """The mode a conversation was set to (Telegram's /mode), if any."""
        return await self._choice("permission_modes", "mode", key)

    async def set_permission_mode(self, key: str, mode: str | None) -> None:
        await self._choose("permission_modes", "mode", key, mode)

    async def project(self, key: str) -> str | None:
        """The project a chat (or forum topic) works in."""
        return await self._choice("chat_projects", "project", key)

    async def set_project(self, key: str, project: str | None) -> None:
        await self._choose("chat_projects", "project", key, project)

    @_writes
    async def adopt(self, key: str, session_id: str, workdir: str) -> None:
        """Make `key` continue an existing session of the CLI (one started elsewhere, e.g. in a terminal);
        nothing of its history is known here, so its next turn resumes it as it is."""
        self._recent.pop(key, None)
        now = time.time()
        await self.db.execute(
            """
            INSERT INTO conversations
                (key, session_id, model, workdir, head, transcript, context, turns, created_at, updated_at)
            VALUES (?, ?, '', ?, NULL, NULL, NULL, 0, ?, ?)
            ON CONFLICT(key) DO UPDATE SET
                session_id = excluded.session_id, workdir = excluded.workdir, head = NULL, transcript = NULL,
                context = NULL, turns = 0, updated_at = excluded.updated_at
            """,
            (key, session_id, workdir, now, now),
        )
        await self.db.commit()

    async def _choice(self, table: str, column: str, key: str) -> str | None:
        """A conversation's choice kept in a `key -> column` table (names are ours, never a user's)."""
        async with self.db.execute(f"SELECT {column} FROM {table} WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    @_writes
    async def _choose(self, table: str, column: str, key: str, value: str | None) -> None:
        """Set (or, with None, drop) a conversation's choice."""
        if value is None:
            await self.db.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
        else:
            await self.db.execute(
                f"INSERT INTO {table} (key, {column}) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET {column} = ?",
                (key, value, value),
            )
        await self.db.commit()

    @_writes
    async def keep_response(self, response: StoredResponse) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO responses (id, scope, previous, items, created_at) VALUES (?, ?, ?, ?, ?)",
            (response.id, response.scope, response.previous, json.dumps(response.items), time.time()),
        )
        await self.db.commit()

    async def response_chain(self, response_id: str, scope: str) -> list[StoredResponse] | None:
        """The response and the ones it followed, oldest first; None when it is unknown to this scope."""
        chain: list[StoredResponse] = []
        seen: set[str] = set()
        next_id: str | None = response_id
        while next_id is not None and next_id not in seen:
            seen.add(next_id)
            query = "SELECT id, scope, previous, items FROM responses WHERE id = ?"
            async with self.db.execute(query, (next_id,)) as cursor:
                row = await cursor.fetchone()
            if row is None or row[1] != scope:
                return None if not chain else chain[::-1]  # (an ancestor pruned away: what is left)
            chain.append(StoredResponse(row[0], row[1], row[2], json.loads(row[3])))
            next_id = row[2]
        return chain[::-1]

    @_writes
    async def keep_limits(self, states: list[WindowState]) -> None:
        await self.db.executemany(
            "INSERT OR REPLACE INTO subscription_limits"
            " (window, utilization, resets_at, status, observed_at, warned) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (s.window.name, s.window.utilization, s.window.resets_at, s.window.status, s.observed_at, s.warned)
                for s in states
            ],
        )  # fmt: skip
        await self.db.commit()

    async def limits(self) -> list[WindowState]:
        query = "SELECT window, utilization, resets_at, status, observed_at, warned FROM subscription_limits"
        async with self.db.execute(query) as cursor:
            rows = await cursor.fetchall()
        return [WindowState(LimitWindow(r[0], r[1], r[2], r[3]), float(r[4]), float(r[5])) for r in rows]

    async def ping(self) -> None:
        async with self.db.execute("SELECT 1") as cursor:
            await cursor.fetchone()

    async def problem(self) -> str | None:
        """What is wrong with the store, or None: a write that failed, a database that cannot be read, or
        a database file deleted under the daemon (SQLite goes on writing to the unlinked file)."""
        if not self.path.exists():
            return f"the database file {self.path} was deleted while the daemon ran; restart it"
        try:
            await self.ping()
        except (sqlite3.Error, OSError, ValueError) as exc:
            return f"reading failed: {exc}"
        return self.failure
