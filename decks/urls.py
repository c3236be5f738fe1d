from __future__ import annotations

from django.urls import path, re_path

from decks import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("settings/", views.study_settings, name="study_settings"),
    path("settings/fit/", views.fit_memory_model, name="fit_memory_model"),
    path("stats/", views.student_stats, name="stats"),
    path("decks/<int:deck_id>/class/", views.class_dashboard, name="class_dashboard"),
    re_path(
        r"^export/(?P<kind>reviews|cards)\.csv$", views.export_progress, name="export_progress"
    ),
    path("decks/import/", views.import_deck, name="import_deck"),
    path("decks/<int:deck_id>/", views.deck_detail, name="deck_detail"),
    re_path(
        r"^decks/(?P<deck_id>[0-9]+)/export\.(?P<fmt>csv|txt)$",
        views.export_deck,
        name="export_deck",
    ),
    path("decks/<int:deck_id>/study/", views.study, name="study"),
    path("decks/<int:deck_id>/study/flip/", views.flip, name="study_flip"),
    path("decks/<int:deck_id>/study/rate/", views.rate, name="study_rate"),
    path("decks/<int:deck_id>/study/undo/", views.undo, name="study_undo"),
]
