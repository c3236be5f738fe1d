from __future__ import annotations

import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.utils import timezone
from tqdm import tqdm

from decks import memory_model, services
from decks.models import StudySettings


class Command(BaseCommand):
    help = "Fit students' own FSRS parameters from their review history (decks.memory_model)."

    def add_arguments(self, parser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", help="One student (username).")
        who.add_argument("--all", action="store_true", help="Every student with enough history.")
        who.add_argument(
            "--pending", action="store_true", help="Students who asked for a fit (queued)."
        )
        parser.add_argument("--min-reviews", type=int, help="Minimum reviews (default: setting).")
        parser.add_argument(
            "--reschedule",
            action="store_true",
            help="Also recompute every card's memory state and due date with the new model.",
        )

    def handle(self, *args, user, all, pending, min_reviews, reschedule, **options) -> None:
        started = time.monotonic()
        if min_reviews is not None:
            settings.STUDYAPP_FIT_MIN_REVIEWS = min_reviews
        User = get_user_model()
        if user:
            try:
                users = [User.objects.get(username=user)]
            except User.DoesNotExist:
                raise CommandError(f"No user named {user!r}.") from None
        elif pending:
            users = list(User.objects.filter(study_settings__fit_requested_at__isnull=False))
        else:
            users = list(
                User.objects.annotate(n=Count("review"))
                .filter(n__gte=settings.STUDYAPP_FIT_MIN_REVIEWS)
                .order_by("username")
            )
        adopted = 0
        for student in tqdm(users, unit=" students", disable=None, file=sys.stderr):
            study_settings = StudySettings.for_user(student)
            result = memory_model.fit(student, study_settings)
            study_settings = services.save_model_fit(student, result, timezone.now())
            adopted += result.adopted
            self.stdout.write(f"{student.username}: {result.message}")
            if reschedule and result.adopted:
                changed = services.reschedule(student, study_settings)
                self.stdout.write(f"{student.username}: rescheduled {changed} cards.")
        self.stdout.write(
            f"Fitted {len(users)} student(s), adopted {adopted} model(s),"
            f" in {time.monotonic() - started:.1f}s."
        )
