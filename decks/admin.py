from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from decks.apkg import PackageError
from decks.forms import AdminDeckImportForm, ProgressExportForm
from decks.importers import DeckFormatError
from decks.models import Card, CardProgress, Deck, Review, StudySettings
from decks.services import import_upload


class CardInline(admin.TabularInline):
    model = Card
    fields = ["position", "front", "back", "tags"]
    ordering = ["position", "id"]
    extra = 1


@admin.register(Deck)
class DeckAdmin(admin.ModelAdmin):
    list_display = ["title", "owner", "is_public", "card_count", "updated_at", "links"]
    list_filter = ["is_public", ("owner", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["title", "description", "cards__front", "cards__back"]
    list_select_related = ["owner"]
    inlines = [CardInline]
    actions = ["make_public", "make_private", "export_reviews", "export_cards"]

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).annotate(card_count=Count("cards"))

    @admin.display(description="cards", ordering="card_count")
    def card_count(self, deck: Deck) -> int:
        return deck.card_count

    @admin.display(description="download, class")
    def links(self, deck: Deck) -> str:
        return format_html(
            '<a href="{}">CSV</a> · <a href="{}">text</a> · <a href="{}">class dashboard</a>',
            reverse("export_deck", args=[deck.pk, "csv"]),
            reverse("export_deck", args=[deck.pk, "txt"]),
            reverse("class_dashboard", args=[deck.pk]),
        )

    @admin.action(description="Make the selected decks public")
    def make_public(self, request: HttpRequest, queryset) -> None:
        updated = queryset.update(is_public=True)
        self.message_user(request, f"{updated} deck(s) are now public.", messages.SUCCESS)

    @admin.action(description="Make the selected decks private")
    def make_private(self, request: HttpRequest, queryset) -> None:
        updated = queryset.update(is_public=False)
        self.message_user(request, f"{updated} deck(s) are now private.", messages.SUCCESS)

    @admin.action(description="Export students' reviews of the selected decks (CSV)")
    def export_reviews(self, request: HttpRequest, queryset) -> HttpResponse:
        return _export_redirect("reviews", deck=queryset.values_list("pk", flat=True))

    @admin.action(description="Export students' card progress in the selected decks (CSV)")
    def export_cards(self, request: HttpRequest, queryset) -> HttpResponse:
        return _export_redirect("cards", deck=queryset.values_list("pk", flat=True))

    def get_urls(self):
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="decks_deck_import",
            ),
            path(
                "export-progress/",
                self.admin_site.admin_view(self.export_view),
                name="decks_deck_export_progress",
            ),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """Pick decks and students, then download everyone's progress as CSV."""
        form = ProgressExportForm(request.GET or None)
        if request.GET and form.is_valid():
            return _export_redirect(
                form.cleaned_data["kind"],
                deck=[deck.pk for deck in form.cleaned_data["decks"]],
                user=[user.pk for user in form.cleaned_data["users"]],
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "title": "Export students' progress",
        }
        return TemplateResponse(request, "admin/decks/deck/export_progress.html", context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return redirect("admin:index")
        form = AdminDeckImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                deck, summary = import_upload(
                    form.read_file(),
                    format=form.cleaned_data["format"] or None,
                    title=form.cleaned_data["title"] or None,
                    is_public=form.cleaned_data["is_public"],
                    now=timezone.now(),
                )
            except (DeckFormatError, PackageError) as error:
                form.add_error("file", f"{error} Nothing was imported.")
            else:
                self.message_user(request, summary, messages.SUCCESS)
                return redirect(reverse("admin:decks_deck_change", args=[deck.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "title": "Import a deck",
        }
        return TemplateResponse(request, "admin/decks/deck/import.html", context)


def _export_redirect(kind: str, *, deck=(), user=()) -> HttpResponse:
    query = urlencode({"scope": "all", "deck": list(deck), "user": list(user)}, doseq=True)
    return redirect(f"{reverse('export_progress', args=[kind])}?{query}")


@admin.register(Card)
class CardAdmin(admin.ModelAdmin):
    list_display = ["front", "deck", "position", "tags", "updated_at"]
    list_filter = [("deck", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["front", "back", "tags"]
    list_select_related = ["deck"]
    ordering = ["deck", "position", "id"]

    def get_readonly_fields(self, request: HttpRequest, obj: Card | None = None):
        # Students' progress rows keep a copy of the card's deck; moving it would split them.
        return ["deck"] if obj is not None else []


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    list_display = ["reviewed_at", "user", "card", "rating", "state_before", "state_after"]
    list_filter = ["rating", "state_before"]
    search_fields = ["user__username", "card__front"]
    list_select_related = ["user", "card"]
    date_hierarchy = "reviewed_at"


@admin.register(CardProgress)
class CardProgressAdmin(ReadOnlyAdmin):
    list_display = ["user", "card", "deck", "state", "due", "reps", "lapses", "last_rating"]
    list_filter = ["state", ("deck", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["user__username", "card__front"]
    list_select_related = ["user", "card", "deck"]


@admin.register(StudySettings)
class StudySettingsAdmin(admin.ModelAdmin):
    list_display = ["user", "desired_retention", "new_per_day", "max_reviews_per_day", "time_zone"]
    search_fields = ["user__username"]


admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class StudentAdmin(UserAdmin):
    actions = ["export_reviews", "export_cards"]

    @admin.action(description="Export the selected users' reviews (CSV)")
    def export_reviews(self, request: HttpRequest, queryset) -> HttpResponse:
        return _export_redirect("reviews", user=queryset.values_list("pk", flat=True))

    @admin.action(description="Export the selected users' card progress (CSV)")
    def export_cards(self, request: HttpRequest, queryset) -> HttpResponse:
        return _export_redirect("cards", user=queryset.values_list("pk", flat=True))
