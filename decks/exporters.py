"""Progress CSVs: database rows in, CSV text out, as generators so a million rows stream
through in flat memory. No ORM here; views and the export command feed the rows in."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from functools import lru_cache

from decks import scheduler
from decks.models import STATE_NAMES, State
from decks.rawsql import py_datetime

REVIEW_COLUMNS = [
    "user", "deck", "card_id", "question", "rating", "rating_label", "reviewed_at",
    "time_taken_ms", "state_before", "state_after", "scheduled_days", "due_after",
    "stability", "difficulty", "retrievability",
]  # fmt: skip

CARD_COLUMNS = [
    "user", "deck", "card_id", "question", "reviews", "lapses", "last_rating",
    "last_reviewed_at", "due", "state", "retrievability_now", "mastery",
]  # fmt: skip

# A spreadsheet runs a cell starting with one of these as a formula (OWASP CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# Self-rated mastery: the latest rating as a share of "Perfectly"; never rated is 0 %.
MASTERY_BY_RATING = {None: 0, 1: 20, 2: 40, 3: 60, 4: 80, 5: 100}


@lru_cache(maxsize=8192)
def neutralise(text: str) -> str:
    """Prefix a formula-looking cell with a quote so spreadsheets show it as text.
    (Cached: the same names and questions repeat on many rows.)"""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def iso_utc(value: datetime | str | None) -> str:
    """ISO 8601 in UTC, to the second. Takes aware datetimes; naive ones, which are the
    database's UTC (SQLite's columns come back so); and SQLite's stored text
    ('YYYY-MM-DD HH:MM:SS[.ffffff]', UTC too), which raw exports read without converting
    each row to a datetime."""
    if value is None:
        return ""
    if isinstance(value, str):
        return f"{value[:10]}T{value[11:19]}Z"
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    # isoformat, not strftime: strftime was a fifth of the cards CSV's time.
    return value.isoformat(timespec="seconds")[:19] + "Z"


def _number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


class _Echo:
    """csv.writer wants a file; this one hands each written line straight back."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: list[str], rows: Iterable[list], batch: int = 2000) -> Iterator[str]:
    """CSV text in pieces of ``batch`` rows: few enough pieces that streaming costs
    little, small enough that memory stays flat."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
        if count == batch:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            count = 0
    yield buffer.getvalue()


def review_csv(
    rows: Iterable[tuple], usernames: Mapping[int, str], cards: Iterable[tuple[int, str, str]],
    batch: int = 5000,
) -> Iterator[str]:  # fmt: skip
    """The reviews CSV (REVIEW_COLUMNS) in pieces of ``batch`` rows.

    ``rows`` come from ``Review.objects.for_export()``: (user id, card id, the line's
    cells from the rating on, written by the database); ``usernames`` maps the users'
    ids to names and ``cards`` gives (card id, deck title, question) for the cards of the
    decks exported: rows of other cards are left out, so the rows need not be filtered by
    deck. The first four cells are written (quoted and neutralised, by csv.writer) once:
    the user's when the user changes, the card's three the first time the card comes up.
    Written for speed: a million rows go through this loop.
    """
    decks_and_questions = {card_id: (deck, question) for card_id, deck, question in cards}
    cells = _CardCells(decks_and_questions)
    user_cells = {user_id: _csv_cells([neutralise(name)]) for user_id, name in usernames.items()}
    current_user = user_cell = None
    slots, offset, low, high = cells.slots, cells.offset, cells.low, cells.high
    lines = [",".join(REVIEW_COLUMNS) + "\r\n"]
    for user_id, card_id, review_cells in rows:
        card_cells = slots[card_id - offset] if low <= card_id <= high else None
        if card_cells is None:
            card_cells = cells.add(card_id)
            if card_cells is None:  # not a card of the decks exported
                continue
        if user_id != current_user:
            current_user, user_cell = user_id, user_cells[user_id]
        lines.append(f"{user_cell}{card_cells}{review_cells}\r\n")
        if len(lines) == batch:
            yield "".join(lines)
            lines.clear()
    yield "".join(lines)


def _csv_cells(values: list) -> str:
    """One CSV line's cells as csv.writer quotes them, each followed by its comma."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([*values, ""])
    return buffer.getvalue()[:-2]  # less the line end


class _Missing(dict):
    """A dict that answers None for a key it lacks."""

    def __missing__(self, key: int) -> None:
        return None


class _CardCells:
    """The deck, id and question cells of the cards in review_csv's scope, each written
    when first asked for.

    For a card id from ``low`` to ``high``, ``slots[card_id - offset]`` is the text, or
    None until ``add(card_id)``. Where the ids are dense enough (a deck's cards are
    mostly made together), ``slots`` is a list: in a million-row loop, indexing it costs
    far less than a dict lookup (0.3 s less of 2.7 s). Sparse ids get a dict, so memory
    stays within a few words per card."""

    def __init__(self, decks_and_questions: Mapping[int, tuple[str, str]]) -> None:
        self.decks_and_questions = decks_and_questions
        self.low = min(decks_and_questions, default=0)
        self.high = max(decks_and_questions, default=-1)
        span = self.high - self.low + 1
        if span <= 4 * len(decks_and_questions) + 1024:
            self.slots, self.offset = [None] * span, self.low
        else:
            self.slots, self.offset = _Missing(), 0

    def add(self, card_id: int) -> str | None:
        """The card's cells, now written; None for a card outside the scope."""
        if card_id not in self.decks_and_questions:
            return None
        deck, question = self.decks_and_questions[card_id]
        text = self.slots[card_id - self.offset] = _csv_cells(
            [neutralise(deck), card_id, neutralise(question)]
        )
        return text


def card_rows(rows: Iterable[tuple], now: datetime, fsrs_scheduler) -> Iterator[list[str]]:
    """Rows from ``CardProgress.objects.for_export()`` or ``Deck.objects.cards_for_export()``,
    in CARD_COLUMNS order, with each card's predicted recall at ``now``."""
    for row in rows:
        (
            username, deck, card_id, question, reps, lapses, last_rating, last_reviewed, due,
            state, stability,
        ) = row  # fmt: skip
        memory = scheduler.CardState(
            state=state if state is not None else State.NEW,
            stability=stability,
            last_review=py_datetime(last_reviewed),
        )
        yield [
            neutralise(username),
            neutralise(deck),
            card_id,
            neutralise(question),
            reps or 0,
            lapses or 0,
            last_rating or "",
            iso_utc(last_reviewed),
            iso_utc(due),
            STATE_NAMES[state if state is not None else State.NEW],
            _number(scheduler.retrievability(memory, now, fsrs_scheduler)),
            f"{MASTERY_BY_RATING[last_rating]}%",
        ]


def cards_csv(rows: Iterable[tuple], now: datetime) -> Iterator[str]:
    """The cards CSV (CARD_COLUMNS) from ``CardProgress.objects.for_export()`` or
    ``Deck.objects.cards_for_export()``."""
    return csv_lines(CARD_COLUMNS, card_rows(rows, now, scheduler.get_scheduler()))


CLASS_STUDENT_COLUMNS = [
    "student", "cards_studied", "mastery_percent", "predicted_recall_percent", "overdue",
    "reviews_last_7_days", "last_active",
]  # fmt: skip

HARD_CARD_COLUMNS = [
    "card_id", "question", "reviews", "failed_percent", "lapses_per_student",
    "mean_stability_days",
]  # fmt: skip


def class_student_rows(students: Iterable) -> Iterator[list]:
    """Rows of the class dashboard's student table (decks.stats.StudentRow)."""
    for s in students:
        yield [
            neutralise(s.username),
            s.studied,
            f"{s.mastery:.1f}",
            "" if s.recall is None else f"{s.recall:.1f}",
            s.overdue,
            s.reviews_7d,
            iso_utc(s.last_active),
        ]


def hard_card_rows(cards: Iterable) -> Iterator[list]:
    """Rows of the class dashboard's hardest-cards table (decks.stats.HardCard)."""
    for c in cards:
        yield [
            c.card_id,
            neutralise(c.front),
            c.reviews,
            f"{c.failed_share:.1f}",
            f"{c.lapse_rate:.2f}",
            _number(c.stability, 2),
        ]
