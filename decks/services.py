"""The write paths. Only these functions write Review and CardProgress rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from decks import anki_import, apkg, memory_model, scheduler
from decks.importers import ParsedDeck, check_size, decode_upload, parse_deck
from decks.models import (
    PROGRESS_STATE_FIELDS,
    Card,
    CardProgress,
    Deck,
    Rating,
    Review,
    State,
    StudySettings,
)
from decks.rawsql import (
    REVIEW_COLUMNS,
    Read,
    datetime_adapter,
    db_datetime,
    insert_rows,
    pipelined,
    prepared_cursor,
    py_datetime,
    review_values,
)


class CardNotInDeck(LookupError):
    """The rated card is not in the deck the rating was sent for."""


class StaleRating(Exception):
    """The rating was for a card state that has already changed (a resent or late form)."""


def scheduler_for(study_settings: StudySettings, *, fuzz: bool | None = None):
    """The student's scheduler: their desired retention, and their own fitted parameters
    once they have some (decks.memory_model)."""
    return scheduler.get_scheduler(
        study_settings.desired_retention,
        parameters=study_settings.fsrs_parameters,
        fuzz=settings.STUDYAPP_FSRS_FUZZ if fuzz is None else fuzz,
    )


def progress_state(progress: CardProgress) -> scheduler.CardState:
    return scheduler.CardState(
        state=progress.state,
        step=progress.step,
        due=progress.due,
        stability=progress.stability,
        difficulty=progress.difficulty,
        last_review=progress.last_reviewed_at,
    )


def ensure_progress(user, deck: Deck) -> None:
    """Give the user a "new" progress row for every card of the deck that lacks one.

    Card ids only grow, so when the deck's newest card already has a row for this user,
    nothing is missing: two index lookups, whatever the deck size. Otherwise one
    INSERT … SELECT adds the missing rows.

    The newest card is the last (deck, id) index entry at or below this deck's: asked as
    ``MAX(id) … WHERE deck_id = %s``, PostgreSQL may walk the primary key down instead,
    through every card of the decks made since (43,000 of them in the benchmark, 5 ms).
    """
    progress = CardProgress._meta.db_table
    card = Card._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT CASE WHEN deck_id = %s THEN id END FROM {card}"
            f" WHERE deck_id <= %s ORDER BY deck_id DESC, id DESC LIMIT 1),"
            f" (SELECT MAX(card_id) FROM {progress} WHERE user_id = %s AND deck_id = %s)",
            [deck.pk, deck.pk, user.pk, deck.pk],
        )
        newest_card, newest_row = cursor.fetchone()
        if newest_card is None or newest_card == newest_row:
            return
        cursor.execute(
            f"""
            INSERT INTO {progress}
                (user_id, card_id, deck_id, position, state, reps, lapses)
            SELECT %s, c.id, c.deck_id, c.position, %s, 0, 0
            FROM {card} c
            WHERE c.deck_id = %s
              AND NOT EXISTS (
                SELECT 1 FROM {progress} p WHERE p.user_id = %s AND p.card_id = c.id
              )
            ON CONFLICT (user_id, card_id) DO NOTHING
            """,
            [user.pk, State.NEW, deck.pk, user.pk],
        )


# The progress row's scheduling state as record_review reads it, after deck_id and id.
_READ_FIELDS = [
    "state", "step", "due", "stability", "difficulty", "reps", "lapses", "last_reviewed_at",
]  # fmt: skip


def _read_progress(user, card_id: int) -> tuple | None:
    """The (user, card) progress row's deck and scheduling state, or None."""
    with prepared_cursor() as cursor:
        cursor.execute(
            f"SELECT deck_id, id, {', '.join(_READ_FIELDS)}"
            f" FROM {CardProgress._meta.db_table} WHERE user_id = %s AND card_id = %s",
            [user.pk, card_id],
        )
        return cursor.fetchone()


def _progress_row(user, card_id: int, deck_id: int | None) -> tuple:
    row = _read_progress(user, card_id)
    if row is None:
        # The card joined the deck after the student's progress rows were made. Give the
        # whole deck its missing rows, not this card alone: ensure_progress takes a row
        # for the deck's newest card to mean that none is missing.
        card = Card.objects.filter(pk=card_id).select_related("deck").first()
        if card is None or deck_id not in (None, card.deck_id):
            raise CardNotInDeck
        ensure_progress(user, card.deck)
        row = _read_progress(user, card_id)
    return row


def record_review(
    user,
    card_id: int,
    rating: int,
    now: datetime,
    *,
    time_taken_ms: int | None = None,
    expected_reps: int | None = None,
    study_settings: StudySettings | None = None,
    deck_id: int | None = None,
    progress: CardProgress | None = None,
    then: Sequence[Read] = (),
) -> Review:
    """Append a Review and move the card's progress on, both or neither.

    The progress row is read, the rating applied to it, and the write only goes through
    if the card's review count is still the one read (optimistic locking): two concurrent
    ratings of one card are applied one after the other, the later one starting again
    from the earlier one's result. ``expected_reps`` is the card's review count when it
    was shown; if it has changed since, the rating is stale and raises StaleRating. With
    ``deck_id``, a card of another deck raises CardNotInDeck, and nothing is written.
    ``progress`` is the card's progress row if the caller has just read it (the rate
    view reads it with the deck): the first try starts from it instead of reading again.
    The reads in ``then`` (what the page after the rating shows) run right after the
    write, and see it; on PostgreSQL they go with it in one round trip (see
    rawsql.pipelined). Their results are only meant for a rating that went through.

    The statements are written by hand: this runs on every rating, and the ORM's query
    building would cost several times the SQL itself (see BENCHMARKS.md).
    """
    rating = scheduler.validate_rating(rating)
    if study_settings is None:
        study_settings = StudySettings.for_user(user)
    fsrs = scheduler_for(study_settings)
    while True:
        if progress is not None:
            row = [progress.deck_id, progress.pk, *(getattr(progress, f) for f in _READ_FIELDS)]
            progress = None  # a second try reads the row again
        else:
            row = _progress_row(user, card_id, deck_id)
        (progress_deck, progress_id, state, step, due, stability, difficulty, reps, lapses,
         last_reviewed) = row  # fmt: skip
        if deck_id is not None and progress_deck != deck_id:
            raise CardNotInDeck
        if expected_reps is not None and reps != expected_reps:
            raise StaleRating
        before = scheduler.CardState(
            state=state,
            step=step,
            due=py_datetime(due),
            stability=stability,
            difficulty=difficulty,
            last_review=py_datetime(last_reviewed),
        )
        outcome = scheduler.review(before, rating, now, fsrs)
        after = outcome.after
        review = Review(
            user_id=user.pk,
            card_id=card_id,
            rating=rating,
            reviewed_at=now,
            time_taken_ms=time_taken_ms,
            retrievability=outcome.retrievability,
            state_before=before.state,
            step_before=before.step,
            due_before=before.due,
            stability_before=before.stability,
            difficulty_before=before.difficulty,
            state_after=after.state,
            step_after=after.step,
            due_after=after.due,
            stability_after=after.stability,
            difficulty_after=after.difficulty,
            scheduled_days=outcome.scheduled_days,
        )
        moved = [
            after.state, after.step, db_datetime(after.due), after.stability, after.difficulty,
            reps + 1, lapses + _is_lapse(before.state, rating), rating, db_datetime(now),
        ]  # fmt: skip
        review.pk = _write_review(review, moved, progress_id, reps, then)
        if review.pk is not None:
            return review
        # Another rating of this card got in between the read and the write.
        if expected_reps is not None:
            raise StaleRating


_MOVE_PROGRESS = (
    f"UPDATE {CardProgress._meta.db_table} SET state = %s, step = %s, due = %s,"
    " stability = %s, difficulty = %s, reps = %s, lapses = %s, last_rating = %s,"
    " last_reviewed_at = %s WHERE id = %s AND reps = %s"
)
_REVIEW_PLACEHOLDERS = ", ".join(["%s"] * len(REVIEW_COLUMNS))


def _write_review(
    review: Review, progress: list, progress_id: int, reps: int, then: Sequence[Read]
) -> int | None:
    """Insert the review and move the progress row on, if the row still has ``reps``
    reviews; the new review's id, or None (and nothing written) if it has not. Then run
    the reads in ``then``.

    On PostgreSQL the write is one statement, sent with the reads in one round trip: the
    UPDATE waits for a concurrent rating's row lock, then finds ``reps`` changed and
    moves nothing, and the INSERT only takes the row the UPDATE returned. SQLite has no
    UPDATE in a WITH clause: there the two statements share one (IMMEDIATE, so
    serialised) transaction, and the reads follow it.
    """
    values = review_values(**{c: getattr(review, c) for c in REVIEW_COLUMNS})
    columns = ", ".join(REVIEW_COLUMNS)
    if connection.vendor == "postgresql":
        with pipelined(together=bool(then)) as send:
            written = send(
                f"WITH moved AS ({_MOVE_PROGRESS} RETURNING id)"
                f" INSERT INTO {Review._meta.db_table} ({columns})"
                f" SELECT {_REVIEW_PLACEHOLDERS} FROM moved RETURNING id",
                [*progress, progress_id, reps, *values],
            )
            rows = [send(read.sql, read.params, binary=read.binary) for read in then]
        for read, row in zip(then, rows, strict=True):
            read.result = read.parse(row.fetchone())
        row = written.fetchone()
        return None if row is None else row[0]
    pk = None
    with prepared_cursor() as cursor, transaction.atomic():
        cursor.execute(_MOVE_PROGRESS, [*progress, progress_id, reps])
        if cursor.rowcount == 1:
            cursor.execute(
                f"INSERT INTO {Review._meta.db_table} ({columns}) VALUES ({_REVIEW_PLACEHOLDERS})",
                values,
            )
            pk = cursor.lastrowid
    for read in then:
        read.run()
    return pk


def _is_lapse(state_before: int, rating: int) -> bool:
    """A review card the student failed to recall (1–2) is a lapse, as in Anki."""
    return state_before == State.REVIEW and rating <= Rating.BARELY


@transaction.atomic
def undo_last_review(user, deck: Deck | None = None) -> Review | None:
    """Take back the user's latest rating (in ``deck``, if given).

    Deletes the Review row and puts the card's progress back exactly as it was before
    that rating. Returns the deleted review (unsaved), or None if there was nothing.
    """
    reviews = Review.objects.filter(user=user)
    if deck is not None:
        reviews = reviews.filter(card__deck=deck)
    # Locking the review makes a concurrent second undo wait, then skip the deleted row.
    last = reviews.select_for_update(of=("self",)).order_by("-reviewed_at", "-id").first()
    if last is None:
        return None
    progress = CardProgress.objects.select_for_update().get(user=user, card_id=last.card_id)
    previous = (
        Review.objects.filter(user=user, card_id=last.card_id)
        .exclude(pk=last.pk)
        .order_by("-reviewed_at", "-id")
        .first()
    )
    progress.state = last.state_before
    progress.step = last.step_before
    progress.due = last.due_before
    progress.stability = last.stability_before
    progress.difficulty = last.difficulty_before
    progress.reps -= 1
    progress.lapses -= _is_lapse(last.state_before, last.rating)
    progress.last_rating = previous.rating if previous else None
    progress.last_reviewed_at = previous.reviewed_at if previous else None
    progress.save(update_fields=PROGRESS_STATE_FIELDS)
    last.delete()
    return last


@transaction.atomic
def import_deck(
    parsed: ParsedDeck, *, title: str | None = None, owner=None, is_public: bool = False
) -> Deck:
    """Save a parsed deck file as a new deck, all or nothing."""
    deck = Deck.objects.create(
        title=(title or parsed.title).strip()[:200], owner=owner, is_public=is_public
    )
    stamp = datetime_adapter()(timezone.now())
    insert_rows(
        Card,
        ["deck_id", "front", "back", "tags", "position", "anki_guid", "created_at", "updated_at"],
        [
            (deck.pk, card.front, card.back, card.tags, position, "", stamp, stamp)
            for position, card in enumerate(parsed.cards, start=1)
        ],
    )
    return deck


def import_deck_file(
    data: bytes,
    *,
    format: str | None = None,
    title: str | None = None,
    owner=None,
    is_public: bool = False,
) -> tuple[Deck, ParsedDeck]:
    """Decode, parse and save a deck file in any format importers.FORMATS knows (detected
    when ``format`` is None). Raises DeckFormatError, and saves nothing, if the file is bad
    or over the size limits in settings."""
    text = decode_upload(data, max_bytes=settings.STUDYAPP_MAX_IMPORT_BYTES)
    parsed = parse_deck(
        text, format=format, title=title, max_cards=settings.STUDYAPP_MAX_IMPORT_CARDS
    )
    return import_deck(parsed, title=title, owner=owner, is_public=is_public), parsed


def request_model_fit(user, now: datetime) -> None:
    """Queue a fit for `manage.py fit_memory_model --pending`."""
    study_settings = StudySettings.for_user(user)
    study_settings.fit_requested_at = now
    study_settings.save()


def save_model_fit(user, result: memory_model.FitResult, now: datetime) -> StudySettings:
    """Store the outcome of fitting a student's memory model on their settings."""
    study_settings = StudySettings.for_user(user)
    if result.adopted:
        study_settings.fsrs_parameters = result.parameters
        study_settings.model_reviews = result.reviews
        study_settings.model_log_loss = result.log_loss
        study_settings.model_rmse = result.rmse
        study_settings.default_log_loss = result.default_log_loss
        study_settings.default_rmse = result.default_rmse
        study_settings.model_fitted_at = now
    study_settings.model_message = result.message[:300]
    study_settings.fit_requested_at = None
    study_settings.save()
    return study_settings


@transaction.atomic
def reschedule(user, study_settings: StudySettings) -> int:
    """Replay every studied card's history through the student's current scheduler and
    store the resulting memory state and due date. Returns the number of cards changed."""
    fsrs_scheduler = scheduler_for(study_settings, fuzz=False)
    progress = {
        p.card_id: p for p in CardProgress.objects.filter(user=user).exclude(state=State.NEW)
    }
    history = Review.objects.filter(user=user).order_by("card_id", "reviewed_at", "id")
    states: dict[int, scheduler.CardState] = {}
    for card_id, rating, reviewed_at in history.values_list(
        "card_id", "rating", "reviewed_at"
    ).iterator(chunk_size=10_000):
        before = states.get(card_id, scheduler.CardState())
        states[card_id] = scheduler.review(before, rating, reviewed_at, fsrs_scheduler).after
    changed = []
    for card_id, state in states.items():
        row = progress.get(card_id)
        if row is None:
            continue
        row.state, row.step, row.due = state.state, state.step, state.due
        row.stability, row.difficulty = state.stability, state.difficulty
        changed.append(row)
    CardProgress.objects.bulk_update(
        changed, ["state", "step", "due", "stability", "difficulty"], batch_size=1000
    )
    return len(changed)


def import_upload(
    data: bytes,
    *,
    format: str | None = None,
    title: str | None = None,
    owner=None,
    is_public: bool = False,
    now: datetime,
) -> tuple[Deck, str]:
    """Import any file a student or teacher uploads: an Anki package (detected by its
    content; with an owner its review history comes too) or a text deck in one of
    importers.FORMATS. Returns the (first) deck and a summary for the user. Raises
    DeckFormatError or apkg.PackageError and saves nothing when the file is bad."""
    if apkg.is_anki_package(data):
        check_size(len(data), max_bytes=settings.STUDYAPP_MAX_PACKAGE_BYTES)
        package = apkg.read_package(data)
        if not package.cards:
            raise apkg.PackageError("The package has no cards.")
        result = anki_import.import_package(
            package, owner=owner, title=title, is_public=is_public, now=now
        )
        return result.decks[0], result.summary()
    deck, parsed = import_deck_file(
        data, format=format, title=title, owner=owner, is_public=is_public
    )
    skipped = "".join(
        f" Skipped card {s.number} (line {s.line}): {s.reason}." for s in parsed.skipped
    )
    return deck, f"Imported {len(parsed.cards)} cards into “{deck.title}”.{skipped}"
