from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.sessions.base_session import AbstractBaseSession
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import NotSupportedError, connection, models
from django.db.models import Count, F, FilteredRelation, Func, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce


class Rating(models.IntegerChoices):
    """The student's 1–5 answer to "How well did you know this?"."""

    NOT_AT_ALL = 1, "Not at all"
    BARELY = 2, "Barely"
    WITH_EFFORT = 3, "With effort"
    WELL = 4, "Well"
    PERFECTLY = 5, "Perfectly"


class State(models.IntegerChoices):
    # 1–3 match fsrs.State; NEW is ours (a card this student has never rated), and so is
    # SUSPENDED (kept out of every queue; Anki packages bring suspended cards).
    NEW = 0, "New"
    LEARNING = 1, "Learning"
    REVIEW = 2, "Review"
    RELEARNING = 3, "Relearning"
    SUSPENDED = 4, "Suspended"


# The words the CSVs use for ratings and states.
RATING_LABELS = dict(Rating.choices)
STATE_NAMES = {value: label.lower() for value, label in State.choices}


class DeckQuerySet(models.QuerySet):
    def visible_to(self, user) -> DeckQuerySet:
        """Decks this user may open: public ones, their own, and every deck for staff."""
        if user.is_staff:
            return self
        return self.filter(Q(is_public=True) | Q(owner=user))

    def cards_for_export(self, user) -> models.QuerySet:
        """Rows for the cards CSV of one student: every card of these decks, with the
        student's progress where they have some (never-studied cards count too)."""
        return (
            Card.objects.filter(deck__in=self)
            .annotate(mine=FilteredRelation("progress", condition=Q(progress__user=user)))
            .order_by("deck__title", "deck_id", "position", "id")
            .values_list(
                Value(user.get_username()), "deck__title", "id", "front", "mine__reps",
                "mine__lapses", "mine__last_rating", "mine__last_reviewed_at", "mine__due",
                "mine__state", "mine__stability",
            )
        )  # fmt: skip

    def with_card_counts(self) -> DeckQuerySet:
        """Each deck's number of cards, counted per deck on the (deck, position) index: a
        join and GROUP BY would read every card of every visible deck, and PostgreSQL
        plans it as a scan of the whole card table."""
        cards = (
            Card.objects.filter(deck=OuterRef("pk"))
            .order_by()
            .values("deck")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return self.annotate(card_count=Coalesce(Subquery(cards), 0))


class Deck(models.Model):
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="decks",
        help_text="Empty for a deck run by the admins.",
    )
    is_public = models.BooleanField(
        default=False, help_text="Public decks can be studied by every signed-in student."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DeckQuerySet.as_manager()

    class Meta:
        ordering = ["title", "id"]

    def __str__(self) -> str:
        return self.title


class Card(models.Model):
    # Indexed with the card id below, not alone.
    deck = models.ForeignKey(Deck, on_delete=models.CASCADE, related_name="cards", db_index=False)
    front = models.TextField(help_text="The question, in Markdown.")
    back = models.TextField(help_text="The answer, in Markdown.")
    position = models.PositiveIntegerField(default=0, help_text="Order in the deck.")
    tags = models.CharField(max_length=500, blank=True, help_text="Separated by spaces.")
    # For cards from an Anki package: the note's guid and the card's template ordinal, so
    # importing the package again updates the card in place.
    anki_guid = models.CharField(max_length=64, blank=True, editable=False)
    anki_ord = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["deck", "position", "id"]
        indexes = [
            # The deck's cards in deck order (deck page, export, progress set-up).
            models.Index(fields=["deck", "position"], name="card_deck_position"),
            # The deck's newest card (services.ensure_progress) in one probe.
            models.Index(fields=["deck", "id"], name="card_deck_id"),
            # Finding an Anki note's cards again when its package is re-imported.
            models.Index(
                fields=["anki_guid", "anki_ord"],
                name="card_anki_guid",
                condition=~Q(anki_guid=""),
            ),
        ]

    def __str__(self) -> str:
        return self.front[:80]


class CardProgressQuerySet(models.QuerySet):
    def for_export(self) -> models.QuerySet:
        """Rows for the cards CSV (decks.exporters.card_rows), in deck order."""
        ordered = self.order_by("user__username", "deck__title", "deck_id", "position", "card_id")
        return ordered.values_list(
            "user__username", "deck__title", "card_id", "card__front", "reps", "lapses",
            "last_rating", "last_reviewed_at", "due", "state", "stability",
        )  # fmt: skip


# A progress row's scheduling state: what a rating changes and an undo puts back.
PROGRESS_STATE_FIELDS = [
    "state", "step", "due", "stability", "difficulty", "reps", "lapses", "last_rating",
    "last_reviewed_at",
]  # fmt: skip


class CardProgress(models.Model):
    """One student's scheduling state for one card; written only by decks.services."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    card = models.ForeignKey(Card, on_delete=models.CASCADE, related_name="progress")
    # Copies of card.deck and card.position, so the queue queries below are single
    # index range scans instead of joins over the whole deck.
    deck = models.ForeignKey(Deck, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField(default=0)
    state = models.PositiveSmallIntegerField(choices=State.choices, default=State.NEW)
    step = models.PositiveSmallIntegerField(null=True, blank=True)
    due = models.DateTimeField(null=True, blank=True)
    stability = models.FloatField(null=True, blank=True)
    difficulty = models.FloatField(null=True, blank=True)
    reps = models.PositiveIntegerField(default=0)
    lapses = models.PositiveIntegerField(default=0)
    last_rating = models.PositiveSmallIntegerField(choices=Rating.choices, null=True, blank=True)
    last_reviewed_at = models.DateTimeField(null=True, blank=True)

    objects = CardProgressQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "card progress"
        constraints = [
            models.UniqueConstraint(fields=["user", "card"], name="progress_unique_user_card"),
        ]
        indexes = [
            # "This user's due cards in this deck, soonest first" (learning and review queues).
            models.Index(fields=["user", "deck", "state", "due"], name="progress_queue_due"),
            # "This user's new cards in this deck, in deck order".
            models.Index(fields=["user", "deck", "state", "position"], name="progress_queue_new"),
            # "The newest card this user has a row for in this deck" (ensure_progress).
            models.Index(fields=["user", "deck", "card"], name="progress_user_deck_card"),
        ]

    def __str__(self) -> str:
        return f"{self.user} · card {self.card_id} · {self.get_state_display()}"


class ReviewQuerySet(models.QuerySet):
    def in_decks(self, decks) -> ReviewQuerySet:
        """Reviews of the cards of these decks, in the form each backend runs fastest
        under the export's ORDER BY: SQLite checks each review's card against the list of
        the decks' card ids (cheaper than a join per row); PostgreSQL joins each review
        to its card, a plan that follows the (user, reviewed_at, state_before) index's
        order (sorting only equal times by id), where the semi-join it makes of an IN list
        would sort a million rows before sending the first."""
        if connection.vendor == "sqlite":
            return self.filter(card__in=Card.objects.filter(deck__in=decks))
        return self.filter(card__deck__in=decks)

    def for_export(self) -> models.QuerySet:
        """Rows for the reviews CSV (decks.exporters.review_csv), oldest first: user id,
        card id, and the rest of the line as the database writes it (ReviewCsvCells).
        Names and questions come from lookups made once per export (a million joined rows
        would fetch the same strings again and again). The order (reviewed_at,
        state_before, id) is the (user, reviewed_at, state_before) index's own, so a
        student's export needs no sort."""
        return (
            self.order_by("reviewed_at", "state_before", "id")
            .annotate(csv_cells=ReviewCsvCells())
            .values_list("user_id", "card_id", "csv_cells")
        )


def _sql_text(text: str) -> str:
    """A string literal for SQL that goes through parameter formatting (so % doubled)."""
    return "'" + text.replace("'", "''").replace("%", "%%") + "'"


def _sql_words(column: str, words: dict[int, str]) -> str:
    whens = " ".join(f"WHEN {value} THEN {_sql_text(word)}" for value, word in words.items())
    return f"CASE {column} {whens} END"


class ReviewCsvCells(Func):
    """A review's cells in the reviews CSV from the rating on (REVIEW_COLUMNS[4:] of
    decks.exporters), as one text written by the database: rating, its label, reviewed
    at, time taken, state before and after, scheduled days, due after, stability,
    difficulty, retrievability. Fetching one text per row instead of ten values, with
    nothing left to format in Python, took the million-row export from 176–249k to
    284–291k rows/s on SQLite and from 166–174k to 203–240k on PostgreSQL.

    Times are ISO 8601 in UTC, to the second (truncated). Numbers have four decimals,
    rounded by the database from the number's shortest decimal form with ties away from
    zero: a stability stored as 1.75515 is written 1.7552 where Python's format() would
    say 1.7551 (about 1 value in 27,000 in the bench's history)."""

    output_field = models.TextField()
    columns = [
        "rating", "reviewed_at", "time_taken_ms", "state_before", "state_after",
        "scheduled_days", "due_after", "stability_after", "difficulty_after", "retrievability",
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__(*map(F, self.columns))

    def _compiled(self, compiler, connection) -> tuple[dict[str, str], list]:
        columns, params = {}, []
        for name, expression in zip(self.columns, self.get_source_expressions(), strict=True):
            sql, column_params = compiler.compile(expression)
            columns[name] = sql
            params.extend(column_params)
        ratings = {value: f"{value},{label}" for value, label in RATING_LABELS.items()}
        columns["rating"] = _sql_words(columns["rating"], ratings)
        for name in ["state_before", "state_after"]:
            columns[name] = _sql_words(columns[name], STATE_NAMES)
        return columns, params

    def as_sql(self, compiler, connection, **extra_context):
        raise NotSupportedError("The reviews CSV is written by SQLite or PostgreSQL only.")

    def as_sqlite(self, compiler, connection, **extra_context):
        # SQLite keeps times as 'YYYY-MM-DD HH:MM:SS[.ffffff]' text in UTC. One printf()
        # is much cheaper than concatenating the cells (each || makes a new string).
        c, params = self._compiled(compiler, connection)
        sql = (
            "printf('%%s,%%.10sT%%.8sZ,%%s,%%s,%%s,%%.4f,%%.10sT%%.8sZ,%%.4f,%%.4f,%%s',"
            f" {c['rating']}, {c['reviewed_at']}, substr({c['reviewed_at']}, 12),"
            f" {c['time_taken_ms']}, {c['state_before']}, {c['state_after']},"
            f" {c['scheduled_days']}, {c['due_after']}, substr({c['due_after']}, 12),"
            f" {c['stability_after']}, {c['difficulty_after']},"
            f" CASE WHEN {c['retrievability']} IS NULL THEN ''"
            f" ELSE printf('%%.4f', {c['retrievability']}) END)"
        )
        return sql, params

    def as_postgresql(self, compiler, connection, **extra_context):
        c, params = self._compiled(compiler, connection)

        def time(column: str) -> str:
            return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""

        def number(column: str) -> str:
            return f"round({column}::numeric, 4)"

        # format() writes NULL as an empty cell.
        sql = (
            f"format('{','.join(['%%s'] * 10)}', {c['rating']}, {time(c['reviewed_at'])},"
            f" {c['time_taken_ms']}, {c['state_before']}, {c['state_after']},"
            f" {number(c['scheduled_days'])}, {time(c['due_after'])},"
            f" {number(c['stability_after'])}, {number(c['difficulty_after'])},"
            f" {number(c['retrievability'])})"
        )
        return sql, params


class Review(models.Model):
    """Append-only rating history: one row per rating, with the state before and after."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    card = models.ForeignKey(Card, on_delete=models.CASCADE, related_name="reviews")
    rating = models.PositiveSmallIntegerField(choices=Rating.choices)
    reviewed_at = models.DateTimeField()
    time_taken_ms = models.PositiveIntegerField(null=True, blank=True)
    retrievability = models.FloatField(
        null=True, blank=True, help_text="Predicted recall probability at review time."
    )
    state_before = models.PositiveSmallIntegerField(choices=State.choices)
    step_before = models.PositiveSmallIntegerField(null=True, blank=True)
    due_before = models.DateTimeField(null=True, blank=True)
    stability_before = models.FloatField(null=True, blank=True)
    difficulty_before = models.FloatField(null=True, blank=True)
    state_after = models.PositiveSmallIntegerField(choices=State.choices)
    step_after = models.PositiveSmallIntegerField(null=True, blank=True)
    due_after = models.DateTimeField()
    stability_after = models.FloatField()
    difficulty_after = models.FloatField()
    scheduled_days = models.FloatField(help_text="Interval from this review to the next due.")

    objects = ReviewQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(rating__gte=1) & Q(rating__lte=5), name="review_rating_1_to_5"
            ),
        ]
        indexes = [
            # Today's counts (covering: state_before is read from the index alone), undo of
            # the latest rating, the user's history export.
            models.Index(
                fields=["user", "reviewed_at", "state_before"], name="review_user_time_state"
            ),
            # One card's history for a user (undo restores the previous last rating).
            models.Index(fields=["user", "card", "reviewed_at"], name="review_user_card_time"),
        ]

    def __str__(self) -> str:
        return f"{self.user} rated card {self.card_id}: {self.rating}"


def _valid_time_zone(value: str) -> None:
    from django.core.exceptions import ValidationError

    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known time zone.")


class StudySettings(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="study_settings"
    )
    desired_retention = models.FloatField(
        default=0.9,
        validators=[MinValueValidator(0.70), MaxValueValidator(0.99)],
        help_text="The share of cards you want to still remember when they come back (0.70–0.99).",
    )
    new_per_day = models.PositiveIntegerField(
        "new cards per day", default=20, validators=[MaxValueValidator(9999)]
    )
    max_reviews_per_day = models.PositiveIntegerField(
        "maximum reviews per day", default=200, validators=[MaxValueValidator(9999)]
    )
    time_zone = models.CharField(max_length=64, default="UTC", validators=[_valid_time_zone])
    day_start_hour = models.PositiveSmallIntegerField(
        "hour the study day starts",
        default=4,
        validators=[MaxValueValidator(23)],
        help_text="Reviews before this hour count towards the previous day.",
    )

    # The student's own FSRS parameters (decks.memory_model), once fitted and shown to
    # predict their held-out reviews better than the defaults; None means the defaults.
    fsrs_parameters = models.JSONField(null=True, blank=True)
    model_reviews = models.PositiveIntegerField(null=True, blank=True)
    model_log_loss = models.FloatField(null=True, blank=True)
    model_rmse = models.FloatField(null=True, blank=True)
    default_log_loss = models.FloatField(null=True, blank=True)
    default_rmse = models.FloatField(null=True, blank=True)
    model_fitted_at = models.DateTimeField(null=True, blank=True)
    model_message = models.CharField(max_length=300, blank=True)
    fit_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="Set when a fit is queued for the nightly command."
    )

    class Meta:
        verbose_name_plural = "study settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(desired_retention__gte=0.7) & Q(desired_retention__lte=0.99),
                name="settings_retention_range",
            ),
            models.CheckConstraint(condition=Q(day_start_hour__lte=23), name="settings_hour"),
        ]

    def __str__(self) -> str:
        return f"Study settings for {self.user}"

    @classmethod
    def for_user(cls, user) -> StudySettings:
        """The user's settings, or the defaults (unsaved) if they never changed them."""
        try:
            return user.study_settings
        except cls.DoesNotExist:
            return cls(user=user)

    def day_start(self, now: datetime) -> datetime:
        """Start of the study day containing ``now``, as an aware datetime."""
        local = now.astimezone(zoneinfo.ZoneInfo(self.time_zone))
        start = local.replace(hour=self.day_start_hour, minute=0, second=0, microsecond=0)
        if local < start:
            # Aware arithmetic keeps the wall-clock hour across a DST change.
            start -= timedelta(days=1)
        return start


class UserSession(AbstractBaseSession):
    """Django's database session, with the signed-in user's id in a column of its own
    (set when the session is saved): the session engine, studyapp.sessions, reads the
    user's row in the same statement as the session, which every signed-in request needs
    and Django reads one after the other."""

    # No database constraint: a session may outlive its user (Django's own sessions do,
    # and then sign nobody in); deleting a user through Django deletes their sessions.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.CASCADE,
        db_constraint=False,
        related_name="+",
    )

    @classmethod
    def get_session_store_class(cls):
        from studyapp.sessions import SessionStore

        return SessionStore
