from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db import DatabaseError, connection
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from decks import exporters, memory_model, queue, scheduler, services, stats
from decks.apkg import PackageError
from decks.forms import DeckImportForm, SignupForm, StudySettingsForm
from decks.importers import DeckFormatError, render_csv, render_seed_text
from decks.models import Card, CardProgress, Deck, Rating, Review, StudySettings
from decks.rawsql import pipelines, stream_rows

# Longer than this and the student was away; time taken is recorded as this much.
MAX_TIME_TAKEN = timedelta(minutes=10)
CARD_TOKEN_SALT = "decks.study.card"

RATING_HINTS = {
    1: "Didn't recall it",
    2: "Recalled it only after seeing the answer",
    3: "Recalled it with serious difficulty",
    4: "Recalled it after a pause",
    5: "Recalled it instantly",
}


# The rating buttons' fixed parts, as the template prints them, in their two groups (not
# recalled, recalled). Strings, not numbers: a number printed by a template goes through
# number formatting, which took a fifth of the flip's render.
RATING_GROUPS = [
    [
        {
            "rating": rating.value,
            "value": str(rating.value),
            "name": f"{rating.value} {rating.label}" if rating in (1, 5) else str(rating.value),
            "hint": RATING_HINTS[rating.value],
        }
        for rating in Rating
        if (rating >= Rating.WITH_EFFORT) == recalled
    ]
    for recalled in (False, True)
]


@lru_cache(maxsize=1024)
def _rating_buttons(intervals: tuple[str, ...]) -> str:
    """The five rating buttons, given the interval each would schedule (rating 1 first).

    The buttons differ from flip to flip only in those intervals, and flips repeat a few
    sets of them (every new card's are the same), so each set is rendered once per
    process: the buttons' many small values were half of a flip's template time."""
    groups = [
        [{**button, "interval": intervals[button["rating"] - 1]} for button in group]
        for group in RATING_GROUPS
    ]
    return render_to_string("decks/study.html#rating_buttons", {"rating_groups": groups})


def _get_deck_for_user(request: HttpRequest, deck_id: int) -> Deck:
    return get_object_or_404(Deck.objects.visible_to(request.user), pk=deck_id)


def _study_deck(
    request: HttpRequest, deck_id: int, card_id: int | None = None
) -> tuple[Deck, StudySettings, CardProgress | None]:
    """The deck (as _get_deck_for_user), the student's settings and, given a card of the
    deck, the student's progress on it, in one query."""
    found = queue.study_deck(request.user, deck_id, card_id)
    if found is None:
        raise Http404("No deck matches the given query.")
    return found


def _signup_allowed(request: HttpRequest) -> bool:
    """At most SIGNUP_RATE_PER_HOUR sign-ups from one address per clock hour, counted in
    the shared cache so that every app server sees the same count."""
    hour = timezone.now().strftime("%Y%m%d%H")
    key = f"signup:{request.META.get('REMOTE_ADDR', '')}:{hour}"
    cache.add(key, 0, timeout=3600)
    return cache.incr(key) <= settings.SIGNUP_RATE_PER_HOUR


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if not settings.SIGNUP_ENABLED:
        raise Http404("Sign-up is closed. Ask your teacher for an account.")
    if request.user.is_authenticated:
        return redirect("home")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and not _signup_allowed(request):
        form.add_error(None, "Too many sign-ups from your network. Please try again in an hour.")
        return render(request, "registration/signup.html", {"form": form}, status=429)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="studyapp.backends.UserBackend")
        messages.success(request, f"Welcome, {user.username}! Pick a deck to start studying.")
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """For load balancers: 200 only when the database answers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return HttpResponse("database unavailable\n", status=503, content_type="text/plain")
    return HttpResponse("ok\n", content_type="text/plain")


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    study_settings = StudySettings.for_user(request.user)
    # Only what the list shows: the rest of each row (and the owner's) would be read and
    # converted for every deck.
    decks = list(
        Deck.objects.visible_to(request.user)
        .with_card_counts()
        .select_related("owner")
        .only("title", "is_public", "owner__username")
    )
    done = queue.done_today(request.user, study_settings, now)
    summaries = stats.deck_summaries(request.user, decks, study_settings, now, done.new)
    prefix = get_script_prefix()
    rows = [(deck, summaries[deck.pk], _deck_urls(deck.pk, prefix)) for deck in decks]
    return render(request, "decks/home.html", {"rows": rows})


@login_required
@require_GET
def deck_detail(request: HttpRequest, deck_id: int) -> HttpResponse:
    deck = _get_deck_for_user(request, deck_id)
    # The table lists every card; cards added since the last visit join as "new".
    services.ensure_progress(request.user, deck)
    sort = request.GET.get("sort", "hardest")
    if sort not in stats.CARD_SORTS:
        sort = "hardest"
    parameters = StudySettings.for_user(request.user).fsrs_parameters
    now = timezone.now()
    table = stats.card_table(request.user, deck, now, sort, parameters)
    page = Paginator(table, 100).get_page(request.GET.get("page"))
    page.object_list = stats.card_table_rows(page.object_list, now, parameters)
    return render(
        request,
        "decks/deck_detail.html",
        {"deck": deck, "page": page, "sort": sort, "sorts": SORT_LABELS},
    )


SORT_LABELS = {
    "hardest": "Hardest first",
    "position": "Deck order",
    "due": "Due soonest",
    "recall": "Lowest predicted recall",
    "rating": "Lowest last rating",
    "reviews": "Most reviews",
    "lapses": "Most lapses",
}


@login_required
@require_http_methods(["GET", "POST"])
def study_settings(request: HttpRequest) -> HttpResponse:
    instance = StudySettings.for_user(request.user)
    form = StudySettingsForm(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Your study settings are saved.")
        return redirect("study_settings")
    return render(request, "decks/settings.html", {"form": form, "model": instance})


@login_required
@require_GET
def student_stats(request: HttpRequest) -> HttpResponse:
    study_settings = StudySettings.for_user(request.user)
    figures = stats.student_stats(request.user, study_settings, timezone.now())
    return render(request, "decks/stats.html", {"stats": figures, "settings": study_settings})


@login_required
@require_GET
def class_dashboard(request: HttpRequest, deck_id: int) -> HttpResponse:
    """Staff only: how every student is doing in a deck, and the cards the class finds
    hardest. ``?download=students`` or ``?download=cards`` gives the table as CSV."""
    if not request.user.is_staff:
        raise Http404("No such page.")
    deck = get_object_or_404(Deck.objects.with_card_counts(), pk=deck_id)
    sort = request.GET.get("sort", "behind")
    students = stats.class_students(deck, deck.card_count, timezone.now(), sort)
    cards = stats.hardest_cards(deck)
    download = request.GET.get("download")
    if download in ("students", "cards"):
        if download == "students":
            header = exporters.CLASS_STUDENT_COLUMNS
            rows = exporters.class_student_rows(students)
        else:
            header = exporters.HARD_CARD_COLUMNS
            rows = exporters.hard_card_rows(cards)
        response = StreamingHttpResponse(
            exporters.csv_lines(header, rows), content_type="text/csv; charset=utf-8"
        )
        name = f"studyapp-class-{download}-{slugify(deck.title)[:60] or 'deck'}"
        response["Content-Disposition"] = (
            f'attachment; filename="{name}-{timezone.now():%Y-%m-%d}.csv"'
        )
        return response
    return render(
        request,
        "decks/class_dashboard.html",
        {
            "deck": deck,
            "students": students,
            "cards": cards,
            "sort": sort,
            "sorts": CLASS_SORT_LABELS,
        },
    )


CLASS_SORT_LABELS = {
    "behind": "Falling behind",
    "name": "Name",
    "studied": "Cards studied",
    "mastery": "Lowest mastery",
    "recall": "Lowest predicted recall",
    "overdue": "Most overdue",
    "reviews": "Most reviews (7 days)",
    "active": "Least recently active",
}


@login_required
@require_POST
def fit_memory_model(request: HttpRequest) -> HttpResponse:
    """Fit the student's own memory model now, or queue it when the history is large."""
    now = timezone.now()
    if (
        Review.objects.filter(user=request.user).count()
        > settings.STUDYAPP_FIT_IN_REQUEST_MAX_REVIEWS
    ):
        services.request_model_fit(request.user, now)
        messages.info(
            request,
            "Your history is large, so fitting runs in the background tonight. "
            "Your model shows here once it is done.",
        )
    else:
        result = memory_model.fit(request.user, StudySettings.for_user(request.user))
        services.save_model_fit(request.user, result, now)
        (messages.success if result.adopted else messages.info)(request, result.message)
    return redirect("study_settings")


# --- Study flow ------------------------------------------------------------------------
#
# One page, /decks/<id>/study/, whose #study region is swapped by htmx at each step:
# question -> (flip) answer with rating buttons -> (rate) next question; undo goes back.
# Without JavaScript the same URLs answer full pages, and rate/undo redirect to the page.


def _card_token(progress: CardProgress, shown_at) -> str:
    """A signed note of which card was shown, at which review count, and when."""
    return signing.dumps(
        [progress.card_id, progress.reps, int(shown_at.timestamp() * 1000)], salt=CARD_TOKEN_SALT
    )


def _read_card_token(token: str) -> tuple[int, int, int] | None:
    try:
        card_id, reps, shown_ms = signing.loads(token, salt=CARD_TOKEN_SALT, max_age=86400)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    return card_id, reps, shown_ms


def _study_context(
    request: HttpRequest,
    deck: Deck,
    now: datetime,
    *,
    card_id: int | None = None,
    study_settings: StudySettings | None = None,
    queue_reads: list | None = None,
) -> dict:
    """The study page's context. ``queue_reads``: the queue's counts and next card,
    already read (queue.counts_read and next_card_read, as the rate view reads them with
    its write)."""
    if queue_reads:
        (_done, counts), progress = (read.result for read in queue_reads)
    else:
        study_settings = study_settings or StudySettings.for_user(request.user)
        done, counts = queue.counts(request.user, deck, study_settings, now)
        progress = None
        if card_id is not None:
            progress = queue.shown_card(request.user, deck, card_id)
        if progress is None:
            progress = queue.next_card(request.user, deck, study_settings, now, done)
    context = {
        "deck": deck,
        "counts": counts,
        "progress": progress,
        "revealed": False,
    }
    if progress is None:
        context["next_due"] = queue.next_due(request.user, deck)
    else:
        context["token"] = _card_token(progress, now)
    return context


@lru_cache(maxsize=1024)
def _deck_urls(deck_id: int, script_prefix: str) -> dict[str, str]:
    """A deck's links, for the study page and the home page's list. They never change
    while the app runs, and reversing them on every render took a tenth of a study
    request (and of the home page, which lists every deck)."""
    names = {
        "deck": "deck_detail",
        "study": "study",
        "flip": "study_flip",
        "rate": "study_rate",
        "undo": "study_undo",
        "class": "class_dashboard",
    }
    return {key: reverse(name, kwargs={"deck_id": deck_id}) for key, name in names.items()}


def _render_study(
    request: HttpRequest, context: dict, status: int = 200, partial: str = "study"
) -> HttpResponse:
    template = f"decks/study.html#{partial}" if request.htmx else "decks/study.html"
    context["urls"] = _deck_urls(context["deck"].pk, get_script_prefix())
    if not request.htmx:
        context["first_time"] = not Review.objects.filter(user=request.user).exists()
    return render(request, template, context, status=status)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def study(request: HttpRequest, deck_id: int) -> HttpResponse:
    deck, study_settings, _ = _study_deck(request, deck_id)
    if not request.htmx:
        services.ensure_progress(request.user, deck)
    card_id = request.GET.get("card")
    context = _study_context(
        request,
        deck,
        timezone.now(),
        card_id=int(card_id) if card_id and card_id.isdigit() else None,
        study_settings=study_settings,
    )
    return _render_study(request, context)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def flip(request: HttpRequest, deck_id: int) -> HttpResponse:
    token = request.GET.get("token", "")
    shown = _read_card_token(token)
    deck, study_settings, progress = _study_deck(request, deck_id, shown[0] if shown else None)
    if shown is None:
        return HttpResponseBadRequest("This study link is broken or too old. Reload the deck.")
    if progress is None:
        raise Http404("That card is not in this deck.")
    now = timezone.now()
    intervals = scheduler.preview(
        services.progress_state(progress), now, services.scheduler_for(study_settings, fuzz=False)
    )
    context = {
        "deck": deck,
        "progress": progress,
        "revealed": True,
        "token": token,
        "rating_buttons": _rating_buttons(
            tuple(scheduler.format_interval(intervals[rating]) for rating in Rating)
        ),
    }
    if request.htmx:  # the card alone: the page's counts still stand (nothing was rated)
        return _render_study(request, context, partial="card")
    context["counts"] = queue.counts(request.user, deck, study_settings, now)[1]
    return _render_study(request, context)


@login_required
@require_POST
@vary_on_headers("HX-Request")
def rate(request: HttpRequest, deck_id: int) -> HttpResponse:
    shown = _read_card_token(request.POST.get("token", ""))
    deck, study_settings, progress = _study_deck(request, deck_id, shown[0] if shown else None)
    if shown is None:
        return HttpResponseBadRequest("This rating form is broken or too old. Reload the deck.")
    card_id, reps, shown_ms = shown
    try:
        rating = scheduler.validate_rating(int(request.POST.get("rating", "")))
    except (ValueError, scheduler.InvalidRating):
        return HttpResponseBadRequest("A rating must be a whole number from 1 to 5.")
    now = timezone.now()
    taken = now - datetime.fromtimestamp(shown_ms / 1000, tz=UTC)
    taken = min(max(taken, timedelta(0)), MAX_TIME_TAKEN)
    # On PostgreSQL, what the next question shows is read with the write: one round trip
    # for the three statements. Elsewhere (SQLite, or statements not prepared: see
    # rawsql.pipelines) the reads follow as on any render, and today's reviews are
    # counted once instead of twice.
    following = []
    if request.htmx and pipelines():
        following = [
            queue.counts_read(request.user, deck, study_settings, now),
            queue.next_card_read(request.user, deck, study_settings, now),
        ]
    try:
        services.record_review(
            request.user,
            card_id,
            rating,
            now,
            time_taken_ms=int(taken.total_seconds() * 1000),
            expected_reps=reps,
            study_settings=study_settings,
            deck_id=deck.pk,
            progress=progress,
            then=following,
        )
    except services.CardNotInDeck:
        raise Http404("That card is not in this deck.") from None
    except services.StaleRating:
        messages.info(request, "That card was already rated, so this rating was not counted again.")
        following = []  # they may not have run: the page reads the queue itself
    if not request.htmx:
        return redirect("study", deck_id=deck.pk)
    context = _study_context(
        request, deck, now, study_settings=study_settings, queue_reads=following
    )
    return _render_study(request, context)


@login_required
@require_POST
@vary_on_headers("HX-Request")
def undo(request: HttpRequest, deck_id: int) -> HttpResponse:
    deck, study_settings, _ = _study_deck(request, deck_id)
    undone = services.undo_last_review(request.user, deck)
    if undone is None:
        messages.info(request, "There is nothing to undo in this deck.")
        card_id = None
    else:
        messages.success(request, "Your last rating was undone.")
        card_id = undone.card_id
    if not request.htmx:
        url = reverse("study", kwargs={"deck_id": deck.pk})
        return redirect(f"{url}?card={card_id}" if card_id else url)
    return _render_study(
        request,
        _study_context(
            request, deck, timezone.now(), card_id=card_id, study_settings=study_settings
        ),
    )


# --- Deck import and export -------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def import_deck(request: HttpRequest) -> HttpResponse:
    """A student uploads a deck file; it becomes their own private deck. An Anki package
    brings the student's review history with it."""
    form = DeckImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            deck, summary = services.import_upload(
                form.read_file(),
                format=form.cleaned_data["format"] or None,
                title=form.cleaned_data["title"] or None,
                owner=request.user,
                now=timezone.now(),
            )
        except (DeckFormatError, PackageError) as error:
            form.add_error("file", f"{error} Nothing was imported.")
        else:
            messages.success(request, summary)
            return redirect("deck_detail", deck_id=deck.pk)
    status = 400 if form.errors else 200
    return render(request, "decks/import.html", {"form": form}, status=status)


@login_required
@require_GET
def export_deck(request: HttpRequest, deck_id: int, fmt: str) -> HttpResponse:
    """The deck's cards as CSV (front, back, tags) or in the numbered Q/A text format;
    importing the file gives the same cards back."""
    deck = _get_deck_for_user(request, deck_id)
    cards = list(deck.cards.order_by("position", "id").values_list("front", "back", "tags"))
    if fmt == "csv":
        content, content_type = render_csv(cards), "text/csv; charset=utf-8"
    else:
        try:
            content = render_seed_text(deck.title, [(front, back) for front, back, _ in cards])
        except ValueError as error:
            return HttpResponse(
                f"This deck cannot be written in the text format: {error}. "
                "Export it as CSV instead.",
                status=409,
                content_type="text/plain; charset=utf-8",
            )
        content_type = "text/plain; charset=utf-8"
    response = HttpResponse(content, content_type=content_type)
    filename = f"{slugify(deck.title)[:60] or 'deck'}.{fmt}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- Progress export ----------------------------------------------------------------------


def _ids(request: HttpRequest, name: str) -> list[int] | None:
    """Repeated integer query parameter; None when absent, ValueError when malformed."""
    values = request.GET.getlist(name)
    return [int(value) for value in values] if values else None


@login_required
@require_GET
def export_progress(request: HttpRequest, kind: str) -> HttpResponse:
    """The reviews or cards CSV. Students get their own rows only; staff may ask for
    everyone's (``scope=all``) or chosen students' (``user=ID``), filtered by ``deck=ID``."""
    try:
        deck_ids = _ids(request, "deck")
        user_ids = _ids(request, "user")
    except ValueError:
        return HttpResponseBadRequest("deck and user must be numeric ids.")
    everyone = request.GET.get("scope") == "all"
    if (everyone or user_ids) and not request.user.is_staff:
        raise Http404("Only staff can export other students' progress.")
    decks = Deck.objects.visible_to(request.user)
    if deck_ids:
        decks = decks.filter(pk__in=deck_ids)
        if len(decks) != len(set(deck_ids)):
            raise Http404("No such deck.")
    now = timezone.now()
    if not (everyone or user_ids):
        students = get_user_model().objects.filter(pk=request.user.pk)
        if kind == "reviews":
            rows = Review.objects.filter(user=request.user)
            if deck_ids:
                rows = rows.in_decks(decks)
            # Otherwise review_csv leaves out the few reviews of decks no longer visible,
            # cheaper than the database checking each row's card (SQLite: 0.3 s per 1M).
            rows = rows.for_export()
        else:
            rows = decks.cards_for_export(request.user)
    else:
        students = get_user_model().objects.all()
        if user_ids:
            students = students.filter(pk__in=user_ids)
        if kind == "reviews":
            rows = Review.objects.in_decks(decks)
        else:
            rows = CardProgress.objects.filter(deck__in=decks)
        if user_ids:
            rows = rows.filter(user__in=students)
        rows = rows.for_export()
    what = decks[0].title if deck_ids and len(deck_ids) == 1 else "all-decks"
    filename = f"studyapp-{kind}-{slugify(what)[:60] or 'deck'}-{now:%Y-%m-%d}.csv"
    if kind == "reviews":
        body = exporters.review_csv(
            stream_rows(rows),
            dict(students.values_list("id", "username")),
            stream_rows(
                Card.objects.filter(deck__in=decks).values_list("id", "deck__title", "front")
            ),
        )
    else:
        body = exporters.cards_csv(stream_rows(rows), now)
    response = StreamingHttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
