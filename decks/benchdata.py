"""Benchmark data: one heavy student, a 100,000-card deck and 1,000,000 reviews.

Used by ``manage.py bench``. Everything is derived from ``SEED`` and the fixed clock
``NOW``, so two generations give the same rows, and the benchmark's study session
starts from the same queue every time.

The history is plausible, not simulated: running FSRS for a million ratings takes
longer than the rest of the generation put together, so only the few learning cards
go through the real scheduler. For the review cards:

* Cards are introduced in deck order over the last ``HISTORY_DAYS`` days; the last
  ``NEW_CARDS`` positions were never rated, the ``LEARNING_CARDS`` before them were
  first rated today.
* Each reviewed card gets at least one review; the other reviews are shared out at
  random, older cards getting more (weight ``log(1 + age in days)``). The total is
  exactly ``REVIEWS``.
* A card with ``k`` reviews, introduced at ``t0`` and due at ``due``, has scheduled
  points ``P_j = t0 + (due - t0) * (j / k) ** 2`` (j = 0..k): the gaps grow as with
  spaced repetition, and ``P_k`` is the current due date. Review j happens at ``P_j``
  plus up to 10 % of the gap (students are a bit late).
* ``stability_after`` (days) is the gap from the review to the next scheduled point,
  which is what FSRS's stability means at 90 % retention; ``scheduled_days`` equals it.
  ``retrievability`` is the FSRS-6 forgetting curve at the elapsed time.
* ``difficulty_after = clamp(0.9 * D + 0.55 + 0.8 * (2.5 - grade), 1, 10)`` where D is
  the previous difficulty (5.5 for a new card) and grade the FSRS grade (Again=1 …
  Easy=4). Ratings are drawn independently (4 % 1, 6 % 2, 15 % 3, 55 % 4, 20 % 5).
* States: the first review goes NEW → REVIEW, the others REVIEW → REVIEW (a failed
  recall stays REVIEW here instead of passing through RELEARNING, but still counts as
  a lapse in ``CardProgress.lapses``, as ``services._is_lapse`` would count it).
* ``DUE_NOW_CARDS`` review cards are overdue at ``NOW`` by up to three days; the other
  due dates lie after ``NOW``, soon for young cards and months away for old ones, so a
  few hundred more fall due during the benchmark's simulated session.

CardProgress rows agree with the reviews: reps, lapses, last rating and time, and the
due date, stability and difficulty of each card's last review.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate, islice
from operator import itemgetter

from django.contrib.auth import get_user_model
from django.db import connection, models, transaction
from tqdm import tqdm

from decks import scheduler
from decks.models import Card, CardProgress, Deck, Review, State, StudySettings

# Bump when the generated data changes: the SQLite file name and the deck title carry
# it, so a stale cache is never reused.
GENERATOR_VERSION = 1
SEED = 20250602
USERNAME = "bench-heavy"
DECK_TITLE = f"Bench: heavy student's deck (generator v{GENERATOR_VERSION})"
CARDS = 100_000
REVIEWS = 1_000_000
NEW_CARDS = 2_000
LEARNING_CARDS = 50
DUE_NOW_CARDS = 600
HISTORY_DAYS = 730
# The benchmark's clock. Fixed, so the cached data and the queue never depend on the
# day the benchmark runs.
NOW = datetime(2025, 6, 2, 14, 0, tzinfo=UTC)

DAY = 86400.0
# Plain ints: psycopg's COPY would write an Enum member by name.
NEW, REVIEW = int(State.NEW), int(State.REVIEW)
RATINGS = (1, 2, 3, 4, 5)
RATING_WEIGHTS = (4, 6, 15, 55, 20)
# FSRS-6 forgetting curve R(t, S) = (1 + FACTOR * t / S) ** -DECAY, with the default
# decay (parameter w20); FACTOR makes R(S, S) = 0.9.
DECAY = 0.1542
FACTOR = 0.9 ** (-1 / DECAY) - 1
# Rows per executemany call / progress-bar update: large enough that per-call overhead
# vanishes, small enough that the bar moves.
BATCH = 50_000

REVIEW_FIELDS = [
    "user",
    "card",
    "rating",
    "reviewed_at",
    "time_taken_ms",
    "retrievability",
    "state_before",
    "step_before",
    "due_before",
    "stability_before",
    "difficulty_before",
    "state_after",
    "step_after",
    "due_after",
    "stability_after",
    "difficulty_after",
    "scheduled_days",
]
PROGRESS_FIELDS = [
    "user",
    "card",
    "deck",
    "position",
    "state",
    "step",
    "due",
    "stability",
    "difficulty",
    "reps",
    "lapses",
    "last_rating",
    "last_reviewed_at",
]
CARD_FIELDS = ["deck", "front", "back", "position", "tags", "created_at", "updated_at"]


@dataclass(frozen=True)
class BenchData:
    user: models.Model
    deck: Deck
    study_settings: StudySettings


def bench_settings_values() -> dict[str, object]:
    """Limits high enough that the queue never stops at a daily limit."""
    return {
        "desired_retention": 0.9,
        "new_per_day": 9999,
        "max_reviews_per_day": 9999,
        "time_zone": "UTC",
        "day_start_hour": 4,
    }


def find_bench_data() -> BenchData | None:
    """The bench student and deck if the database holds the complete, untouched data."""
    user = get_user_model().objects.filter(username=USERNAME).first()
    if user is None:
        return None
    deck = Deck.objects.filter(owner=user, title=DECK_TITLE).first()
    if deck is None:
        return None
    # Counts catch a generation or a benchmark run that was killed half-way.
    if (
        Card.objects.filter(deck=deck).count() != CARDS
        or CardProgress.objects.filter(user=user).count() != CARDS
        or Review.objects.filter(user=user).count() != REVIEWS
    ):
        return None
    study_settings, _ = StudySettings.objects.update_or_create(
        user=user, defaults=bench_settings_values()
    )
    return BenchData(user=user, deck=deck, study_settings=study_settings)


def delete_bench_data() -> None:
    """Remove the bench student and everything they own (for a shared database)."""
    user = get_user_model().objects.filter(username=USERNAME).first()
    if user is None:
        return
    quote = connection.ops.quote_name
    deck_ids = list(Deck.objects.filter(owner=user).values_list("id", flat=True))
    # Raw deletes: the ORM's cascade would fetch a million review ids first.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {quote(Review._meta.db_table)} WHERE {quote('user_id')} = %s",
            [user.pk],
        )
        cursor.execute(
            f"DELETE FROM {quote(CardProgress._meta.db_table)} WHERE {quote('user_id')} = %s",
            [user.pk],
        )
        for deck_id in deck_ids:
            cursor.execute(
                f"DELETE FROM {quote(Card._meta.db_table)} WHERE {quote('deck_id')} = %s",
                [deck_id],
            )
        user.delete()


def generate_bench_data() -> BenchData:
    """Create the bench student, deck, cards, progress rows and review history."""
    rng = random.Random(SEED)
    now_ts = NOW.timestamp()
    to_db = _datetime_adapter()
    with transaction.atomic():
        user = get_user_model().objects.create_user(USERNAME)  # no password: cannot log in
        study_settings = StudySettings.objects.create(user=user, **bench_settings_values())
        deck = Deck.objects.create(owner=user, title=DECK_TITLE, description="manage.py bench")

        created = to_db(now_ts - (HISTORY_DAYS + 1) * DAY)
        _insert(
            Card,
            CARD_FIELDS,
            (
                (deck.pk, f"Bench question {p}", f"Bench answer {p}", p, "bench", created, created)
                for p in range(1, CARDS + 1)
            ),
            CARDS,
            "cards",
        )
        card_ids = list(
            Card.objects.filter(deck=deck).order_by("position").values_list("id", flat=True)
        )

        reviews, progress = _history(rng, card_ids, now_ts)
        # Chronological ids, as the app's own inserts would give.
        reviews.sort(key=itemgetter(0))
        _insert(
            Review,
            REVIEW_FIELDS,
            (
                (
                    user.pk,
                    card_id,
                    rating,
                    to_db(at),
                    taken,
                    retrievability,
                    s_before,
                    step_before,
                    to_db(due_before),
                    stab_before,
                    diff_before,
                    s_after,
                    step_after,
                    to_db(due_after),
                    stab_after,
                    diff_after,
                    days,
                )
                for (
                    at,
                    card_id,
                    rating,
                    taken,
                    retrievability,
                    s_before,
                    step_before,
                    due_before,
                    stab_before,
                    diff_before,
                    s_after,
                    step_after,
                    due_after,
                    stab_after,
                    diff_after,
                    days,
                ) in reviews
            ),
            len(reviews),
            "reviews",
        )
        del reviews
        _insert(
            CardProgress,
            PROGRESS_FIELDS,
            (
                (user.pk, card_id, deck.pk, position, state, step, to_db(due))
                + (stability, difficulty, reps, lapses, last_rating, to_db(last_at))
                for (
                    card_id,
                    position,
                    state,
                    step,
                    due,
                    stability,
                    difficulty,
                    reps,
                    lapses,
                    last_rating,
                    last_at,
                ) in progress
            ),
            len(progress),
            "progress",
        )
    return BenchData(user=user, deck=deck, study_settings=study_settings)


def finish_generation() -> None:
    """Leave the database as a long-running one would be (outside any transaction)."""
    tables = [m._meta.db_table for m in (Card, CardProgress, Review)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Autovacuum would have analysed tables this size and set the visibility map
            # (index-only scans) long before a real student got here.
            for table in tables:
                cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(table)}")
        elif connection.vendor == "sqlite":
            # No ANALYZE: Django never runs it, so a real SQLite database has no
            # statistics either. Fold the WAL back so the file is self-contained.
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def tune_for_bulk_load() -> None:
    """Per-connection settings for the load only; the caller reconnects afterwards."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            # A crash mid-load just means regenerating, so durability is not needed.
            cursor.execute("PRAGMA synchronous=OFF")
            # Keeps the random-order index inserts (review by card) in memory.
            cursor.execute("PRAGMA cache_size=-1000000")
            cursor.execute("PRAGMA temp_store=MEMORY")


# (reviewed_at, card_id, rating, time_taken_ms, retrievability, state_before,
#  step_before, due_before, stability_before, difficulty_before, state_after, step_after,
#  due_after, stability_after, difficulty_after, scheduled_days); times as Unix seconds.
ReviewRow = tuple
# (card_id, position, state, step, due, stability, difficulty, reps, lapses, last_rating,
#  last_reviewed_at)
ProgressRow = tuple


def _history(
    rng: random.Random, card_ids: list[int], now_ts: float
) -> tuple[list[ReviewRow], list[ProgressRow]]:
    reviewed = CARDS - NEW_CARDS - LEARNING_CARDS
    reviews: list[ReviewRow] = []
    progress: list[ProgressRow] = []

    # Learning cards: few enough to run the real scheduler, so they are exact.
    fsrs = scheduler.get_scheduler(0.9, fuzz=False)
    learning_reviews = 0
    for index in range(reviewed, reviewed + LEARNING_CARDS):
        card_id = card_ids[index]
        last_at = now_ts - rng.uniform(60, 25 * 60)
        # Half failed once first (Again, back in a minute), then all rated Good: step 1,
        # due ten minutes after the last rating, so some are due now and some soon.
        times = [last_at - rng.uniform(120, 4 * 3600), last_at] if index % 2 else [last_at]
        ratings = [1, 4] if index % 2 else [4]
        state = scheduler.CardState()
        for at, rating in zip(times, ratings, strict=True):
            when = datetime.fromtimestamp(at, UTC)
            outcome = scheduler.review(state, rating, when, fsrs)
            after = outcome.after
            reviews.append(
                (
                    at,
                    card_id,
                    rating,
                    rng.randint(1500, 20000),
                    outcome.retrievability,
                    int(state.state),
                    state.step,
                    _ts(state.due),
                    state.stability,
                    state.difficulty,
                    after.state,
                    after.step,
                    after.due.timestamp(),
                    after.stability,
                    after.difficulty,
                    outcome.scheduled_days,
                )
            )
            state = after
        learning_reviews += len(times)
        progress.append(
            (card_id, index + 1, state.state, state.step, state.due.timestamp())
            + (state.stability, state.difficulty, len(times), 0, ratings[-1], times[-1])
        )

    # Review cards, introduced in deck order over the history window.
    span = HISTORY_DAYS * DAY - 2 * DAY
    intro = [
        now_ts - HISTORY_DAYS * DAY + span * index / reviewed + rng.uniform(0, 6 * 3600)
        for index in range(reviewed)
    ]
    weights = [math.log1p((now_ts - t0) / DAY) for t0 in intro]
    counts = [1] * reviewed
    extra = REVIEWS - learning_reviews - reviewed
    for index in rng.choices(range(reviewed), cum_weights=list(accumulate(weights)), k=extra):
        counts[index] += 1
    due_now = set(rng.sample(range(reviewed), DUE_NOW_CARDS))
    all_ratings = rng.choices(RATINGS, weights=RATING_WEIGHTS, k=REVIEWS)
    grades = {rating: int(scheduler.RATING_TO_FSRS[rating]) for rating in RATINGS}
    cursor = 0
    for index in tqdm(range(reviewed), desc="history", unit=" cards", disable=None, leave=False):
        card_id = card_ids[index]
        t0 = intro[index]
        age = now_ts - t0
        k = counts[index]
        if index in due_now:
            delta = -rng.uniform(60, min(3 * DAY, age / 2))
        else:
            # P_(k-1) must stay before NOW: due - t0 < age * (k / (k - 1)) ** 2.
            limit = age if k == 1 else age * ((k / (k - 1)) ** 2 - 1) * 0.95
            delta = rng.uniform(300, max(min(limit, 400 * DAY), 600))
        total = age + delta
        points = [t0 + total * (j / k) ** 2 for j in range(k + 1)]

        previous_at = None
        stability = difficulty = None
        lapses = 0
        for j in range(k):
            gap = points[j + 1] - points[j]
            late = 0.0 if j == 0 else rng.uniform(0, 0.1) * gap
            if j == k - 1:
                late = min(late, 0.5 * (now_ts - points[j]))
            at = points[j] + late
            rating = all_ratings[cursor]
            cursor += 1
            new_stability = (points[j + 1] - at) / DAY
            base = 5.5 if difficulty is None else 0.9 * difficulty + 0.55
            new_difficulty = min(max(base + 0.8 * (2.5 - grades[rating]), 1.0), 10.0)
            if j == 0:
                reviews.append(
                    (at, card_id, rating, rng.randint(1500, 20000), None, NEW, None)
                    + (None, None, None, REVIEW, None, points[1])
                    + (new_stability, new_difficulty, new_stability)
                )
            else:
                elapsed = (at - previous_at) / DAY
                retrievability = (1 + FACTOR * elapsed / stability) ** -DECAY
                lapses += rating <= 2
                reviews.append(
                    (at, card_id, rating, rng.randint(1500, 20000), retrievability)
                    + (REVIEW, None, points[j], stability, difficulty, REVIEW)
                    + (None, points[j + 1], new_stability, new_difficulty, new_stability)
                )
            previous_at, stability, difficulty = at, new_stability, new_difficulty
        progress.append(
            (card_id, index + 1, REVIEW, None, points[k], stability, difficulty)
            + (k, lapses, all_ratings[cursor - 1], previous_at)
        )

    for index in range(reviewed + LEARNING_CARDS, CARDS):
        progress.append((card_ids[index], index + 1, NEW) + (None,) * 4 + (0, 0, None, None))
    assert len(reviews) == REVIEWS and len(progress) == CARDS
    return reviews, progress


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _datetime_adapter() -> Callable[[float | None], object]:
    """Unix seconds to what the backend stores, without the ORM's per-value cost."""
    if connection.vendor == "sqlite":
        # What Django's SQLite backend writes for an aware datetime when USE_TZ is on:
        # naive UTC as text, "YYYY-MM-DD HH:MM:SS[.ffffff]".
        epoch = datetime(1970, 1, 1)

        def to_text(value: float | None) -> str | None:
            return None if value is None else str(epoch + timedelta(seconds=value))

        return to_text
    epoch_utc = datetime(1970, 1, 1, tzinfo=UTC)

    def to_datetime(value: float | None) -> datetime | None:
        return None if value is None else epoch_utc + timedelta(seconds=value)

    return to_datetime


def _insert(
    model: type[models.Model],
    fields: list[str],
    rows: Iterable[tuple],
    total: int,
    description: str,
) -> None:
    """Insert rows into the model's real table: COPY on PostgreSQL, else executemany."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(model._meta.get_field(name).column) for name in fields)
    with (
        tqdm(total=total, desc=description, unit=" rows", unit_scale=True, disable=None) as bar,
        connection.cursor() as cursor,
    ):
        if connection.vendor == "postgresql":
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for batch in _batches(rows, BATCH):
                    for row in batch:
                        copy.write_row(row)
                    bar.update(len(batch))
        else:
            placeholders = ", ".join(["%s"] * len(fields))
            sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"
            for batch in _batches(rows, BATCH):
                cursor.executemany(sql, batch)
                bar.update(len(batch))


def _batches(rows: Iterable[tuple], size: int) -> Iterator[list[tuple]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch
