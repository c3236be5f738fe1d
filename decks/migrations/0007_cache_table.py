from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    """The database cache's table (settings.CACHES): the stats page and the class
    dashboard keep their slow figures there. migrate does not make it by itself, and
    without it those pages answered 503 on a new install."""
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):

    dependencies = [
        ("decks", "0006_card_deck_id"),
    ]

    operations = [
        migrations.RunPython(create_cache_table, migrations.RunPython.noop),
    ]
