"""Anki, side by side: the bench deck and its history in an Anki collection, timed with
Anki's own v3 scheduler (the Rust backend of the ``anki`` package from PyPI).

Used by ``manage.py bench``; ``anki`` is a bench-only dependency (the ``bench`` extra),
imported here and nowhere in the app.

The collection mirrors the heavy student's data: one note per card, in deck order; each
card's state, due date, FSRS memory state (stability, difficulty) and counters copied
from its progress row; one revlog row per review. Anki runs on the wall clock, not on a
clock we pass in, so every time is moved by the same offset: the bench's ``NOW`` becomes
the moment the collection is built. The collection is cached (``bench-data/``); each run
works on a copy, moved forward by the whole days since it was built, so the same cards
are due on every run.

Settings that make the two schedulers do the same work per step: FSRS on, desired
retention 0.90, learning steps 1m 10m (ours), relearning 10m, daily limits 9999 (as the
bench student's), and new cards after reviews (our queue order).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from anki.collection import AddNoteRequest, Collection
from anki.consts import NEW_CARDS_LAST
from anki.scheduler.v3 import CardAnswer

DAY = 86400
# Card type / queue values of Anki's schema.
NEW, LEARNING, REVIEW, RELEARNING = 0, 1, 2, 3
QUEUE_LEARN, QUEUE_DAY_LEARN = 1, 3
# revlog types
REVLOG_LEARN, REVLOG_REVIEW, REVLOG_RELEARN = 0, 1, 2
ANSWERS = (CardAnswer.AGAIN, CardAnswer.HARD, CardAnswer.GOOD, CardAnswer.EASY)
DECK_NAME = "Bench"
META_KEY = "studyappBench"
FSRS_DECAY = 0.1542


def anki_version() -> str:
    from anki.buildinfo import version

    return version


# --- building the cached collection ----------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The heavy student's data, as plain values (times as Unix seconds, our clock).

    cards: (position, front, back) in deck order.
    progress: (position, state, step, due, stability, difficulty, reps, lapses,
    last_reviewed_at), state as decks.models.State (0 new, 1 learning, 2 review,
    3 relearning).
    reviews: (position, rating 1–5, reviewed_at, time_taken_ms, state_before,
    scheduled_days), oldest first.
    """

    cards: list[tuple]
    progress: list[tuple]
    reviews: Iterable[tuple]
    now: float  # the bench's NOW
    version: int  # the bench data generator's version
    grades: dict[int, int]  # our 1–5 rating to an Anki/FSRS grade 1–4


def build(path: Path, source: Source, log: Callable[[str], None] = print) -> dict:
    """Write the collection to ``path`` (atomically: a killed build leaves nothing)."""
    partial = path.with_name(f"{path.stem}-partial{path.suffix}")
    _remove(partial)
    started = time.perf_counter()
    col = Collection(str(partial))
    try:
        did = col.decks.id(DECK_NAME)
        _configure(col, did)
        basic = col.models.by_name("Basic")
        # add_notes in slices: one call for 100,000 notes works but shows no progress.
        for start in range(0, len(source.cards), 20_000):
            requests = []
            for _position, front, back in source.cards[start : start + 20_000]:
                note = col.new_note(basic)
                note["Front"], note["Back"] = front, back
                requests.append(AddNoteRequest(note, did))
            col.add_notes(requests)
            log(f"  anki: {start + len(requests):,} notes")
        # New cards are numbered in the order they were added: due 1..N is deck order.
        card_of = {due: cid for cid, due in col.db.all("select id, due from cards")}

        offset = time.time() - source.now
        today = col.sched.today
        day_start = col.sched.day_cutoff - DAY
        rows = []
        for (
            position,
            state,
            step,
            due,
            stability,
            difficulty,
            reps,
            lapses,
            last,
        ) in source.progress:
            if state == NEW:
                continue
            data = {
                "s": round(stability, 4),
                "d": round(difficulty, 4),
                "dr": 0.9,
                "decay": FSRS_DECAY,
                "lrt": int(last + offset),
            }
            if state in (LEARNING, RELEARNING):
                # Intraday learning: due is a timestamp; ``left`` counts the steps to go
                # (two learning steps, one relearning step).
                queue, anki_due, ivl = QUEUE_LEARN, int(due + offset), 0
                left = (2 if state == LEARNING else 1) - (step or 0)
            else:
                queue, left = REVIEW, 0
                anki_due = today + math.floor((due + offset - day_start) / DAY)
                ivl = max(1, round((due - last) / DAY))
            rows.append(
                (state, queue, anki_due, ivl, reps, lapses, left, json.dumps(data))
                + (card_of[position],)
            )
        col.db.transact(
            lambda: col.db.executemany(
                "update cards set type=?, queue=?, due=?, ivl=?, factor=2500, reps=?,"
                " lapses=?, left=?, data=? where id=?",
                rows,
            )
        )
        log(f"  anki: {len(rows):,} card states")

        revlog = []
        last_id = 0
        previous_ivl: dict[int, int] = {}
        inserted = 0

        def flush() -> None:
            col.db.transact(
                lambda: col.db.executemany(
                    "insert into revlog (id, cid, usn, ease, ivl, lastIvl, factor, time, type)"
                    " values (?, ?, -1, ?, ?, ?, ?, ?, ?)",
                    revlog,
                )
            )

        for position, rating, at, taken, state_before, days in source.reviews:
            cid = card_of[position]
            # revlog ids are the answer time in ms, and unique.
            rid = max(int((at + offset) * 1000), last_id + 1)
            last_id = rid
            ivl = round(days) if days >= 1 else -round(days * DAY)  # negative: seconds
            kind = {NEW: REVLOG_LEARN, LEARNING: REVLOG_LEARN, RELEARNING: REVLOG_RELEARN}.get(
                state_before, REVLOG_REVIEW
            )
            revlog.append(
                (rid, cid, source.grades[rating], ivl, previous_ivl.get(cid, 0))
                + (2500, min(taken or 0, 60_000), kind)
            )
            previous_ivl[cid] = ivl
            if len(revlog) == 100_000:
                flush()
                inserted += len(revlog)
                revlog.clear()
                log(f"  anki: {inserted:,} revlog rows")
        if revlog:
            flush()
            inserted += len(revlog)
        meta = {
            "version": source.version,
            "built_at": time.time(),
            "today": col.sched.today,
            "cards": len(source.cards),
            "revlog": inserted,
            "build_seconds": time.perf_counter() - started,
        }
        col.set_config(META_KEY, meta)
    finally:
        col.close()
    _remove(path)
    os.replace(partial, path)
    _remove(partial)  # its media folder; the collection itself has moved
    return meta


def _configure(col: Collection, did: int) -> None:
    col.set_config("fsrs", True)
    conf = col.decks.config_dict_for_deck_id(did)
    conf["new"]["perDay"] = 9999
    conf["rev"]["perDay"] = 9999
    conf["new"]["delays"] = [1.0, 10.0]
    conf["lapse"]["delays"] = [10.0]
    conf["desiredRetention"] = 0.9
    conf["newMix"] = NEW_CARDS_LAST
    col.decks.update_config(conf)
    col.decks.select(did)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    _remove_media(path)


def cached_meta(path: Path) -> dict | None:
    """The build's metadata, or None when there is no complete cached collection."""
    if not path.exists():
        return None
    col = Collection(str(path))
    try:
        return col.get_config(META_KEY, None)
    finally:
        col.close()
        _remove_media(path)  # opening made an empty media folder; nothing uses it


def _remove_media(path: Path) -> None:
    # Anki's media folder and media database beside the collection (both unused here).
    media = path.with_suffix(".media")
    shutil.rmtree(media, ignore_errors=True)
    Path(f"{media}.db2").unlink(missing_ok=True)


# --- a timed session ----------------------------------------------------------------------------


@dataclass
class AnkiSession:
    queue_build: float = 0.0  # the first get_queued_cards of the session (builds the queue)
    get: list[float] = field(default_factory=list)
    answer: list[float] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    counts_at_start: tuple[int, int, int] = (0, 0, 0)  # new, learning, review
    export_rows: int = 0
    export_seconds: float = 0.0
    journal: str = ""
    synchronous: int = 0


def open_work_copy(cached: Path, work: Path) -> Collection:
    """A copy of the cached collection, moved forward to today (see the module docstring)."""
    _remove(work)
    shutil.copyfile(cached, work)
    col = Collection(str(work))
    meta = col.get_config(META_KEY)
    days = col.sched.today - meta["today"]
    if days:
        shift = days * DAY

        def move() -> None:
            # Moving the creation time keeps "today" the same day number, so review due
            # days stay put; timestamps (learning due, last review) move with it.
            col.db.execute("update col set crt = crt + ?", shift)
            col.db.execute("update cards set due = due + ? where queue = ?", shift, QUEUE_LEARN)
            col.db.execute(
                "update cards set data = json_set(data, '$.lrt', json_extract(data, '$.lrt') + ?)"
                " where json_extract(data, '$.lrt') is not null",
                shift,
            )

        col.db.transact(move)
        col.close()
        col = Collection(str(work))
    return col


def run_session(
    col: Collection, steps: int, warmup: int, ratings: list[int], grades: dict[int, int]
) -> AnkiSession:
    """``warmup + steps`` study steps: get the next card, answer it (committed)."""
    session = AnkiSession()
    session.journal = col.db.scalar("pragma journal_mode")
    session.synchronous = col.db.scalar("pragma synchronous")
    perf = time.perf_counter
    start = perf()
    first = col.sched.get_queued_cards(fetch_limit=1)
    session.queue_build = perf() - start
    session.counts_at_start = (first.new_count, first.learning_count, first.review_count)
    for index in range(warmup + steps):
        t0 = perf()
        queued = col.sched.get_queued_cards(fetch_limit=1)
        t1 = perf()
        if not queued.cards:
            raise RuntimeError(f"Anki's queue ran dry after {index} steps")
        card = queued.cards[0]
        grade = grades[ratings[index % len(ratings)]]
        states = card.states
        new_state = (states.again, states.hard, states.good, states.easy)[grade - 1]
        col.sched.answer_card(
            CardAnswer(
                card_id=card.card.id,
                current_state=states.current,
                new_state=new_state,
                rating=ANSWERS[grade - 1],
                answered_at_millis=int(time.time() * 1000),
                milliseconds_taken=3000,
            )
        )
        t2 = perf()
        if index >= warmup:
            session.get.append(t1 - t0)
            session.answer.append(t2 - t1)
            session.kinds[("new", "learning", "review")[card.queue]] += 1
    return session


class _Sink:
    """Where the CSV goes: counted, then dropped (as the streamed response is)."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> None:
        self.bytes += len(text)


def export_revlog(col: Collection, session: AnkiSession) -> None:
    """Anki's review history as CSV: the revlog joined to its card's question, formatted
    like our reviews CSV (ISO times, labels), through the anki package's db."""
    start = time.perf_counter()
    rows = col.db.all(
        "select r.id, r.cid, n.sfld, r.ease, r.time, r.type, r.ivl, r.factor"
        " from revlog r join cards c on c.id = r.cid join notes n on n.id = c.nid"
        " order by r.id"
    )
    writer = csv.writer(_Sink())
    writer.writerow(["reviewed_at", "card_id", "question", "ease", "time_ms", "type", "ivl"])
    kinds = {0: "learn", 1: "review", 2: "relearn", 3: "filtered", 4: "manual"}
    for rid, cid, question, ease, taken, kind, ivl, _factor in rows:
        writer.writerow(
            [
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rid / 1000)),
                cid,
                question,
                ease,
                taken,
                kinds.get(kind, kind),
                ivl,
            ]
        )
    session.export_seconds = time.perf_counter() - start
    session.export_rows = len(rows)


def ratings_for(steps: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return rng.choices((1, 2, 3, 4, 5), weights=(4, 6, 15, 55, 20), k=steps)


# --- the collection as a package, for timing our .apkg import (issue 10) ---------------------


def export_package(cached: Path, out: Path, notes: int | None = None) -> dict:
    """Export the cached collection (or only its first ``notes`` notes, in deck order, with
    their cards' history) as a current-format .apkg with scheduling, the file a student
    brings from Anki's desktop. Written atomically; returns what it holds."""
    work = out.with_name(f"{out.stem}-work.anki2")
    partial = out.with_name(f"{out.stem}-partial{out.suffix}")
    _remove(work)
    shutil.copyfile(cached, work)
    col = Collection(str(work))
    try:
        if notes is not None:
            # Notes are numbered in the order they were added, which is deck order.
            extra = col.db.list("select id from notes order by id limit -1 offset ?", notes)
            col.remove_notes(extra)
        held = {
            "notes": col.db.scalar("select count() from notes"),
            # Removing notes leaves their revlog rows behind; the export skips them.
            "revlog": col.db.scalar(
                "select count() from revlog where cid in (select id from cards)"
            ),
        }
        from anki.collection import ExportAnkiPackageOptions

        col.export_anki_package(
            out_path=str(partial),
            options=ExportAnkiPackageOptions(
                with_scheduling=True, with_deck_configs=True, with_media=False, legacy=False
            ),
            limit=None,
        )
    finally:
        col.close()
        _remove(work)
    os.replace(partial, out)
    return held
