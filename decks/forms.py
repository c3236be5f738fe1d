from __future__ import annotations

import functools
import zoneinfo

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm

from decks.importers import check_size
from decks.models import Deck, StudySettings


class SignupForm(UserCreationForm):
    pass


@functools.cache
def _time_zone_choices() -> list[tuple[str, str]]:
    # Read from the system's time zone database once, not on every settings page.
    return [(name, name.replace("_", " ")) for name in sorted(zoneinfo.available_timezones())]


class StudySettingsForm(forms.ModelForm):
    time_zone = forms.TypedChoiceField(choices=_time_zone_choices)
    desired_retention = forms.FloatField(
        min_value=0.70,
        max_value=0.99,
        widget=forms.NumberInput(attrs={"step": "0.01"}),
        help_text=StudySettings._meta.get_field("desired_retention").help_text,
    )

    class Meta:
        model = StudySettings
        fields = [
            "desired_retention",
            "new_per_day",
            "max_reviews_per_day",
            "time_zone",
            "day_start_hour",
        ]


FORMAT_CHOICES = [
    ("", "Detect automatically"),
    ("seed", "Numbered Q/A text (1, Q, question, A, answer, rating scale)"),
    ("csv", "CSV: front, back, tags"),
    ("tsv", "TSV (tab-separated): front, back, tags"),
    ("anki", "Anki: Notes in Plain Text (.txt)"),
    ("quizlet", "Quizlet export: term, tab, definition"),
]
# Anki packages (.apkg, .colpkg) are recognised by their content whatever is chosen here.


class DeckImportForm(forms.Form):
    file = forms.FileField()
    format = forms.ChoiceField(choices=FORMAT_CHOICES, required=False)
    title = forms.CharField(
        max_length=200,
        required=False,
        help_text="Leave empty to use the file's title line (or “Imported deck”).",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        megabytes = settings.STUDYAPP_MAX_IMPORT_BYTES / 1024 / 1024
        package_mb = settings.STUDYAPP_MAX_PACKAGE_BYTES / 1024 / 1024
        self.fields["file"].help_text = (
            f"A text deck (UTF-8, at most {megabytes:g} MB and "
            f"{settings.STUDYAPP_MAX_IMPORT_CARDS:,} cards) or an Anki package "
            f"(.apkg or .colpkg, at most {package_mb:g} MB)."
        )

    def read_file(self) -> bytes:
        """The upload's bytes; an oversized file raises DeckFormatError unread. (Text decks
        have a smaller limit, checked when they are decoded.)"""
        upload = self.cleaned_data["file"]
        limit = max(settings.STUDYAPP_MAX_IMPORT_BYTES, settings.STUDYAPP_MAX_PACKAGE_BYTES)
        check_size(upload.size, max_bytes=limit)
        return upload.read()


class AdminDeckImportForm(DeckImportForm):
    is_public = forms.BooleanField(
        required=False, initial=True, label="Public (every student can study it)"
    )


class ProgressExportForm(forms.Form):
    kind = forms.ChoiceField(
        choices=[("reviews", "One row per review"), ("cards", "One row per student and card")]
    )
    decks = forms.ModelMultipleChoiceField(
        queryset=Deck.objects.all(), required=False, help_text="None selected: every deck."
    )
    users = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.order_by("username"),
        required=False,
        label="Students",
        help_text="None selected: every student.",
    )
