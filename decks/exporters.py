"""Progress CSVs: database rows in, CSV text out, as generators so a million rows stream
through in flat memory. No ORM here; views and the export command feed the rows in."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from decks import scheduler
from decks.models import Rating, State

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

RATING_LABELS = dict(Rating.choices)
STATE_NAMES = {value: label.lower() for value, label in State.choices}

# Self-rated mastery: the latest rating as a share of "Perfectly"; never rated is 0 %.
MASTERY_BY_RATING = {None: 0, 1: 20, 2: 40, 3: 60, 4: 80, 5: 100}


def neutralise(text: str) -> str:
    """Prefix a formula-looking cell with a quote so spreadsheets show it as text."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def iso_utc(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


class _Echo:
    """csv.writer wants a file; this one hands each written line straight back."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: list[str], rows: Iterable[list[str]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow(row)


def review_rows(rows: Iterable[tuple]) -> Iterator[list[str]]:
    """Rows from ``Review.objects.for_export()``, in REVIEW_COLUMNS order."""
    for (
        username, deck, card_id, question, rating, reviewed_at, taken, state_before,
        state_after, scheduled_days, due_after, stability, difficulty, recall,
    ) in rows:  # fmt: skip
        yield [
            neutralise(username),
            neutralise(deck),
            card_id,
            neutralise(question),
            rating,
            RATING_LABELS[rating],
            iso_utc(reviewed_at),
            "" if taken is None else taken,
            STATE_NAMES[state_before],
            STATE_NAMES[state_after],
            _number(scheduled_days),
            iso_utc(due_after),
            _number(stability),
            _number(difficulty),
            _number(recall),
        ]


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
            last_review=last_reviewed,
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


def progress_csv(kind: str, rows: Iterable[tuple], now: datetime) -> Iterator[str]:
    """CSV lines for the ``reviews`` or ``cards`` progress export."""
    if kind == "reviews":
        return csv_lines(REVIEW_COLUMNS, review_rows(rows))
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
