"""Benchmark data for ``manage.py bench`` and ``manage.py loadtest``.

Everything is derived from ``SEED`` and the fixed clock ``NOW``, so two generations give
the same rows and every benchmark session starts from the same queue. The students:

* ``bench-heavy``: one deck of 100,000 cards and 1,000,000 reviews over two years (the
  scheduler-core, study-step, deck-page, stats-page and export figures).
* ``bench-small``: one deck of 100 cards and 100 reviews, with the heavy student's
  settings (the study step must cost the same for both).
* ``bench-home``: 50 decks of 200 cards with 400 reviews each (the home-page figure).
* ``bench-class-000`` … ``-099``: one class deck of 1,000 cards, owned by the staff user
  ``bench-teacher``, with 1,000 reviews per student (the class dashboard: 100 students,
  100,000 reviews).
* ``bench-load-00`` … ``-31``: one private 1,000-card deck each, 1,000 reviews each (the
  HTTP load: each simulated student studies its own deck, so their ratings never
  contend for one progress row).

The history is plausible, not simulated: running FSRS for a million ratings takes
longer than the rest of the generation put together, so only the few learning cards
go through the real scheduler. For the review cards of one student's deck:

* Cards are introduced in deck order over the last ``history_days`` days; the last
  ``new_cards`` positions were never rated, the ``learning_cards`` before them were
  first rated today.
* Each reviewed card gets at least one review; the other reviews are shared out at
  random, older cards getting more (weight ``log(1 + age in days)``). The total is
  exactly ``reviews``.
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
* ``due_now_cards`` review cards are overdue at ``NOW`` by up to three days; the other
  due dates lie after ``NOW``, soon for young cards and months away for old ones, so a
  few hundred more fall due during the benchmark's simulated session.

CardProgress rows agree with the reviews: reps, lapses, last rating and time, and the
due date, stability and difficulty of each card's last review.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate, islice
from operator import itemgetter

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, models, transaction
from tqdm import tqdm

from decks import scheduler
from decks.models import Card, CardProgress, Deck, Review, State, StudySettings

# Bump when the generated data changes: the SQLite file name and the deck titles carry
# it, so a stale cache is never reused.
# v2: the small, home, class and load students.
GENERATOR_VERSION = 2
SEED = 20250602
PREFIX = "bench-"
USERNAME = "bench-heavy"
SMALL_USERNAME = "bench-small"
HOME_USERNAME = "bench-home"
TEACHER_USERNAME = "bench-teacher"
CLASS_USERNAME = "bench-class-{:03d}"
LOAD_USERNAME = "bench-load-{:02d}"
DECK_TITLE = f"Bench: heavy student's deck (generator v{GENERATOR_VERSION})"
SMALL_DECK_TITLE = f"Bench: small deck (generator v{GENERATOR_VERSION})"
HOME_DECK_TITLE = "Bench: home deck {:02d} (generator v" + str(GENERATOR_VERSION) + ")"
CLASS_DECK_TITLE = f"Bench: class deck (generator v{GENERATOR_VERSION})"
LOAD_DECK_TITLE = "Bench: load deck {:02d} (generator v" + str(GENERATOR_VERSION) + ")"
CLASS_STUDENTS = 100
HOME_DECKS = 50
# Enough for the bench's 32 concurrent students (the load test uses 20 of them).
LOAD_STUDENTS = 32
# The benchmark's clock. Fixed, so the cached data and the queue never depend on the
# day the benchmark runs.
NOW = datetime(2025, 6, 2, 14, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Shape:
    """One student's deck and history (see the module docstring)."""

    cards: int
    reviews: int
    new_cards: int
    learning_cards: int
    due_now_cards: int
    history_days: int


HEAVY = Shape(100_000, 1_000_000, 2_000, 50, 600, 730)
SMALL = Shape(100, 100, 20, 4, 10, 60)
HOME = Shape(200, 400, 60, 4, 10, 365)  # per deck
CLASS = Shape(1_000, 1_000, 300, 10, 30, 180)  # per student
LOAD = Shape(1_000, 1_000, 300, 10, 30, 180)  # per student

# Kept for the heavy student's figures in the report.
CARDS = HEAVY.cards
REVIEWS = HEAVY.reviews
NEW_CARDS = HEAVY.new_cards
LEARNING_CARDS = HEAVY.learning_cards
DUE_NOW_CARDS = HEAVY.due_now_cards
HISTORY_DAYS = HEAVY.history_days

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
class Student:
    user: models.Model
    deck: Deck
    study_settings: StudySettings | None


@dataclass(frozen=True)
class BenchData:
    user: models.Model  # the heavy student
    deck: Deck
    study_settings: StudySettings
    small: Student
    home: models.Model
    teacher: models.Model
    class_deck: Deck
    load: list[Student]

    @property
    def heavy_student(self) -> Student:
        return Student(self.user, self.deck, self.study_settings)


def bench_settings_values() -> dict[str, object]:
    """Limits high enough that the queue never stops at a daily limit."""
    return {
        "desired_retention": 0.9,
        "new_per_day": 9999,
        "max_reviews_per_day": 9999,
        "time_zone": "UTC",
        "day_start_hour": 4,
    }


# --- finding the cached data ------------------------------------------------------------


def _count(model: type[models.Model], **filters) -> int:
    return model.objects.filter(**filters).count()


def _student(username: str, title: str, shape: Shape, *, settings: bool) -> Student | None:
    """The student and their deck if both exist with every row (None after a killed run)."""
    user = get_user_model().objects.filter(username=username).first()
    deck = user and Deck.objects.filter(owner=user, title=title).first()
    if deck is None:
        return None
    if (
        _count(Card, deck=deck) != shape.cards
        or _count(CardProgress, user=user, deck=deck) != shape.cards
        or _count(Review, user=user, card__deck=deck) != shape.reviews
    ):
        return None
    study_settings = None
    if settings:
        study_settings, _ = StudySettings.objects.update_or_create(
            user=user, defaults=bench_settings_values()
        )
    return Student(user, deck, study_settings)


def find_bench_data() -> BenchData | None:
    """Every bench student with complete, untouched data, or None."""
    heavy = _student(USERNAME, DECK_TITLE, HEAVY, settings=True)
    small = heavy and _student(SMALL_USERNAME, SMALL_DECK_TITLE, SMALL, settings=True)
    if small is None:
        return None
    users = get_user_model().objects
    home = users.filter(username=HOME_USERNAME).first()
    if home is None or (
        _count(Deck, owner=home) != HOME_DECKS
        or _count(Review, user=home) != HOME_DECKS * HOME.reviews
    ):
        return None
    teacher = users.filter(username=TEACHER_USERNAME).first()
    class_deck = teacher and Deck.objects.filter(owner=teacher, title=CLASS_DECK_TITLE).first()
    if class_deck is None or (
        _count(Card, deck=class_deck) != CLASS.cards
        or _count(CardProgress, deck=class_deck) != CLASS_STUDENTS * CLASS.cards
        or _count(Review, card__deck=class_deck) != CLASS_STUDENTS * CLASS.reviews
    ):
        return None
    load = find_load_students()
    if load is None:
        return None
    return BenchData(
        user=heavy.user,
        deck=heavy.deck,
        study_settings=heavy.study_settings,
        small=small,
        home=home,
        teacher=teacher,
        class_deck=class_deck,
        load=load,
    )


def find_load_students(count: int = LOAD_STUDENTS) -> list[Student] | None:
    """The first ``count`` load students, or None if any is missing or incomplete."""
    students = []
    for index in range(count):
        student = _student(
            LOAD_USERNAME.format(index), LOAD_DECK_TITLE.format(index), LOAD, settings=True
        )
        if student is None:
            return None
        students.append(student)
    return students


# --- removing it ------------------------------------------------------------------------


def delete_bench_data(usernames: Iterable[str] | None = None) -> None:
    """Remove bench users (all of them by default) and everything they own, for a shared
    database. Raw deletes: the ORM's cascade would fetch a million review ids first."""
    users = get_user_model().objects.filter(username__startswith=PREFIX)
    if usernames is not None:
        users = users.filter(username__in=list(usernames))
    user_ids = list(users.values_list("id", flat=True))
    if not user_ids:
        return
    deck_ids = list(Deck.objects.filter(owner__in=user_ids).values_list("id", flat=True))
    quote = connection.ops.quote_name
    review = quote(Review._meta.db_table)
    progress = quote(CardProgress._meta.db_table)
    card = quote(Card._meta.db_table)
    with transaction.atomic(), connection.cursor() as cursor:
        for ids, sql in (
            (user_ids, f"DELETE FROM {review} WHERE user_id IN ({{}})"),
            (deck_ids, f"DELETE FROM {review} WHERE card_id IN"
             f" (SELECT id FROM {card} WHERE deck_id IN ({{}}))"),
            (user_ids, f"DELETE FROM {progress} WHERE user_id IN ({{}})"),
            (deck_ids, f"DELETE FROM {progress} WHERE deck_id IN ({{}})"),
            (deck_ids, f"DELETE FROM {card} WHERE deck_id IN ({{}})"),
        ):  # fmt: skip
            for chunk in _chunks(ids, 500):
                cursor.execute(sql.format(", ".join(["%s"] * len(chunk))), chunk)
        Deck.objects.filter(pk__in=deck_ids).delete()
        for chunk in _chunks(user_ids, 500):
            get_user_model().objects.filter(pk__in=chunk).delete()


def _chunks(values: list, size: int) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --- putting studied cards back -------------------------------------------------------------


def last_review_id() -> int:
    return Review.objects.order_by("-id").values_list("id", flat=True).first() or 0


def rewind(user_ids: Iterable[int], after_id: int) -> int:
    """Undo every review of these users with an id above ``after_id``: delete the rows and
    put each touched progress row back as it was, from the reviews' "before" columns.

    Works after any kind of session (in process, over HTTP, several processes), because
    the history itself says what the state was. Returns the number of reviews removed.
    """
    removed = _rewind(list(user_ids), after_id)
    vacuum_after_rewind()
    return removed


def vacuum_after_rewind() -> None:
    """On PostgreSQL, vacuum the tables a rewind rewrote, as the generator left them.

    Each run rates and rewinds the same cards, so without this their dead row versions
    pile up run after run (70,000 on the progress table after a dozen runs: too few for
    autovacuum to start on a table this size), and the queue's index-only scans visit
    each of them: rate + next question 6.9 -> 6.2 ms on the same code. In real use a
    card is rated once in a while, not over and over, and autovacuum keeps up."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM {CardProgress._meta.db_table}, {Review._meta.db_table}")


def _rewind(user_ids: list[int], after_id: int) -> int:
    review = Review._meta.db_table
    progress = CardProgress._meta.db_table
    marks = ", ".join(["%s"] * len(user_ids))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT user_id, card_id, rating, state_before, step_before, due_before,"
            " stability_before, difficulty_before"
            f" FROM {review} WHERE user_id IN ({marks}) AND id > %s ORDER BY id",
            [*user_ids, after_id],
        )
        first: dict[tuple[int, int], tuple] = {}
        counts: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
        for user_id, card_id, rating, state, step, due, stability, difficulty in cursor:
            key = (user_id, card_id)
            first.setdefault(key, (state, step, due, stability, difficulty))
            counts[key][0] += 1
            # A lapse as services._is_lapse counts it: a failed recall of a review card.
            counts[key][1] += state == REVIEW and rating <= 2
        if not first:
            return 0
        # The latest earlier review of each card gives the last rating and time back.
        previous: dict[tuple[int, int], tuple] = {}
        by_user: dict[int, list[int]] = defaultdict(list)
        for user_id, card_id in first:
            by_user[user_id].append(card_id)
        for user_id, card_ids in by_user.items():
            for chunk in _chunks(card_ids, 500):
                cursor.execute(
                    f"SELECT r.card_id, r.rating, r.reviewed_at FROM {review} r"
                    f" JOIN (SELECT card_id, MAX(id) AS id FROM {review}"
                    f"  WHERE user_id = %s AND id <= %s AND card_id IN"
                    f"  ({', '.join(['%s'] * len(chunk))}) GROUP BY card_id) last"
                    " ON r.id = last.id",
                    [user_id, after_id, *chunk],
                )
                for card_id, rating, at in cursor.fetchall():
                    previous[(user_id, card_id)] = (rating, at)
        cursor.executemany(
            f"UPDATE {progress} SET state = %s, step = %s, due = %s, stability = %s,"
            " difficulty = %s, reps = reps - %s, lapses = lapses - %s, last_rating = %s,"
            " last_reviewed_at = %s WHERE user_id = %s AND card_id = %s",
            [
                (*before, *counts[key], *previous.get(key, (None, None)), *key)
                for key, before in first.items()
            ],
        )
        cursor.execute(
            f"DELETE FROM {review} WHERE user_id IN ({marks}) AND id > %s",
            [*user_ids, after_id],
        )
        return sum(n for n, _ in counts.values())


# --- generating it ----------------------------------------------------------------------------


def generate_bench_data() -> BenchData:
    """Create every bench student, deck, card, progress row and review."""
    to_db = _datetime_adapter()
    users = get_user_model().objects
    with transaction.atomic():
        heavy = _generate_student(USERNAME, DECK_TITLE, HEAVY, random.Random(SEED), to_db)
        small = _generate_student(
            SMALL_USERNAME, SMALL_DECK_TITLE, SMALL, random.Random(SEED + 1), to_db
        )

        # Home: one student, 50 decks with a history in each.
        home = users.create_user(HOME_USERNAME)
        rng = random.Random(SEED + 2)
        decks = Deck.objects.bulk_create(
            Deck(owner=home, title=HOME_DECK_TITLE.format(i), description="manage.py bench")
            for i in range(HOME_DECKS)
        )
        _generate_history([(home.pk, deck, rng) for deck in decks], HOME, to_db, "home")

        # Class: 100 students in one deck owned by a teacher (staff).
        teacher = users.create_user(TEACHER_USERNAME, is_staff=True)
        class_deck = Deck.objects.create(
            owner=teacher, title=CLASS_DECK_TITLE, description="manage.py bench"
        )
        students = _bulk_users([CLASS_USERNAME.format(i) for i in range(CLASS_STUDENTS)])
        _generate_history(
            [
                (user.pk, class_deck, random.Random(SEED + 100 + i))
                for i, user in enumerate(students)
            ],
            CLASS,
            to_db,
            "class",
        )
    with transaction.atomic():
        load = generate_load_students(LOAD_STUDENTS, to_db)
    return BenchData(
        user=heavy.user,
        deck=heavy.deck,
        study_settings=heavy.study_settings,
        small=small,
        home=home,
        teacher=teacher,
        class_deck=class_deck,
        load=load,
    )


def generate_load_students(count: int, to_db=None) -> list[Student]:
    """The load students (and their decks), after removing any half-made ones."""
    to_db = to_db or _datetime_adapter()
    names = [LOAD_USERNAME.format(i) for i in range(count)]
    delete_bench_data(names)
    users = _bulk_users(names)
    StudySettings.objects.bulk_create(
        StudySettings(user=user, **bench_settings_values()) for user in users
    )
    decks = Deck.objects.bulk_create(
        Deck(owner=user, title=LOAD_DECK_TITLE.format(i), description="manage.py bench")
        for i, user in enumerate(users)
    )
    _generate_history(
        [
            (user.pk, deck, random.Random(SEED + 1000 + i))
            for i, (user, deck) in enumerate(zip(users, decks, strict=True))
        ],
        LOAD,
        to_db,
        "load",
    )
    settings = {s.user_id: s for s in StudySettings.objects.filter(user__in=users)}
    return [Student(user, deck, settings[user.pk]) for user, deck in zip(users, decks, strict=True)]


def _bulk_users(usernames: list[str]) -> list[models.Model]:
    # No password: these accounts cannot log in with one; the benchmark logs them in
    # through sessions it makes itself. One unusable hash for all (make_password is cheap
    # for None, but there is no need to call it a hundred times).
    unusable = make_password(None)
    model = get_user_model()
    model.objects.bulk_create(model(username=name, password=unusable) for name in usernames)
    by_name = {u.username: u for u in model.objects.filter(username__in=usernames)}
    return [by_name[name] for name in usernames]


def _generate_student(username: str, title: str, shape: Shape, rng, to_db) -> Student:
    user = get_user_model().objects.create_user(username)  # no password: cannot log in
    study_settings = StudySettings.objects.create(user=user, **bench_settings_values())
    deck = Deck.objects.create(owner=user, title=title, description="manage.py bench")
    _generate_history([(user.pk, deck, rng)], shape, to_db, username)
    return Student(user, deck, study_settings)


def _generate_history(
    plan: list[tuple[int, Deck, random.Random]], shape: Shape, to_db, label: str
) -> None:
    """Cards for each deck in ``plan`` (once per deck), then each (user, deck)'s history."""
    now_ts = NOW.timestamp()
    created = to_db(now_ts - (shape.history_days + 1) * DAY)
    decks = {deck.pk: deck for _, deck, _ in plan}
    _insert(
        Card,
        CARD_FIELDS,
        (
            (deck_id, f"Bench question {p}", f"Bench answer {p}", p, "bench", created, created)
            for deck_id in decks
            for p in range(1, shape.cards + 1)
        ),
        len(decks) * shape.cards,
        f"{label} cards",
    )
    card_ids: dict[int, list[int]] = defaultdict(list)
    for deck_id, card_id in (
        Card.objects.filter(deck__in=list(decks))
        .order_by("deck_id", "position")
        .values_list("deck_id", "id")
    ):
        card_ids[deck_id].append(card_id)

    reviews: list[tuple] = []
    progress: list[tuple] = []
    for user_id, deck, rng in plan:
        deck_reviews, deck_progress = _history(rng, card_ids[deck.pk], now_ts, shape)
        reviews += [(user_id, *row) for row in deck_reviews]
        progress += [(user_id, deck.pk, *row) for row in deck_progress]
    # Chronological ids, as the app's own inserts would give.
    reviews.sort(key=itemgetter(1))
    _insert(
        Review,
        REVIEW_FIELDS,
        (
            (user_id, card_id, rating, to_db(at), taken, recall, s_before, step_before)
            + (to_db(due_before), stab_before, diff_before, s_after, step_after)
            + (to_db(due_after), stab_after, diff_after, days)
            for (
                user_id,
                at,
                card_id,
                rating,
                taken,
                recall,
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
        ),  # fmt: skip
        len(reviews),
        f"{label} reviews",
    )
    del reviews
    _insert(
        CardProgress,
        PROGRESS_FIELDS,
        (
            (user_id, card_id, deck_id, position, state, step, to_db(due))
            + (stability, difficulty, reps, lapses, last_rating, to_db(last_at))
            for (
                user_id,
                deck_id,
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
        ),  # fmt: skip
        len(progress),
        f"{label} progress",
    )


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
    rng: random.Random, card_ids: list[int], now_ts: float, shape: Shape
) -> tuple[list[ReviewRow], list[ProgressRow]]:
    """The review history and progress rows of one student in one deck (module docstring)."""
    reviewed = shape.cards - shape.new_cards - shape.learning_cards
    reviews: list[ReviewRow] = []
    progress: list[ProgressRow] = []

    # Learning cards: few enough to run the real scheduler, so they are exact.
    fsrs = scheduler.get_scheduler(0.9, fuzz=False)
    learning_reviews = 0
    for index in range(reviewed, reviewed + shape.learning_cards):
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
    span = shape.history_days * DAY - 2 * DAY
    intro = [
        now_ts - shape.history_days * DAY + span * index / reviewed + rng.uniform(0, 6 * 3600)
        for index in range(reviewed)
    ]
    weights = [math.log1p((now_ts - t0) / DAY) for t0 in intro]
    counts = [1] * reviewed
    extra = shape.reviews - learning_reviews - reviewed
    for index in rng.choices(range(reviewed), cum_weights=list(accumulate(weights)), k=extra):
        counts[index] += 1
    due_now = set(rng.sample(range(reviewed), shape.due_now_cards))
    all_ratings = rng.choices(RATINGS, weights=RATING_WEIGHTS, k=shape.reviews)
    grades = {rating: int(scheduler.RATING_TO_FSRS[rating]) for rating in RATINGS}
    cursor = 0
    cards = range(reviewed)
    if reviewed >= 10_000:
        cards = tqdm(cards, desc="history", unit=" cards", disable=None, leave=False)
    for index in cards:
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

    for index in range(reviewed + shape.learning_cards, shape.cards):
        progress.append((card_ids[index], index + 1, NEW) + (None,) * 4 + (0, 0, None, None))
    assert len(reviews) == shape.reviews and len(progress) == shape.cards
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
    # Columns the app adds later that the generator does not know about get their
    # model default (a new NOT NULL column would otherwise break the raw insert).
    named = {model._meta.get_field(name).column for name in fields}
    extra = [
        f
        for f in model._meta.concrete_fields
        if not f.primary_key and f.column not in named and not f.null
    ]
    defaults = tuple(f.get_db_prep_save(f.get_default(), connection) for f in extra)
    if extra:
        rows = (row + defaults for row in rows)
    columns = ", ".join(
        [quote(model._meta.get_field(name).column) for name in fields]
        + [quote(f.column) for f in extra]
    )
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
            placeholders = ", ".join(["%s"] * (len(fields) + len(extra)))
            sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"
            for batch in _batches(rows, BATCH):
                cursor.executemany(sql, batch)
                bar.update(len(batch))


def _batches(rows: Iterable[tuple], size: int) -> Iterator[list[tuple]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch
