"""Which card a student sees next, and how many are left: the study queue.

Order (SPEC, Scheduler): learning/relearning cards that are due; review cards that are
due, most overdue first, while today's review count is under the limit; new cards in
deck order while today's new count is under the limit; then, if nothing else is left,
a learning card due within the learn-ahead window.

Each function runs a fixed number of index range scans, whatever the deck or history
size: the study step's query budget depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache, lru_cache

from django.db.models import Min

from decks import rawsql
from decks.models import Card, CardProgress, Deck, Review, State, StudySettings
from decks.rawsql import db_datetime
from decks.scheduler import LEARN_AHEAD

LEARNING_STATES = (State.LEARNING, State.RELEARNING)


@dataclass(frozen=True)
class DoneToday:
    new: int  # new cards introduced today (all decks)
    reviews: int  # review-state cards rated today (all decks)


@dataclass(frozen=True)
class QueueCounts:
    new: int  # new cards still available today
    learning: int  # learning/relearning cards due now
    due: int  # review cards due now, within today's review limit
    new_limited: bool  # new cards are waiting but today's new-card limit is reached
    reviews_limited: bool  # review cards are due but today's review limit is reached

    @property
    def total(self) -> int:
        return self.new + self.learning + self.due


def _done_today_sql() -> str:
    """New cards introduced and review cards rated since the study day began (all
    decks), read from the (user, reviewed_at, state_before) index alone. Parameters:
    user id, the day's start."""
    return (
        f"SELECT COUNT(CASE WHEN state_before = {State.NEW} THEN 1 END) AS new,"
        f" COUNT(CASE WHEN state_before = {State.REVIEW} THEN 1 END) AS reviews"
        f" FROM {Review._meta.db_table} WHERE user_id = %s AND reviewed_at >= %s"
        f" AND state_before IN ({State.NEW}, {State.REVIEW})"
    )


def done_today(user, study_settings: StudySettings, now: datetime) -> DoneToday:
    """New cards introduced and review cards rated since the study day began (all decks)."""
    with rawsql.prepared_cursor() as cursor:
        cursor.execute(_done_today_sql(), [user.pk, db_datetime(study_settings.day_start(now))])
        new, reviews = cursor.fetchone()
    return DoneToday(new=new, reviews=reviews)


def study_deck(
    user, deck_id: int, card_id: int | None = None
) -> tuple[Deck, StudySettings, CardProgress | None] | None:
    """The deck, if the user may study it, with the user's settings (defaults, unsaved,
    if they never changed them) and, given a card, the user's progress row for it (with
    the card) if the card is in the deck: what every study request starts with, in one
    statement instead of the ORM's three (see rawsql)."""
    deck, study_settings = Deck._meta.db_table, StudySettings._meta.db_table
    select = f"SELECT {rawsql.columns(Deck, 'd')}, {rawsql.columns(StudySettings, 's')}"
    joins = f" FROM {deck} d LEFT JOIN {study_settings} s ON s.user_id = %s"
    params = [user.pk]
    if card_id is not None:
        select += f", {rawsql.columns(CardProgress, 'p')}, {rawsql.columns(Card, 'c')}"
        joins += (
            f" LEFT JOIN {CardProgress._meta.db_table} p"
            " ON p.user_id = %s AND p.deck_id = d.id AND p.card_id = %s"
            f" LEFT JOIN {Card._meta.db_table} c ON c.id = p.card_id"
        )
        params += [user.pk, card_id]
    sql = f"{select}{joins} WHERE d.id = %s"
    params.append(deck_id)
    if not user.is_staff:  # the rule of Deck.objects.visible_to
        sql += " AND (d.is_public OR d.owner_id = %s)"
        params.append(user.pk)
    with rawsql.prepared_cursor(binary=False) as cursor:  # the settings' JSON column
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(Deck._meta.concrete_fields)
    end = split + len(StudySettings._meta.concrete_fields)
    found = rawsql.instance(Deck, row[:split])
    if row[split] is None:
        settings_found = StudySettings(user=user)
    else:
        settings_found = rawsql.instance(StudySettings, row[split:end])
    progress = None
    if card_id is not None and row[end] is not None:
        progress = _progress_with_card(row[end:])
    return found, settings_found, progress


def _mine(user, deck: Deck):
    return CardProgress.objects.filter(user=user, deck=deck)


@lru_cache(maxsize=5)
def _next_card_sql(reviews_allowed: bool | None, new_allowed: bool | None) -> str:
    """One statement for the whole queue: each branch is an index range scan that stops at
    its first row, and COALESCE stops at the first branch that found a card (so, unlike a
    UNION ALL sorted by branch, the later branches never run).

    With both limits None, the statement itself checks today's counts against the limits,
    and only when it gets to the review or the new branch (a student with learning cards
    due never has them counted)."""
    progress, card = CardProgress._meta.db_table, Card._meta.db_table
    mine = f"SELECT id FROM {progress} WHERE user_id = %s AND deck_id = %s"
    learning = f"state IN ({State.LEARNING}, {State.RELEARNING})"
    within = {True: "", None: " AND (SELECT {} FROM d) < %s"}
    branches = [f"{mine} AND {learning} AND due <= %s ORDER BY due, id LIMIT 1"]
    if reviews_allowed is not False:
        branches.append(
            f"{mine} AND state = {State.REVIEW} AND due <= %s"
            f"{within[reviews_allowed].format('reviews')} ORDER BY due, id LIMIT 1"
        )
    if new_allowed is not False:
        branches.append(
            f"{mine} AND state = {State.NEW}{within[new_allowed].format('new')}"
            " ORDER BY position, id LIMIT 1"
        )
    branches.append(f"{mine} AND {learning} AND due <= %s ORDER BY due, id LIMIT 1")  # ahead
    columns = f"{rawsql.columns(CardProgress, 'p')}, {rawsql.columns(Card, 'c')}"
    today = f"WITH d AS ({_done_today_sql()}) " if None in (reviews_allowed, new_allowed) else ""
    return (
        f"{today}SELECT {columns} FROM {progress} p JOIN {card} c ON c.id = p.card_id"
        f" WHERE p.id = COALESCE({', '.join(f'({branch})' for branch in branches)})"
    )


def next_card_read(
    user, deck: Deck, study_settings: StudySettings, now: datetime, done: DoneToday | None = None
) -> rawsql.Read:
    """next_card's statement, to run later or alongside a rating's write (one round trip
    on PostgreSQL). Without ``done``, the statement counts today's reviews itself."""
    mine = [user.pk, deck.pk]
    at = db_datetime(now)
    if done is None:
        reviews_allowed = new_allowed = None
        params = [user.pk, db_datetime(study_settings.day_start(now)), *mine, at]
        params += [*mine, at, study_settings.max_reviews_per_day]
        params += [*mine, study_settings.new_per_day]
    else:
        reviews_allowed = done.reviews < study_settings.max_reviews_per_day
        new_allowed = done.new < study_settings.new_per_day
        params = [*mine, at]
        if reviews_allowed:
            params += [*mine, at]
        if new_allowed:
            params += mine
    params += [*mine, db_datetime(now + LEARN_AHEAD)]
    return rawsql.Read(_next_card_sql(reviews_allowed, new_allowed), params, _progress_or_none)


def next_card(
    user, deck: Deck, study_settings: StudySettings, now: datetime, done: DoneToday | None = None
) -> CardProgress | None:
    """The progress row (with its card) to show next, or None when nothing is left. Give
    ``done`` if today's counts are already known; otherwise the statement reads them."""
    return next_card_read(user, deck, study_settings, now, done).run()


def shown_card(user, deck: Deck, card_id: int) -> CardProgress | None:
    """The user's progress row (with its card) for a card of the deck, as next_card
    gives it: the card a flip or an undo shows again."""
    progress, card = CardProgress._meta.db_table, Card._meta.db_table
    with rawsql.prepared_cursor() as cursor:
        cursor.execute(
            f"SELECT {rawsql.columns(CardProgress, 'p')}, {rawsql.columns(Card, 'c')}"
            f" FROM {progress} p JOIN {card} c ON c.id = p.card_id"
            " WHERE p.user_id = %s AND p.deck_id = %s AND p.card_id = %s",
            [user.pk, deck.pk, card_id],
        )
        row = cursor.fetchone()
    return _progress_or_none(row)


def _progress_or_none(row: tuple | None) -> CardProgress | None:
    return None if row is None else _progress_with_card(row)


def _progress_with_card(row: tuple) -> CardProgress:
    split = len(CardProgress._meta.concrete_fields)
    progress = rawsql.instance(CardProgress, row[:split])
    progress.card = rawsql.instance(Card, row[split:])
    return progress


def counts(
    user, deck: Deck, study_settings: StudySettings, now: datetime
) -> tuple[DoneToday, QueueCounts]:
    """What the student has done today (done_today) and what is left to study in the
    deck now, in one statement: every study render needs both. The new and review counts
    stop one past what is left of the daily limits, so the cost is bounded by the
    limits, not by the deck size."""
    return counts_read(user, deck, study_settings, now).run()


def counts_read(user, deck: Deck, study_settings: StudySettings, now: datetime) -> rawsql.Read:
    """counts' statement, to run later or alongside a rating's write."""
    at = db_datetime(now)
    params = [
        user.pk, db_datetime(study_settings.day_start(now)),
        user.pk, deck.pk, *[study_settings.new_per_day] * 2,
        user.pk, deck.pk, at, *[study_settings.max_reviews_per_day] * 2,
        user.pk, deck.pk, at,
        user.pk, deck.pk, at,
    ]  # fmt: skip

    def parse(row: tuple) -> tuple[DoneToday, QueueCounts]:
        done_new, done_reviews, new, due, learning = row
        new_left = max(study_settings.new_per_day - done_new, 0)
        reviews_left = max(study_settings.max_reviews_per_day - done_reviews, 0)
        return DoneToday(new=done_new, reviews=done_reviews), QueueCounts(
            new=min(new, new_left),
            learning=learning,
            due=min(due, reviews_left),
            new_limited=new > new_left,
            reviews_limited=due > reviews_left,
        )

    return rawsql.Read(_counts_sql(), params, parse)


@cache
def _counts_sql() -> str:
    progress = CardProgress._meta.db_table
    mine = f"FROM {progress} WHERE user_id = %s AND deck_id = %s"

    def left(limit: str, done: str) -> str:  # what is left of a limit, plus one
        return f"(SELECT CASE WHEN {limit} > {done} THEN {limit} - {done} ELSE 0 END + 1 FROM d)"

    return (
        f"WITH d AS ({_done_today_sql()}) SELECT d.new, d.reviews,"
        f" (SELECT COUNT(*) FROM (SELECT 1 {mine} AND state = {State.NEW}"
        f"  LIMIT {left('%s', 'new')}) AS n),"
        f" (SELECT COUNT(*) FROM (SELECT 1 {mine} AND state = {State.REVIEW}"
        f"  AND due <= %s LIMIT {left('%s', 'reviews')}) AS r),"
        # One count per learning state: a prepared (generic) plan only uses the
        # state in its index range when it is a single value.
        f" (SELECT COUNT(*) {mine} AND state = {State.LEARNING} AND due <= %s)"
        f" + (SELECT COUNT(*) {mine} AND state = {State.RELEARNING} AND due <= %s)"
        " FROM d"
    )


def next_due(user, deck: Deck) -> datetime | None:
    """When the next learning or review card in the deck falls due."""
    return (
        _mine(user, deck)
        .filter(state__in=(State.LEARNING, State.REVIEW, State.RELEARNING))
        .aggregate(next=Min("due"))["next"]
    )
