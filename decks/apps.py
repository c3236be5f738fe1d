from __future__ import annotations

from django.apps import AppConfig
from django.db.backends.signals import connection_created


class DecksConfig(AppConfig):
    name = "decks"

    def ready(self) -> None:
        from decks import rawsql

        connection_created.connect(rawsql.plan_prepared_once, dispatch_uid="plan_prepared_once")
