"""A memory model fitted to one student: FSRS parameters from their own review history.

fsrs-rs-python fits the 21 FSRS-6 parameters (no torch). We only adopt them when they
predict the student's *held-out* reviews better than the defaults: the items are split in
time order, the fit is made on the earlier 80 % and both parameter sets are scored (log
loss, RMSE over bins) on the later 20 %. If the fit wins, the parameters are refitted on
the whole history and used from then on.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import fsrs
import fsrs_rs_python as fsrs_rs
from django.conf import settings
from django.db.models import Count

from decks.models import Review, StudySettings

# Our 1–5 scale to the optimizer's 1–4 grades: the same table as decks.scheduler.
RATING_TO_GRADE = {1: 1, 2: 1, 3: 2, 4: 3, 5: 4}
TEST_SHARE = 0.2


@dataclass
class FitResult:
    adopted: bool
    message: str
    reviews: int
    cards: int
    parameters: list[float] | None = None
    log_loss: float | None = None
    rmse: float | None = None
    default_log_loss: float | None = None
    default_rmse: float | None = None
    items: int = 0
    notes: list[str] = field(default_factory=list)


def study_day(moment: datetime, tz: zoneinfo.ZoneInfo, day_start_hour: int) -> int:
    """The study day a moment falls on, as a day number (elapsed days count whole days,
    the way the student lives them, as Anki does)."""
    return (moment.astimezone(tz) - timedelta(hours=day_start_hour)).date().toordinal()


def build_items(
    rows: Iterable[tuple[int, datetime, int]], tz: zoneinfo.ZoneInfo, day_start_hour: int
) -> list[tuple[datetime, fsrs_rs.FSRSItem]]:
    """Training items from (card_id, reviewed_at, rating) rows ordered by card then time:
    one item per review on a later day than the card's previous review, holding the
    card's history up to it. Same-day reviews stay in the histories but are not targets
    themselves: the model predicts recall across days."""
    items: list[tuple[datetime, fsrs_rs.FSRSItem]] = []
    card, history, last_day = None, [], None
    for card_id, reviewed_at, rating in rows:
        day = study_day(reviewed_at, tz, day_start_hour)
        if card_id != card:
            card, history, last_day = card_id, [], day
        elapsed = day - last_day
        history.append(fsrs_rs.FSRSReview(RATING_TO_GRADE[rating], elapsed))
        last_day = day
        if len(history) > 1 and elapsed > 0:
            items.append((reviewed_at, fsrs_rs.FSRSItem(list(history))))
    return items


def valid_parameters(parameters: list[float]) -> bool:
    """21 numbers that the scheduler (py-fsrs) accepts."""
    if len(parameters) != 21:
        return False
    try:
        fsrs.Scheduler(parameters=parameters)
    except ValueError:
        return False
    return True


def fit(user, study_settings: StudySettings) -> FitResult:
    mine = Review.objects.filter(user=user)
    totals = mine.aggregate(reviews=Count("id"), cards=Count("card_id", distinct=True))
    reviews, cards = totals["reviews"], totals["cards"]
    min_reviews = settings.STUDYAPP_FIT_MIN_REVIEWS
    min_cards = settings.STUDYAPP_FIT_MIN_CARDS
    if reviews < min_reviews or cards < min_cards:
        missing = []
        if reviews < min_reviews:
            missing.append(
                f"{min_reviews - reviews} more review{'s' if min_reviews - reviews != 1 else ''}"
            )
        if cards < min_cards:
            missing.append(
                f"reviews of {min_cards - cards} more card{'s' if min_cards - cards != 1 else ''}"
            )
        return FitResult(
            adopted=False,
            reviews=reviews,
            cards=cards,
            message=(
                f"Not enough history yet to fit your own model: {' and '.join(missing)} "
                f"needed (at least {min_reviews} reviews of {min_cards} cards). "
                "Until then the scheduler uses FSRS's default parameters."
            ),
        )
    rows = mine.order_by("card_id", "reviewed_at", "id").values_list(
        "card_id", "reviewed_at", "rating"
    )
    tz = zoneinfo.ZoneInfo(study_settings.time_zone)
    items = build_items(rows.iterator(chunk_size=10_000), tz, study_settings.day_start_hour)
    return evaluate_and_fit(items, reviews=reviews, cards=cards)


def evaluate_and_fit(
    items: list[tuple[datetime, fsrs_rs.FSRSItem]], *, reviews: int, cards: int
) -> FitResult:
    """Fit on the earlier 80 % of the items, score fit and defaults on the later 20 %, and
    if the fit wins, refit on everything."""
    items.sort(key=lambda pair: pair[0])
    split = int(len(items) * (1 - TEST_SHARE))
    train = [item for _, item in items[:split]]
    test = [item for _, item in items[split:]]
    result = FitResult(adopted=False, message="", reviews=reviews, cards=cards, items=len(items))
    if not train or not test:
        result.message = "Your reviews are all on the same day; come back after a few days."
        return result

    defaults = fsrs_rs.FSRS(fsrs_rs.DEFAULT_PARAMETERS)
    on_train = defaults.compute_parameters(train)
    default_score = defaults.evaluate(test)
    fitted_score = fsrs_rs.FSRS(on_train).evaluate(test)
    result.default_log_loss, result.default_rmse = default_score.log_loss, default_score.rmse_bins
    result.log_loss, result.rmse = fitted_score.log_loss, fitted_score.rmse_bins
    if fitted_score.log_loss >= default_score.log_loss:
        result.message = (
            f"Fitted on {reviews} reviews, but your own model did not predict your later reviews "
            f"better than the defaults (log loss {fitted_score.log_loss:.3f} vs "
            f"{default_score.log_loss:.3f}), so the defaults stay."
        )
        return result
    parameters = [round(p, 6) for p in defaults.compute_parameters([i for _, i in items])]
    if not valid_parameters(parameters):
        result.message = "The fitted parameters were out of range, so the defaults stay."
        return result
    result.adopted, result.parameters = True, parameters
    result.message = (
        f"Fitted on {reviews} reviews: predicts your recall with log loss "
        f"{fitted_score.log_loss:.3f} (defaults: {default_score.log_loss:.3f})."
    )
    return result
