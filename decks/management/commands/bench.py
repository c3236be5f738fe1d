"""``manage.py bench``: the project's measuring instrument (issue 8).

On the data from ``decks.benchdata`` (a heavy student with 100,000 cards and 1,000,000
reviews, a small one with 100 cards, a student with 50 decks, a class of 100 students,
32 load students), it measures:

A. the scheduler core (``queue.done_today`` + ``queue.next_card`` +
   ``services.record_review``, committed; on PostgreSQL also the rate view's way, the
   write with the next card's read in one round trip) and, in the same run, Anki's v3
   scheduler on a copy of the same deck and history (``bench/anki_side.py``);
B. the study step through the full request path (Django's test client, htmx headers) for
   the heavy and the small student;
C. the study step over HTTP: gunicorn with 2 workers on loopback, driven by wrk with
   ``bench/wrk_study.lua`` (or ``bench/loadgen.py`` where wrk is not installed) at 1, 8
   and 32 concurrent students;
D. the home page (50 decks), deck page, stats page and class dashboard (100 students);
E. the reviews CSV export of 1,000,000 rows (rows/s, peak memory of the process) and
   Anki's revlog written as CSV;
F. importing 10,000- and 50,000-card CSV files;
G. the study page's weight (gzip) on first load and per htmx swap;
H. fitting a student's memory model on 1,000 / 10,000 / 100,000 reviews (issue 9);

and prints one table with medians, p95s, query counts and the issue's targets (pass or
miss), also written to BENCHMARKS.md (one section per database backend).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import platform
import random
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import zoneinfo
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import django
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, connections, transaction
from django.db.models import Max
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from decks import benchdata, memory_model, queue, rawsql, scheduler, services
from decks.models import Card, CardProgress, Deck, Review, State

BASE_DIR = Path(settings.BASE_DIR)
REPORT = BASE_DIR / "BENCHMARKS.md"
BENCH_DIR = BASE_DIR / "bench-data"
PROFILES = BENCH_DIR / "profiles"
# Simulated time between two ratings: a brisk student.
STEP_SECONDS = 4
# During the timed steps, every COUNT_EVERY-th extra step runs untimed under
# CaptureQueriesContext, so query counts cover every queue branch without the capture's
# overhead landing in the timings.
COUNT_EVERY = 10
BACKEND_ORDER = ("sqlite", "postgresql")
SECTIONS = (
    "core", "anki", "path", "pages", "http", "export", "import", "apkg", "weight", "fit",
)  # fmt: skip
HTTP_LEVELS = (1, 8, 32)

# Issue 8's targets, for SQLite; PostgreSQL gets 1.5× the times (and 1/1.5 the rates).
CORE_P50_MS = 0.6
ANKI_RATIO = 3.0
PATH_P50_MS, PATH_P95_MS, PATH_GROWTH = 4.0, 8.0, 1.2
HTTP_STEPS_PER_S, HTTP_P99_MS = 400, 100.0
HOME_MS, DASHBOARD_MS = 25.0, 300.0
EXPORT_ROWS_PER_S, EXPORT_PEAK_MB = 250_000, 150.0
IMPORT_50K_S = 3.0
# Issue 10: an Anki package with its history, small (1,200 notes) and large (100,000).
APKG_SMALL_S, APKG_LARGE_S = 3.0, 120.0
APKG_SMALL_NOTES = 1_200
FIRST_LOAD_KB, SWAP_KB = 40.0, 3.0
PG_SLACK = 1.5


def _slack() -> float:
    return PG_SLACK if connection.vendor == "postgresql" else 1.0


@dataclass
class Session:
    done: list[float] = field(default_factory=list)
    next: list[float] = field(default_factory=list)
    record: list[float] = field(default_factory=list)
    branch: list[str] = field(default_factory=list)
    # branch -> Counter of (done_today, next_card, record_review) query counts
    queries: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    # branch -> part ("done_today", "next_card", "record_review") -> the SQL it ran, as
    # CaptureQueriesContext shows it (parameters inlined), from one counted step
    statements: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    start: datetime = benchdata.NOW
    end: datetime = benchdata.NOW
    # 1-minute load average before and after the timed steps: the machine is shared,
    # and other work on it shows up in the timings.
    load: tuple[float, float] = (0.0, 0.0)


# --- the table --------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table; a row with only a name is a heading."""

    name: str
    median: str = ""
    p95: str = ""
    figure: str = ""  # anything that is not a median/p95 time: rates, sizes, p99
    queries: str = ""
    target: str = ""
    result: str = ""  # "pass", "miss" or ""


def _ms(values: list[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    ordered = sorted(values)
    index = min(max(math.ceil(q * len(ordered)) - 1, 0), len(ordered) - 1)
    return ordered[index] * 1000


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("pass" if ok else "miss")


def timing_row(
    name: str,
    values: list[float],
    *,
    queries: str = "",
    p50_ms: float | None = None,
    p95_ms: float | None = None,
    figure: str = "",
) -> Row:
    median, p95 = _ms(values, 0.5), _ms(values, 0.95)
    slack = _slack()
    targets, checks = [], []
    if p50_ms is not None:
        targets.append(f"p50 ≤ {p50_ms * slack:g} ms")
        checks.append(median <= p50_ms * slack)
    if p95_ms is not None:
        targets.append(f"p95 ≤ {p95_ms * slack:g} ms")
        checks.append(p95 <= p95_ms * slack)
    return Row(
        name,
        f"{median:.3f}" if median < 10 else f"{median:.1f}",
        f"{p95:.3f}" if p95 < 10 else f"{p95:.1f}",
        figure,
        queries,
        ", ".join(targets),
        _verdict(all(checks) if checks else None),
    )


def _query_text(counter: Counter) -> str:
    if not counter:
        return ""
    low, high = min(counter), max(counter)
    return str(low) if low == high else f"{low}–{high}"


def format_table(rows: list[Row]) -> str:
    width = max(len(r.name) for r in rows) + 2
    fig = max([len(r.figure) for r in rows] + [6])
    tgt = max([len(r.target) for r in rows] + [6])
    head = (
        f"{'':{width}}{'p50 ms':>9}{'p95 ms':>9}  {'other':{fig}}  {'queries':>7}  "
        f"{'target':{tgt}}  result"
    )
    lines = [head]
    for r in rows:
        if not (r.median or r.p95 or r.figure or r.target):
            lines.append(r.name)
            continue
        lines.append(
            f"  {r.name:{width - 2}}{r.median:>9}{r.p95:>9}  {r.figure:{fig}}  "
            f"{r.queries:>7}  {r.target:{tgt}}  {r.result}".rstrip()
        )
    return "\n".join(lines)


# --- the pinned clock -------------------------------------------------------------------


class Clock:
    """The time the app sees (``timezone.now``) while the in-process sections run: the
    bench data's NOW, moved on by hand, so every run meets the same queue."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@contextmanager
def pinned(clock: Clock) -> Iterator[Clock]:
    # The app reads the time only through django.utils.timezone.now (views, sessions),
    # so replacing that one attribute moves the whole request path.
    original = timezone.now
    timezone.now = lambda: clock.now
    try:
        yield clock
    finally:
        timezone.now = original


# --- the command ------------------------------------------------------------------------


class Command(BaseCommand):
    help = "Benchmark the study flow, pages, exports and imports (issue 8); see BENCHMARKS.md."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--fresh",
            action="store_true",
            help="Regenerate the bench data and the Anki collection even if cached.",
        )
        parser.add_argument("--steps", type=int, default=2000, help="Timed core steps (2000).")
        parser.add_argument("--warmup", type=int, default=100, help="Untimed steps first (100).")
        parser.add_argument(
            "--path-steps", type=int, default=400, help="Timed test-client study steps (400)."
        )
        parser.add_argument(
            "--http-seconds", type=float, default=15.0, help="Seconds per HTTP load level (15)."
        )
        parser.add_argument(
            "--only",
            default="",
            help=f"Comma-separated sections to run ({', '.join(SECTIONS)}); "
            "BENCHMARKS.md is written only by a full run.",
        )
        parser.add_argument(
            "--explain", action="store_true", help="Print the query plans of the step's queries."
        )
        parser.add_argument(
            "--profile",
            action="store_true",
            help="Also profile the study step and the slow pages with pyinstrument "
            "(bench-data/profiles/).",
        )

    def handle(self, *args, **options) -> None:
        steps, warmup = options["steps"], options["warmup"]
        if steps < 1 or warmup < 0 or options["path_steps"] < 10:
            raise CommandError("--steps ≥ 1, --warmup ≥ 0 and --path-steps ≥ 10, please.")
        only = {s.strip() for s in options["only"].split(",") if s.strip()}
        if only - set(SECTIONS):
            raise CommandError(f"Unknown sections: {', '.join(sorted(only - set(SECTIONS)))}")
        wanted = only or set(SECTIONS)
        started = time.perf_counter()
        # Production runs with DEBUG off: plain cursors and no query log, so the timings
        # do not include Django's debug bookkeeping. The test client's host must pass.
        settings.DEBUG = False
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
        sqlite_file = self._use_bench_database()
        if sqlite_file is not None and options["fresh"]:
            _remove_sqlite(sqlite_file)
        prepare_database()

        data = None if options["fresh"] else benchdata.find_bench_data()
        if data is None:
            data = self._generate(
                sqlite_file, file_is_empty=sqlite_file is not None and options["fresh"]
            )
        else:
            self.stdout.write(f"Using the cached bench data ({_database_label()}).")

        bench = Bench(self, data, options, wanted)
        bench.run()
        report = bench.report()
        self.stdout.write(report)
        if options["explain"] and bench.plans:
            self.stdout.write(_format_plans(bench.plans))
        seconds = time.perf_counter() - started
        if only:
            self.stdout.write(f"Ran {', '.join(sorted(only))} in {seconds:.0f} s (not written).")
            return
        write_section(connection.vendor, _section_title("bench"), report, plans=bench.plans)
        self.stdout.write(f"Benchmark done in {seconds:.0f} s; wrote {REPORT.name}.")

    def _use_bench_database(self) -> Path | None:
        """Point the default database at the bench file unless DATABASE_URL is set.

        Runs before any query: the connection handler reads this very dict when it
        connects, so closing the connections is enough for the change to take.
        """
        if os.environ.get("DATABASE_URL"):
            return None
        path = sqlite_path()
        path.parent.mkdir(exist_ok=True)
        connections.close_all()
        settings.DATABASES["default"]["NAME"] = str(path)
        return path

    def _generate(self, sqlite_file: Path | None, *, file_is_empty: bool) -> benchdata.BenchData:
        if sqlite_file is not None:
            if not file_is_empty:
                # Our own file: starting over is faster than deleting a million rows.
                connections.close_all()
                _remove_sqlite(sqlite_file)
                prepare_database()
        else:
            benchdata.delete_bench_data()
        self.stdout.write(f"Generating the bench data ({_database_label()})…")
        start = time.perf_counter()
        benchdata.tune_for_bulk_load()
        data = benchdata.generate_bench_data()
        benchdata.finish_generation()
        seconds = time.perf_counter() - start
        # Reconnect so the timings run with the normal connection settings, not the
        # bulk-load pragmas.
        connections.close_all()
        self.stdout.write(
            f"generated {benchdata.CARDS:,} cards / {benchdata.REVIEWS:,} reviews (heavy) and "
            "the small, home, class and load students in "
            f"{seconds:.1f} s"
        )
        return data


def prepare_database() -> None:
    """Tables for the models and for the database cache (which migrate does not make)."""
    call_command("migrate", interactive=False, verbosity=0)
    call_command("createcachetable", verbosity=0)


def sqlite_path() -> Path:
    return BENCH_DIR / f"bench-v{benchdata.GENERATOR_VERSION}.sqlite3"


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _database_label() -> str:
    if connection.vendor == "sqlite":
        return f"SQLite {connection.settings_dict['NAME']}"
    return f"{connection.vendor} database {connection.settings_dict['NAME']!r}"


def database_url() -> str:
    """The bench database as a DATABASE_URL, for the processes the bench starts."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    return f"sqlite:///{Path(connection.settings_dict['NAME']).resolve()}"


def production_env(secret_key: str) -> dict[str, str]:
    """Environment for a production-settings process on loopback over plain HTTP."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_DEBUG"}
    env.update(
        DATABASE_URL=database_url(),
        DJANGO_SECRET_KEY=secret_key,
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        # Plain HTTP on loopback: no redirect to https. The cookies stay Secure; the load
        # generator sends them itself, so that does not get in the way.
        DJANGO_SECURE_SSL_REDIRECT="0",
        PYTHONUNBUFFERED="1",
    )
    return env


class Bench:
    """Runs the sections and keeps their rows."""

    def __init__(self, command: Command, data: benchdata.BenchData, options: dict, wanted):
        self.command = command
        self.data = data
        self.options = options
        self.wanted = wanted
        self.rows: dict[str, list[Row]] = {}
        self.details: list[str] = []
        self.plans: list = []
        self.core: Session | None = None
        self.core_rated_then_next: Session | None = None
        self.anki: dict | None = None
        self.load_before = os.getloadavg()[0]

    def log(self, text: str) -> None:
        self.command.stderr.write(text)

    def run(self) -> None:
        for name in SECTIONS:
            if name in self.wanted:
                self.log(f"[bench] {name}…")
                start = time.perf_counter()
                getattr(self, f"section_{name}")()
                self.log(f"[bench] {name} done in {time.perf_counter() - start:.0f} s")

    # --- A. the scheduler core, and Anki's -----------------------------------------------

    def section_core(self) -> None:
        data, steps, warmup = self.data, self.options["steps"], self.options["warmup"]
        self.core = _run_session(data, steps, warmup)
        # The rate view's way on PostgreSQL (rawsql.pipelines): the write and the next
        # card's read in one round trip.
        self.core_rated_then_next = (
            _run_rated_then_next(data, steps, warmup) if rawsql.pipelines() else None
        )
        self.core_extras = _one_offs(data)
        self.core_breakdown = _where_the_time_goes(self.core, data)
        if self.options["explain"]:
            self.plans = _explain(data)

    def section_anki(self) -> None:
        anki_side = _anki_side()
        if isinstance(anki_side, str):
            self.anki = {"error": anki_side}
            return
        steps, warmup = self.options["steps"], self.options["warmup"]
        cached = self._anki_collection()
        meta = anki_side.cached_meta(cached)
        work = BENCH_DIR / "anki-run.anki2"
        col = anki_side.open_work_copy(cached, work)
        try:
            grades = {r: int(scheduler.RATING_TO_FSRS[r]) for r in benchdata.RATINGS}
            ratings = anki_side.ratings_for(warmup + steps, benchdata.SEED + 1)
            # The export first, while the revlog holds exactly the generated history.
            exported = anki_side.AnkiSession()
            anki_side.export_revlog(col, exported)
            session = anki_side.run_session(col, steps, warmup, ratings, grades)
            session.export_rows, session.export_seconds = (
                exported.export_rows,
                exported.export_seconds,
            )
        finally:
            col.close()
            anki_side._remove(work)
        self.anki = {"session": session, "version": anki_side.anki_version(), "meta": meta}

    def _anki_collection(self) -> Path:
        """The cached Anki copy of the heavy student's deck and history, built if missing
        or stale (once per run with --fresh)."""
        from bench import anki_side

        cached = BENCH_DIR / f"anki-v{benchdata.GENERATOR_VERSION}.anki2"
        fresh = self.options["fresh"] and not getattr(self, "anki_rebuilt", False)
        meta = None if fresh else anki_side.cached_meta(cached)
        if not meta or (meta["version"], meta["cards"], meta["revlog"]) != (
            benchdata.GENERATOR_VERSION,
            benchdata.CARDS,
            benchdata.REVIEWS,
        ):
            self.log("Building the Anki collection (cached in bench-data/)…")
            meta = anki_side.build(cached, self._anki_source(), log=self.log)
            self.log(f"built in {meta['build_seconds']:.0f} s")
            self.anki_rebuilt = True
        return cached

    def _anki_source(self):
        from bench import anki_side

        data = self.data
        cards = list(
            Card.objects.filter(deck=data.deck)
            .order_by("position")
            .values_list("position", "front", "back")
        )

        def ts(value: datetime | None) -> float | None:
            return None if value is None else value.timestamp()

        progress = [
            (position, state, step, ts(due), stability, difficulty, reps, lapses, ts(last))
            for position, state, step, due, stability, difficulty, reps, lapses, last in (
                CardProgress.objects.filter(user=data.user, deck=data.deck).values_list(
                    "position", "state", "step", "due", "stability", "difficulty", "reps",
                    "lapses", "last_reviewed_at",
                )
            )
        ]  # fmt: skip
        reviews = (
            (position, rating, at.timestamp(), taken, state_before, days)
            for position, rating, at, taken, state_before, days in (
                Review.objects.filter(user=data.user)
                .order_by("id")
                .values_list(
                    "card__position", "rating", "reviewed_at", "time_taken_ms", "state_before",
                    "scheduled_days",
                )
                .iterator(chunk_size=20_000)
            )
        )  # fmt: skip
        return anki_side.Source(
            cards=cards,
            progress=progress,
            reviews=reviews,
            now=benchdata.NOW.timestamp(),
            version=benchdata.GENERATOR_VERSION,
            grades={r: int(scheduler.RATING_TO_FSRS[r]) for r in benchdata.RATINGS},
        )

    # --- B. the study step through the request path --------------------------------------

    def section_path(self) -> None:
        steps = self.options["path_steps"]
        self.path = {
            "heavy": study_path(self.data.heavy_student, steps),
            "small": study_path(self.data.small, steps),
        }
        # A second, untimed pass with the view's parts wrapped in timers: where a request's
        # time goes. Separate, so the wrappers cost nothing in the figures above.
        self.path_parts = study_path_parts(self.data.heavy_student, 150)
        self.reconnect = reconnect_cost()
        if self.options["profile"]:
            self._profile(
                "study-step-heavy",
                lambda: study_path(self.data.heavy_student, 150, warmup=10, count=False),
            )

    # --- D. pages ------------------------------------------------------------------------

    def section_pages(self) -> None:
        data = self.data
        heavy, small = data.user, data.small.user
        pages = [
            ("home, 50 decks (200 cards each)", data.home, "/", HOME_MS),
            ("home, heavy student (1 deck, 100k cards)", heavy, "/", None),
            ("deck page, 100k cards", heavy, f"/decks/{data.deck.pk}/", None),
            ("deck page, 100 cards", small, f"/decks/{data.small.deck.pk}/", None),
            ("stats page, 1M reviews", heavy, "/stats/", None),
            ("stats page, 100 reviews", small, "/stats/", None),
            (
                f"class dashboard, {benchdata.CLASS_STUDENTS} students",
                data.teacher,
                f"/decks/{data.class_deck.pk}/class/",
                DASHBOARD_MS,
            ),
            ("settings page (not in the issue's list)", heavy, "/settings/", None),
        ]
        self.pages = []
        # The stats page's whole-history figures are cached until the next rating, and a
        # rewound session leaves the same latest rating: start each run without them.
        cache.clear()
        clock = Clock(benchdata.NOW)
        with pinned(clock):
            for name, user, path, target in pages:
                client = Client()
                client.force_login(user)
                timings, queries, statements, first = time_get(client, path)
                self.pages.append((name, timings, queries, target, statements, first))
                # Not the stats page of the heavy student: under the profiler it runs for
                # minutes, and its SQL (below the table) already says where the time goes.
                if self.options["profile"] and 20 < _ms(timings, 0.5) < 5000:
                    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
                    self._profile(f"page-{slug}", lambda c=client, p=path: [c.get(p)])

    # --- C. over HTTP --------------------------------------------------------------------

    def section_http(self) -> None:
        seconds = self.options["http_seconds"]
        students = self.data.load
        with Gunicorn(self.log) as server:
            specs = server.sessions(students)
            # Warm-up: workers import lazily and compile templates on first use.
            run_load(server.port, specs, concurrency=4, seconds=3, students=students)
            self.http = []
            for level in HTTP_LEVELS:
                self.log(f"  {level} concurrent students for {seconds:g} s…")
                self.http.append(run_load(server.port, specs, level, seconds, students))
            self.http_log = server.log_tail()

    # --- E. exports ----------------------------------------------------------------------

    def section_export(self) -> None:
        self.exports = {
            kind: export_in_child(kind, benchdata.USERNAME) for kind in ("reviews", "cards")
        }

    # --- F. imports ----------------------------------------------------------------------

    def section_import(self) -> None:
        self.imports = []
        owner = self.data.small.user
        for cards, repeats in ((10_000, 5), (50_000, 3)):
            content = _csv_deck(cards)
            timings, queries = [], Counter()
            for _ in range(repeats):
                with count_queries() as counter:
                    start = time.perf_counter()
                    deck, parsed = services.import_deck_file(
                        content, format="csv", title=f"Bench import {cards}", owner=owner
                    )
                    timings.append(time.perf_counter() - start)
                queries[counter.count] += 1
                if len(parsed.cards) != cards:
                    raise CommandError(f"Imported {len(parsed.cards)} of {cards} cards.")
                _delete_deck(deck)
            self.imports.append((cards, len(content), timings, queries))
        _vacuum(Card)  # 200,000 deleted card rows

    # --- I. importing an Anki package with its history (issue 10) -----------------------

    def section_apkg(self) -> None:
        """`manage.py import_deck FILE.apkg --owner …`, timed whole (reading, replaying,
        writing, committed), for packages Anki itself exported from the bench collection:
        its first 1,200 notes with their history, and all of it. Each import goes to a
        fresh bench user, deleted afterwards."""
        self.apkg = []
        packages = self._anki_packages()
        if isinstance(packages, str):
            self.apkg_error = packages
            return
        for path, held, repeats in packages:
            timings = []
            for _ in range(repeats):
                name = f"{benchdata.PREFIX}apkg-{secrets.token_hex(4)}"
                get_user_model().objects.create_user(name)
                out = io.StringIO()
                try:
                    start = time.perf_counter()
                    call_command("import_deck", str(path), owner=name, stdout=out)
                    timings.append(time.perf_counter() - start)
                finally:
                    benchdata.delete_bench_data([name])
                replayed = re.search(r"([\d,]+) reviews replayed", out.getvalue())
                if not replayed or int(replayed[1].replace(",", "")) != held["revlog"]:
                    raise CommandError(f"Unexpected import: {out.getvalue().strip()}")
            self.apkg.append((path.name, held, timings))
        _vacuum(Card, CardProgress, Review)  # a million deleted reviews, 100,000 cards

    def _anki_packages(self) -> list[tuple[Path, dict, int]] | str:
        """The two packages (cached in bench-data/ beside the collection they come from),
        with what they hold and how often to import each; or why there are none."""
        anki_side = _anki_side()
        if isinstance(anki_side, str):
            return anki_side
        collection = self._anki_collection()
        packages = []
        for notes, repeats in ((APKG_SMALL_NOTES, 5), (None, 1)):
            path = BENCH_DIR / f"anki-v{benchdata.GENERATOR_VERSION}-{notes or 'all'}.apkg"
            meta = path.with_suffix(".json")
            if self.options["fresh"] or not (path.exists() and meta.exists()):
                self.log(f"Exporting {path.name} with Anki…")
                meta.write_text(json.dumps(anki_side.export_package(collection, path, notes)))
            packages.append((path, json.loads(meta.read_text()), repeats))
        return packages

    # --- H. fitting a student's memory model (issue 9) ----------------------------------

    def section_fit(self) -> None:
        """Fit time for the heavy student's first 1k / 10k / 100k reviews (by card), the
        whole of decks.memory_model's work after reading the rows."""
        self.fits = []
        rows = Review.objects.filter(user=self.data.heavy_student.user).order_by(
            "card_id", "reviewed_at", "id"
        )
        for size in (1_000, 10_000, 100_000):
            history = list(rows.values_list("card_id", "reviewed_at", "rating")[:size])
            start = time.perf_counter()
            items = memory_model.build_items(history, zoneinfo.ZoneInfo("UTC"), 4)
            result = memory_model.evaluate_and_fit(items, reviews=size, cards=0)
            self.fits.append((size, time.perf_counter() - start, result))

    # --- G. page weight ------------------------------------------------------------------

    def section_weight(self) -> None:
        self.weight = page_weight(self.data.heavy_student)

    # --- profiles ------------------------------------------------------------------------

    def _profile(self, name: str, work: Callable[[], object]) -> None:
        try:
            from pyinstrument import Profiler
        except ImportError:
            self.log("pyinstrument is not installed (the bench extra); no profile.")
            return
        PROFILES.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(interval=0.0005)
        profiler.start()
        try:
            work()
        finally:
            profiler.stop()
        path = PROFILES / f"{name}-{connection.vendor}.txt"
        path.write_text(profiler.output_text(unicode=True, color=False))
        self.log(f"  profile: {path.relative_to(BASE_DIR)}")

    # --- the report ----------------------------------------------------------------------

    def report(self) -> str:
        rows: list[Row] = []
        details: list[str] = []
        slack = _slack()
        core_step = anki_step = None
        if self.core is not None:
            s = self.core
            shapes: Counter = Counter()
            for counter in s.queries.values():
                shapes.update(counter)
            core_step = [n + r for n, r in zip(s.next, s.record, strict=True)]
            rows += [
                Row("A. Scheduler core, in process: committed, no HTTP, no template"),
                timing_row(
                    "ours: next_card + record_review",
                    core_step,
                    queries=_query_text(Counter({n + r: 1 for _, n, r in shapes})),
                    p50_ms=CORE_P50_MS,
                ),
                timing_row(
                    "ours: done_today + next_card + record_review",
                    [d + c for d, c in zip(s.done, core_step, strict=True)],
                    queries=_query_text(Counter({d + n + r: 1 for d, n, r in shapes})),
                ),
            ]
            if self.core_rated_then_next is not None:
                piped = self.core_rated_then_next
                rows.append(
                    timing_row(
                        "ours: record_review + next card (counts inline), one round trip",
                        piped.record,
                        queries=_query_text(piped.queries["step"]),
                    )
                )
            details += self._core_details()
        if self.anki is not None:
            if "error" in self.anki:
                rows.append(Row("Anki", figure=f"not measured: {self.anki['error']}"))
            else:
                a = self.anki["session"]
                anki_step = [g + x for g, x in zip(a.get, a.answer, strict=True)]
                rows += [
                    timing_row(
                        f"Anki {self.anki['version']}: get_queued_cards + answer_card", anki_step
                    ),
                    timing_row("  Anki get_queued_cards", a.get),
                    timing_row("  Anki answer_card (committed)", a.answer),
                ]
                details += self._anki_details()
            if core_step and anki_step:
                ratio = _ms(core_step, 0.5) / _ms(anki_step, 0.5)
                rows.append(
                    Row(
                        "ratio ours / Anki, p50 (lower is better)",
                        figure=f"{ratio:.2f}×",
                        target=f"≤ {ANKI_RATIO * slack:g}×",
                        result=_verdict(ratio <= ANKI_RATIO * slack),
                    )
                )
        if hasattr(self, "path"):
            rows.append(Row("B. Study step, full request path (test client, htmx, logged in)"))
            for key, label in (("heavy", "100k cards / 1M reviews"), ("small", "100 cards / 100")):
                p = self.path[key]
                heavy = key == "heavy"
                rows += [
                    timing_row(
                        f"study page (full), {label}",
                        p.page,
                        queries=_query_text(p.queries["page"]),
                    ),
                    timing_row(f"flip, {label}", p.flip, queries=_query_text(p.queries["flip"])),
                    timing_row(
                        f"rate + next question, {label}",
                        p.rate,
                        queries=_query_text(p.queries["rate"]),
                        p50_ms=PATH_P50_MS if heavy else None,
                        p95_ms=PATH_P95_MS if heavy else None,
                    ),
                ]
            for kind in ("flip", "rate"):
                heavy_p50 = _ms(getattr(self.path["heavy"], kind), 0.5)
                growth = heavy_p50 / _ms(getattr(self.path["small"], kind), 0.5)
                rows.append(
                    Row(
                        f"{kind}: 100k-card p50 / 100-card p50",
                        figure=f"{growth:.2f}×",
                        target=f"≤ {PATH_GROWTH:g}×" if kind == "rate" else "",
                        result=_verdict(growth <= PATH_GROWTH) if kind == "rate" else "",
                    )
                )
            details += self._path_details()
        if hasattr(self, "http"):
            rows.append(Row("C. Study step over HTTP: gunicorn -w 2, loopback, closed loop"))
            for result in self.http:
                rows.append(_http_row(result, slack))
            details += self._http_details()
        if hasattr(self, "pages"):
            rows.append(Row("D. Pages, full request path (test client)"))
            for name, timings, queries, target, _sql, first in self.pages:
                rows.append(
                    timing_row(
                        name,
                        timings,
                        queries=_query_text(queries),
                        p50_ms=target,
                        figure=f"first request {first * 1000:,.0f} ms",
                    )
                )
            details += self._page_details()
        if hasattr(self, "exports"):
            rows.append(Row("E. Exports through the view (streamed, consumed; own process)"))
            rows += self._export_rows(slack)
        if hasattr(self, "imports"):
            rows.append(Row("F. Import, services.import_deck_file (committed, then deleted)"))
            for cards, size, timings, queries in self.imports:
                rows.append(
                    timing_row(
                        f"{cards:,}-card CSV ({size / 1e6:.1f} MB)",
                        timings,
                        queries=_query_text(queries),
                        p50_ms=IMPORT_50K_S * 1000 if cards == 50_000 else None,
                        figure=f"{cards / statistics.median(timings):,.0f} cards/s",
                    )
                )
        if hasattr(self, "apkg"):
            rows.append(Row("I. Anki package with history, manage.py import_deck --owner"))
            if getattr(self, "apkg_error", None):
                rows.append(Row(f"not run: {self.apkg_error}"))
            for name, held, timings in self.apkg:
                target = APKG_SMALL_S if held["notes"] <= APKG_SMALL_NOTES else APKG_LARGE_S
                rows.append(
                    timing_row(
                        f"{held['notes']:,} notes, {held['revlog']:,} reviews ({name})",
                        timings,
                        p50_ms=target * 1000,
                        figure=f"{statistics.median(timings):.1f} s, "
                        f"{held['revlog'] / statistics.median(timings):,.0f} reviews/s",
                    )
                )
        if hasattr(self, "fits"):
            rows.append(Row("H. Fitting a student's memory model (build items, fit, score)"))
            for size, seconds, result in self.fits:
                rows.append(
                    Row(
                        f"{size:,} reviews",
                        median=f"{seconds * 1000:.0f}",
                        figure=f"log loss {result.log_loss:.3f} (defaults "
                        f"{result.default_log_loss:.3f}); adopted: {result.adopted}",
                    )
                )
        if hasattr(self, "weight"):
            rows.append(Row("G. Study page weight, gzip"))
            rows += self._weight_rows()
            details += self._weight_details()

        lines = [
            *_environment(),
            f"- Data: generator v{benchdata.GENERATOR_VERSION}: heavy student "
            f"{benchdata.CARDS:,} cards / {benchdata.REVIEWS:,} reviews over "
            f"{benchdata.HISTORY_DAYS} days ({benchdata.DUE_NOW_CARDS} review cards overdue, "
            f"{benchdata.LEARNING_CARDS} learning, {benchdata.NEW_CARDS:,} new); small student "
            f"{benchdata.SMALL.cards} cards / {benchdata.SMALL.reviews} reviews; home student "
            f"{benchdata.HOME_DECKS} decks × {benchdata.HOME.cards} cards; class "
            f"{benchdata.CLASS_STUDENTS} students × {benchdata.CLASS.cards:,} cards, "
            f"{benchdata.CLASS_STUDENTS * benchdata.CLASS.reviews:,} reviews; "
            f"{benchdata.LOAD_STUDENTS} load students × {benchdata.LOAD.cards:,} cards",
            "- In-process sections run on a pinned clock (the data's NOW, "
            f"{benchdata.NOW:%Y-%m-%d %H:%M} UTC, {STEP_SECONDS} s per step); HTTP runs on "
            "the wall clock. Every rating is committed, then rewound, so the cached data "
            "stays as generated.",
            f"- Load average (1 min) at the start / end: {self.load_before:.2f} / "
            f"{os.getloadavg()[0]:.2f}",
        ]
        if slack != 1:
            lines.append(
                f"- Targets: issue 8's SQLite targets × {slack:g} for PostgreSQL "
                f"(rates ÷ {slack:g})."
            )
        return (
            "\n".join([*lines, "", "```", format_table(rows), "```", "", *details]).rstrip() + "\n"
        )

    def _core_details(self) -> list[str]:
        s = self.core
        rows = [
            ("done_today", s.done),
            ("next_card", s.next),
            ("record_review", s.record),
        ]
        for branch in ("learning", "review", "new", "learn-ahead"):
            timings = [t for t, b in zip(s.next, s.branch, strict=True) if b == branch]
            if timings:
                rows.append((f"next_card, {branch} card ({len(timings)} steps)", timings))
        rows += [
            ("queue.counts, with done_today's (every study render)", self.core_extras["counts"]),
            ("services.ensure_progress (page open; inserts nothing)",
             self.core_extras["ensure_progress"]),
        ]  # fmt: skip
        rows += [(f"{name} (raw cursor)", values) for name, values in self.core_breakdown]
        width = max(len(name) for name, _ in rows) + 2
        out = [
            "Scheduler core, part by part (the step's SQL replayed through a raw cursor and "
            "FSRS alone show what is left for Python):",
            "",
            "```",
            f"{'':{width}}{'p50 ms':>9}{'p95 ms':>9}",
        ]
        out += [f"{name:{width}}{_ms(v, 0.5):>9.3f}{_ms(v, 0.95):>9.3f}" for name, v in rows]
        out += ["```", ""]
        out.append(
            f"{len(s.done):,} timed steps after {self.options['warmup']} warm-up steps, clock "
            f"{s.start:%H:%M:%S} → {s.end:%H:%M:%S}; queries per step, done_today + next_card "
            "+ record_review (with its BEGIN and COMMIT):"
        )
        out.append("")
        for branch, counter in sorted(s.queries.items()):
            shapes = ", ".join(
                f"{d}+{n}+{r}={d + n + r} ({count}×)" for (d, n, r), count in counter.most_common()
            )
            out.append(f"- {branch} card: {shapes}")
        sample = s.statements.get("review") or next(iter(s.statements.values()))
        out += ["", "The statements of one step (review card):", ""]
        out += [f"    {sql[:150]}" for part in sample.values() for sql in part]
        return [*out, ""]

    def _anki_details(self) -> list[str]:
        a, meta = self.anki["session"], self.anki["meta"]
        kinds = ", ".join(f"{k} {n}" for k, n in a.kinds.most_common())
        new, learning, review = a.counts_at_start
        return [
            f"Anki {self.anki['version']} (the `anki` package, Rust backend): a copy of the "
            f"cached collection ({meta['cards']:,} notes, {meta['revlog']:,} revlog rows, "
            f"built in {meta['build_seconds']:.0f} s); FSRS on, retention 0.90, limits 9999, "
            f"new cards after reviews. SQLite journal_mode={a.journal}, "
            f"synchronous={a.synchronous} (ours: WAL, NORMAL=1). Queue at the start: {new} new, "
            f"{learning} learning, {review} review; the first get_queued_cards (builds the "
            f"queue) took {a.queue_build * 1000:.0f} ms, untimed. Cards served: {kinds}. "
            "Anki keeps the queue in memory between answers and rebuilds it when it runs "
            "out; ours runs one indexed query per step, so a page in another process sees "
            "the same queue.",
            "",
        ]

    def _path_details(self) -> list[str]:
        parts, totals = self.path_parts
        out = [
            "Where a study request's time goes (100k-card student; mean ms per request over "
            "an untimed pass with each part wrapped in a timer, self time; the rest is the "
            "test client, middleware, URL resolving, CSRF and the response):",
            "",
            "```",
            f"{'':44}{'flip':>8}{'rate':>8}",
        ]
        names = list(dict.fromkeys([*parts["flip"], *parts["rate"]]))
        for name in names:
            flip = sum(parts["flip"].get(name, [])) / max(len(totals["flip"]), 1) * 1000
            rate = sum(parts["rate"].get(name, [])) / max(len(totals["rate"]), 1) * 1000
            out.append(f"{name:44}{flip:>8.3f}{rate:>8.3f}")
        means = {k: statistics.mean(v) * 1000 for k, v in totals.items()}
        rest = {
            k: means[k] - sum(sum(v) for v in parts[k].values()) / len(totals[k]) * 1000
            for k in means
        }
        out.append(f"{'everything else':44}{rest['flip']:>8.3f}{rest['rate']:>8.3f}")
        out.append(f"{'whole request (mean)':44}{means['flip']:>8.3f}{means['rate']:>8.3f}")
        out += ["```", ""]
        conn_max_age = settings.DATABASES["default"].get("CONN_MAX_AGE")
        out.append(
            f"Opening a database connection (with its init_command) takes "
            f"{_ms(self.reconnect, 0.5):.2f} ms p50 here; with CONN_MAX_AGE={conn_max_age} "
            + (
                "every request under gunicorn pays it (the test client above does not)."
                if not conn_max_age
                else "gunicorn workers keep their connection between requests."
            )
        )
        out.append("")
        for key in ("heavy", "small"):
            if self.path[key].day_jumps:
                out.append(
                    f"The {key} student's queue ran dry {self.path[key].day_jumps} times; each "
                    "time the clock moved on to the next due card (untimed)."
                )
        return [*out, ""] if out[-1] else out

    def _page_details(self) -> list[str]:
        out = [
            "Pages: the first request of each page is untimed in p50/p95 (it compiles "
            "templates and fills caches: the stats page caches its whole-history figures "
            "until the next rating) and counts the queries. Its SQL time, for pages over "
            "20 ms, and its slowest statements (1 ms resolution):",
            "",
        ]
        for name, timings, _queries, _target, statements, first in self.pages:
            if max(_ms(timings, 0.5), first * 1000) <= 20:
                continue
            total = sum(t for t, _ in statements) * 1000
            out.append(
                f"- {name}: SQL {total:.0f} ms in a {first * 1000:.0f} ms first request "
                f"(p50 after it {_ms(timings, 0.5):.0f} ms)"
            )
            for seconds, sql in statements[:3]:
                if seconds >= 0.002:
                    out.append(f"    {seconds * 1000:7.0f} ms  {' '.join(sql.split())[:160]}")
        return [*out, ""]

    def _http_details(self) -> list[str]:
        out = [
            "Over HTTP: `gunicorn studyapp.wsgi --workers 2` (sync workers) with production "
            "settings (DEBUG off, secure cookies: the load generator logs in with sessions made "
            "in the database and sends the cookies itself; SSL redirect off for loopback) and "
            f"{GENERATORS[self.http[0].get('generator', 'asyncio')]} in its own process. Each "
            "student studies its own 1,000-card deck as fast as the server answers: a step is "
            "flip (GET) + rate (POST). Latencies per request; the load generator shares the 2 "
            "cores with the server.",
            "",
            "```",
            f"{'students':>8}{'steps/s':>9}{'req/s':>8}  {'flip p50/p95/p99 ms':>22}  "
            f"{'rate p50/p95/p99 ms':>22}  {'errors':>6}  reviews in DB / ratings answered 200",
        ]
        for r in self.http:
            lat = r["latency"]
            out.append(
                f"{r['concurrency']:>8}{r['steps_per_s']:>9.0f}{r['requests_per_s']:>8.0f}  "
                f"{_ppp(lat['flip']):>22}  {_ppp(lat['rate']):>22}  {r['errors']:>6}  "
                f"{r['db_reviews']:,} / {r['ratings_ok']:,} (lost {r['lost']}, duplicated "
                f"{r['duplicated']}; reps consistent: {r['reps_consistent']})"
            )
        out += ["```", ""]
        errors = [e for r in self.http for e in r["error_samples"]]
        if errors:
            out += ["Errors seen (first few):", "", *[f"    {e[:200]}" for e in errors[:5]], ""]
        if self.http_log.strip():
            out += ["gunicorn log (tail):", "", "```", self.http_log.strip()[-1500:], "```", ""]
        return out

    def _export_rows(self, slack: float) -> list[Row]:
        rows = []
        reviews = self.exports["reviews"]
        rate = reviews["rows"] / reviews["seconds"]
        ok = rate >= EXPORT_ROWS_PER_S / slack and reviews["peak_rss_mb"] <= EXPORT_PEAK_MB
        rows.append(
            Row(
                f"reviews CSV, {reviews['rows']:,} rows",
                median=f"{reviews['seconds'] * 1000:.0f}",
                figure=f"{rate:,.0f} rows/s; peak RSS {reviews['peak_rss_mb']:.0f} MB "
                f"(at rest {reviews['rss_before_mb']:.0f} MB); "
                f"{reviews['bytes'] / 1e6:.0f} MB of CSV",
                target=f"≥ {EXPORT_ROWS_PER_S / slack:,.0f} rows/s, ≤ {EXPORT_PEAK_MB:g} MB",
                result=_verdict(ok and reviews["status"] == 200),
            )
        )
        cards = self.exports["cards"]
        rows.append(
            Row(
                f"cards CSV, {cards['rows']:,} rows (one per card, with recall now)",
                median=f"{cards['seconds'] * 1000:.0f}",
                figure=f"{cards['rows'] / cards['seconds']:,.0f} rows/s; peak RSS "
                f"{cards['peak_rss_mb']:.0f} MB",
            )
        )
        if self.anki and "session" in self.anki:
            a = self.anki["session"]
            anki_rate = a.export_rows / a.export_seconds
            rows += [
                Row(
                    f"Anki: revlog → CSV, {a.export_rows:,} rows (col.db, in the bench process)",
                    median=f"{a.export_seconds * 1000:.0f}",
                    figure=f"{anki_rate:,.0f} rows/s",
                ),
                Row(
                    "ratio ours / Anki, rows/s (higher is better)",
                    figure=f"{rate / anki_rate:.2f}×",
                ),
            ]
        return rows

    def _weight_rows(self) -> list[Row]:
        w = self.weight
        first = sum(size for name, _raw, size in w["assets"] if not name.endswith(".svg"))
        first += w["html"][1]
        kinds = Counter()
        for name, _raw, size in w["assets"]:
            kinds["CSS" if name.endswith(".css") else "JS" if name.endswith(".js") else ""] += size
        rows = [
            Row(
                "first load: study page HTML + CSS + JS",
                figure=f"{first / 1024:.1f} KB (HTML {w['html'][1] / 1024:.1f}, CSS "
                f"{kinds['CSS'] / 1024:.1f}, JS {kinds['JS'] / 1024:.1f})",
                target=f"≤ {FIRST_LOAD_KB:g} KB",
                result=_verdict(first / 1024 <= FIRST_LOAD_KB),
            )
        ]
        for key, label in (
            ("flip", "flip swap (answer + buttons)"),
            ("rate", "rate swap (next question)"),
        ):
            raw, size = w[key]
            rows.append(
                Row(
                    label,
                    figure=f"{size / 1024:.2f} KB ({raw:,} B uncompressed)",
                    target=f"≤ {SWAP_KB:g} KB",
                    result=_verdict(size / 1024 <= SWAP_KB),
                )
            )
        return rows

    def _weight_details(self) -> list[str]:
        w = self.weight
        files = ", ".join(
            f"{name} {raw:,} B → {size:,} B" for name, raw, size in [("HTML", *w["html"])]
        )
        files += "".join(f"; {name} {raw:,} B → {size:,} B" for name, raw, size in w["assets"])
        return [
            f"Study page, first load: {files}.",
            "",
            "Page weight: HTML gzip level 6 (what a proxy would send; the app itself sends "
            f"HTML uncompressed{'' if w['gzip_middleware'] else ', no GZipMiddleware'}); static "
            "files gzip level 9 (whitenoise's precompressed .gz). The favicon is listed but "
            "not counted (not CSS or JS).",
            "",
        ]


# --- helpers for the sections -----------------------------------------------------------


def _ppp(summary: dict) -> str:
    if not summary["count"]:
        return "–"
    return f"{summary['p50_ms']:.1f}/{summary['p95_ms']:.1f}/{summary['p99_ms']:.1f}"


def _http_row(result: dict, slack: float) -> Row:
    lat = result["latency"]["all"]
    level = result["concurrency"]
    target = ""
    verdict = ""
    if level >= 8:
        steps = HTTP_STEPS_PER_S / slack
        p99 = HTTP_P99_MS * slack
        target = f"≥ {steps:.0f} steps/s, p99 ≤ {p99:g} ms, 0 errors"
        verdict = _verdict(
            result["steps_per_s"] >= steps
            and (lat["p99_ms"] or math.inf) <= p99
            and result["errors"] == 0
        )
    elif result["errors"]:
        verdict = "miss"
    return Row(
        f"{level} concurrent student{'s' if level > 1 else ''}",
        f"{lat['p50_ms']:.1f}" if lat["count"] else "–",
        f"{lat['p95_ms']:.1f}" if lat["count"] else "–",
        f"{result['steps_per_s']:.0f} steps/s, p99 "
        + (f"{lat['p99_ms']:.1f} ms" if lat["count"] else "–")
        + f", {result['errors']} errors",
        "",
        target,
        verdict,
    )


TOKEN = re.compile(r'name="token" value="([^"]+)"')
HTMX = {"HTTP_HX_REQUEST": "true"}


def _ok(response):
    if response.status_code != 200:
        body = getattr(response, "content", b"")[:300]
        raise CommandError(f"{response.request['PATH_INFO']}: HTTP {response.status_code} {body!r}")
    return response


def _token(response) -> str | None:
    match = TOKEN.search(response.content.decode())
    return match.group(1) if match else None


class _NoCapture:
    """Stands in for CaptureQueriesContext on the timed requests."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __len__(self) -> int:
        return 0


@dataclass
class PathResult:
    page: list[float] = field(default_factory=list)
    flip: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    queries: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    day_jumps: int = 0


def study_path(
    student: benchdata.Student,
    steps: int,
    *,
    warmup: int = 30,
    count: bool = True,
    page_repeats: int = 30,
    before_request: Callable[[str], None] | None = None,
) -> PathResult:
    """The study flow through the test client: open the study page, then flip (htmx GET)
    and rate (htmx POST) ``warmup + steps`` times; every rating is rewound afterwards."""
    result = PathResult()
    clock = Clock(benchdata.NOW)
    rng = random.Random(benchdata.SEED + 2)
    base = f"/decks/{student.deck.pk}/study/"
    after = benchdata.last_review_id()
    perf = time.perf_counter
    mark = before_request or (lambda kind: None)
    with pinned(clock):
        client = Client()
        client.force_login(student.user)
        try:
            for index in range(page_repeats + 1):
                mark("page")
                start = perf()
                page = _ok(client.get(base))
                if index:  # the first one compiles templates
                    result.page.append(perf() - start)
            if count:
                with CaptureQueriesContext(connection) as captured:
                    _ok(client.get(base))
                result.queries["page"][len(captured)] += 1
            token = _token(page)

            def step(counted: bool) -> tuple[float, float]:
                nonlocal token
                clock.advance(STEP_SECONDS)
                if token is None:
                    # Nothing left for now (the small deck runs dry): come back when the
                    # next card is due, logged in afresh, as the student would (untimed).
                    due = queue.next_due(student.user, student.deck)
                    clock.now = max(clock.now, due or clock.now) + timedelta(seconds=1)
                    result.day_jumps += 1
                    client.force_login(student.user)
                    token = _token(_ok(client.get(base)))
                    if token is None:
                        raise CommandError(f"{student.user}: nothing to study at {clock.now}.")
                rating = rng.choices(benchdata.RATINGS, weights=benchdata.RATING_WEIGHTS)[0]
                capture = (lambda: CaptureQueriesContext(connection)) if counted else _NoCapture
                with capture() as q_flip:
                    mark("flip")
                    t0 = perf()
                    _ok(client.get(base + "flip/", {"token": token}, **HTMX))
                    t1 = perf()
                with capture() as q_rate:
                    mark("rate")
                    t2 = perf()
                    rated = _ok(  # form-encoded, as htmx sends it (the client's default
                        client.post(  # is multipart, several times dearer to parse)
                            base + "rate/",
                            urlencode({"token": token, "rating": rating}),
                            content_type="application/x-www-form-urlencoded",
                            **HTMX,
                        )
                    )
                    t3 = perf()
                token = _token(rated)
                if counted:
                    result.queries["flip"][len(q_flip)] += 1
                    result.queries["rate"][len(q_rate)] += 1
                return t1 - t0, t3 - t2

            for _ in range(warmup):
                step(False)
            for index in range(steps):
                flip, rate = step(False)
                result.flip.append(flip)
                result.rate.append(rate)
                if count and index % COUNT_EVERY == COUNT_EVERY - 1:
                    step(True)
        finally:
            benchdata.rewind([student.user.pk], after)
    return result


def reconnect_cost(times: int = 100) -> list[float]:
    """Seconds to open the default connection and run one statement."""
    timings = []
    for _ in range(times):
        connections["default"].close()
        start = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        timings.append(time.perf_counter() - start)
    return timings


def study_path_parts(student: benchdata.Student, steps: int):
    """Run the study flow with the view's parts wrapped in timers (see _path_details)."""
    from django.contrib import auth
    from django.contrib.sessions.backends import db as db_sessions

    from decks import views
    from decks.templatetags import cards as cards_tags

    current = ["page"]
    parts: dict[str, dict[str, list[float]]] = {
        "page": defaultdict(list),
        "flip": defaultdict(list),
        "rate": defaultdict(list),
    }
    patched: list[tuple[object, str, object]] = []
    nested = [0.0]

    def wrap(owner, attribute: str, label: str) -> None:
        original = (
            owner.__dict__[attribute] if isinstance(owner, type) else getattr(owner, attribute)
        )
        function = getattr(owner, attribute)

        def timed(*args, **kwargs):
            # Self time: a wrapped part called inside another (the session loads lazily
            # inside the user lookup, Markdown inside the template) counts once.
            nested.append(0.0)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                parts[current[0]][label].append(elapsed - nested.pop())
                nested[-1] += elapsed

        patched.append((owner, attribute, original))
        setattr(owner, attribute, timed)

    # studyapp.sessions.SessionStore inherits load() from Django's database store
    wrap(db_sessions.SessionStore, "load", "session and user row (SessionMiddleware)")
    wrap(auth, "get_user", "user check (AuthenticationMiddleware)")
    wrap(queue, "study_deck", "deck, settings, the card's progress (queue.study_deck)")
    wrap(queue, "next_card", "queue.next_card")
    wrap(queue, "counts", "queue.counts (with today's counts)")
    wrap(services, "record_review", "services.record_review (committed)")
    wrap(scheduler, "preview", "scheduler.preview (5 intervals)")
    wrap(views, "_card_token", "card token (signing.dumps)")
    wrap(views, "_read_card_token", "card token check (signing.loads)")
    wrap(views, "_render_study", "template (_render_study), less Markdown")
    wrap(cards_tags, "render_markdown", "Markdown + nh3 (question, answer)")
    totals: dict[str, list[float]] = {"flip": [], "rate": []}
    try:
        timed = study_path(
            student,
            steps,
            warmup=10,
            count=False,
            page_repeats=1,
            before_request=lambda kind: current.__setitem__(0, kind),
        )
        totals = {"flip": timed.flip, "rate": timed.rate}
    finally:
        for owner, attribute, original in reversed(patched):
            setattr(owner, attribute, original)
    return parts, totals


def time_get(client: Client, path: str, *, repeats: int = 25, budget: float = 15.0):
    """Timings of GET ``path`` (at least 3, or 2 for a page slower than 5 s; at most
    ``repeats``, within about ``budget`` seconds), its query count and the SQL of the
    first, untimed request, slowest statement first."""
    with CaptureQueriesContext(connection) as captured:
        start = time.perf_counter()
        _ok(client.get(path))  # also compiles templates and warms caches
        first = time.perf_counter() - start
    # Read the capture now: it slices the connection's query log lazily, and the next
    # request (request_started) empties the log.
    statements = sorted(
        ((float(q["time"]), q["sql"]) for q in captured.captured_queries), reverse=True
    )
    timings = []
    least = 2 if first > 5 else 3
    deadline = time.perf_counter() + budget
    while len(timings) < repeats and (len(timings) < least or time.perf_counter() < deadline):
        start = time.perf_counter()
        _ok(client.get(path))
        timings.append(time.perf_counter() - start)
    return timings, Counter({len(statements): 1}), statements, first


class count_queries:
    """Counts the statements sent to the database (an execute wrapper: cheap enough to
    leave on while timing)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)

    def __enter__(self) -> count_queries:
        self._wrapper = connection.execute_wrapper(self)
        self._wrapper.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._wrapper.__exit__(*exc)


def _csv_deck(cards: int) -> bytes:
    lines = ["front,back,tags"]
    lines += [
        f"Imported question {i}: what does term {i} mean?,"
        f"Imported answer {i}: a short definition of term {i}.,tag{i % 10}"
        for i in range(1, cards + 1)
    ]
    return ("\n".join(lines) + "\n").encode()


def _vacuum(*models) -> None:
    """On PostgreSQL, clean up after a section that deleted many rows: they would
    otherwise wait for autovacuum and slow the next sections' (and runs') queries."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for model in models:
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")


def _anki_side():
    """bench/anki_side.py, or why it cannot be imported (the anki package is missing)."""
    if str(BASE_DIR) not in sys.path:
        sys.path.insert(0, str(BASE_DIR))
    try:
        from bench import anki_side
    except ImportError as error:
        return f"{error}; `make bench` installs the bench extra"
    return anki_side


def _delete_deck(deck: Deck) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        # Raw: the ORM's cascade would fetch 50,000 card ids first.
        cursor.execute(f"DELETE FROM {Card._meta.db_table} WHERE deck_id = %s", [deck.pk])
        Deck.objects.filter(pk=deck.pk).delete()


def page_weight(student: benchdata.Student) -> dict:
    """gzip sizes of the study page, its CSS/JS and the two htmx swaps."""
    clock = Clock(benchdata.NOW)
    base = f"/decks/{student.deck.pk}/study/"
    after = benchdata.last_review_id()
    with pinned(clock):
        client = Client()
        client.force_login(student.user)
        try:
            page = _ok(client.get(base))
            token = _token(page)
            flip = _ok(client.get(base + "flip/", {"token": token}, **HTMX)).content
            rate = _ok(client.post(base + "rate/", {"token": token, "rating": 4}, **HTMX)).content
        finally:
            benchdata.rewind([student.user.pk], after)
    html = page.content
    assets = []
    prefix = (
        settings.STATIC_URL if settings.STATIC_URL.startswith("/") else "/" + settings.STATIC_URL
    )
    for url in re.findall(rb'<(?:link|script)\b[^>]*?(?:href|src)="([^"]+)"', html):
        url = url.decode()
        if not url.startswith(prefix):
            continue
        found = finders.find(url[len(prefix) :].split("?")[0])
        if found is None:
            raise CommandError(f"Static file not found: {url}")
        content = Path(found).read_bytes()
        assets.append((url, len(content), len(gzip.compress(content, 9))))
    return {
        "html": (len(html), len(gzip.compress(html, 6))),
        "assets": assets,
        "flip": (len(flip), len(gzip.compress(flip, 6))),
        "rate": (len(rate), len(gzip.compress(rate, 6))),
        "gzip_middleware": any("GZip" in m for m in settings.MIDDLEWARE),
    }


def export_in_child(kind: str, username: str) -> dict:
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_DEBUG": "1"}
    done = subprocess.run(
        [sys.executable, str(BASE_DIR / "bench" / "export_child.py"), kind, username],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode:
        raise CommandError(f"The {kind} export failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- gunicorn and the load generator ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """gunicorn with 2 workers and production settings on a free loopback port, against
    the bench database; stopped (by its pid) on exit, with the sessions it was given."""

    def __init__(self, log: Callable[[str], None], workers: int = 2) -> None:
        self.log = log
        self.workers = workers
        self.session_keys: list[str] = []

    def __enter__(self) -> Gunicorn:
        self.secret_key = secrets.token_urlsafe(50)
        env = production_env(self.secret_key)
        # Production settings serve static files through the manifest storage, which
        # needs collectstatic's output.
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--no-input", "--verbosity", "0"],
            cwd=BASE_DIR,
            env=env,
            check=True,
            capture_output=True,
        )
        self.port = free_port()
        BENCH_DIR.mkdir(exist_ok=True)
        self.log_path = BENCH_DIR / "gunicorn.log"
        self.log_file = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "studyapp.wsgi",
                "--workers", str(self.workers),
                "--bind", f"127.0.0.1:{self.port}",
                "--log-level", "warning",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.log(f"  gunicorn pid {self.process.pid} on 127.0.0.1:{self.port}")
        return self

    def _wait_ready(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        url = f"http://127.0.0.1:{self.port}/healthz"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CommandError(f"gunicorn exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise CommandError(f"gunicorn did not answer {url} within {seconds:g} s")

    def sessions(self, students: list[benchdata.Student]) -> list[dict]:
        """A logged-in session per student, made in the database (the way login() would,
        signed with the server's secret key), and a CSRF secret sent as cookie and header."""
        from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
        from django.utils.crypto import get_random_string

        from studyapp.sessions import SessionStore

        specs = []
        with override_settings(SECRET_KEY=self.secret_key):
            for student in students:
                store = SessionStore()
                store[SESSION_KEY] = student.user._meta.pk.value_to_string(student.user)
                store[BACKEND_SESSION_KEY] = "studyapp.backends.UserBackend"
                store[HASH_SESSION_KEY] = student.user.get_session_auth_hash()
                store.create()
                self.session_keys.append(store.session_key)
                csrf = get_random_string(32)
                specs.append(
                    {
                        "deck": student.deck.pk,
                        "cookie": f"{settings.SESSION_COOKIE_NAME}={store.session_key}; "
                        f"{settings.CSRF_COOKIE_NAME}={csrf}",
                        "csrf": csrf,
                    }
                )
        return specs

    def log_tail(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text()[-4000:]

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log_file.close()
        from decks.models import UserSession

        UserSession.objects.filter(session_key__in=self.session_keys).delete()


GENERATORS = {
    "wrk": "wrk (C; one thread and connection per student) with `bench/wrk_study.lua`, "
    "which times each request from handing it to wrk to its answer (a new connection is "
    "opened before that)",
    "asyncio": "`bench/loadgen.py` (asyncio, stdlib; wrk is not installed here)",
}


def load_generator() -> str:
    """wrk (bench/wrk_study.lua) where it is installed, else bench/loadgen.py's asyncio
    client: wrk leaves more of the 2 cores to the server."""
    return "wrk" if shutil.which("wrk") else "asyncio"


def run_load(
    port: int,
    specs: list[dict],
    concurrency: int,
    seconds: float,
    students: list[benchdata.Student],
    generator: str | None = None,
) -> dict:
    """One load level, then the database checked against what the clients were told, and
    every rating rewound."""
    from django.db.models import Count, Sum

    ids = [s.user.pk for s in students[:concurrency]]
    after = benchdata.last_review_id()
    reps_before = CardProgress.objects.filter(user__in=ids).aggregate(n=Sum("reps"))["n"]
    config = {
        "host": "127.0.0.1",
        "port": port,
        "duration": seconds,
        "concurrency": concurrency,
        "students": specs,
        "seed": concurrency,
        "generator": generator or load_generator(),
    }
    try:
        done = subprocess.run(
            [sys.executable, str(BASE_DIR / "bench" / "loadgen.py")],
            input=json.dumps(config),
            capture_output=True,
            text=True,
            timeout=seconds + 120,
        )
        if done.returncode:
            raise CommandError(f"The load generator failed:\n{done.stderr[-2000:]}")
        result = json.loads(done.stdout)
        if result.get("generator") == "wrk":
            _wait_for_quiet(ids, after)
        counted = dict(
            Review.objects.filter(user__in=ids, id__gt=after)
            .values_list("user")
            .annotate(n=Count("id"))
            .values_list("user", "n")
        )
        answered = {
            user_id: s["ratings_ok"] for user_id, s in zip(ids, result["students"], strict=True)
        }
        result["ratings_ok"] = sum(answered.values())
        result["ratings_stale"] = sum(s["ratings_stale"] for s in result["students"])
        result["db_reviews"] = sum(counted.values())
        # A rating still in flight when wrk stopped may or may not have been recorded.
        in_flight = {
            user_id: s["ratings_in_flight"]
            for user_id, s in zip(ids, result["students"], strict=True)
        }
        result["ratings_in_flight"] = sum(in_flight.values())
        result["lost"] = sum(max(answered[u] - counted.get(u, 0), 0) for u in ids)
        result["duplicated"] = sum(
            max(counted.get(u, 0) - answered[u] - in_flight[u], 0) for u in ids
        )
    finally:
        benchdata.rewind(ids, after)
    # Rewinding takes one rep off per review row: back to the start only if every row
    # moved its card's reps by exactly one.
    reps_after = CardProgress.objects.filter(user__in=ids).aggregate(n=Sum("reps"))["n"]
    result["reps_consistent"] = reps_after == reps_before
    return result


def _wait_for_quiet(user_ids: list[int], after: int, seconds: float = 30) -> None:
    """Wait until the students' ratings stop arriving. wrk stops at its deadline without
    waiting for answers, and gunicorn still works through the requests it had taken (or
    that wait in its listen queue): counting, or rewinding, before those land would get
    both wrong."""
    reviews = Review.objects.filter(user__in=user_ids, id__gt=after)
    deadline = time.monotonic() + seconds
    count = reviews.count()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        count, before = reviews.count(), count
        if count == before:
            return
    raise CommandError(f"Ratings still arriving {seconds:g} s after the load generator stopped")


# --- BENCHMARKS.md ----------------------------------------------------------------------


def _environment() -> list[str]:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT sqlite_version()")
            options = settings.DATABASES["default"].get("OPTIONS", {})
            database = (
                f"SQLite {cursor.fetchone()[0]} (`{options.get('init_command', '')}`"
                f" transaction_mode={options.get('transaction_mode')}, CONN_MAX_AGE="
                f"{settings.DATABASES['default'].get('CONN_MAX_AGE')})"
            )
        else:
            cursor.execute("SHOW server_version")
            import psycopg

            database = (
                f"PostgreSQL {cursor.fetchone()[0]} (psycopg {psycopg.__version__}, "
                f"CONN_MAX_AGE={settings.DATABASES['default'].get('CONN_MAX_AGE')})"
            )
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Python {platform.python_version()}, Django {django.get_version()}, {database}",
        f"- Machine: {cores} CPUs (nproc), {cpu}, {platform.system()} {platform.release()}",
    ]


def _section_title(kind: str) -> str:
    title = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(
        connection.vendor, connection.vendor
    )
    return title if kind == "bench" else f"Load test ({title})"


HEADER = f"""# Benchmarks

`make bench` (`python manage.py bench [--fresh] [--only SECTIONS] [--profile] [--explain]`)
is the project's measuring instrument (issue 8); `make loadtest` (`python manage.py
loadtest`) is issue 7's load test. Data: `decks/benchdata.py`, generated in bulk with a
fixed seed and cached (`bench-data/bench-vN.sqlite3` for SQLite, the `bench-*` users in
DATABASE_URL's database for PostgreSQL; the Anki collection in `bench-data/anki-vN.anki2`).
Timings run with `DEBUG` off; every rating is committed, then rewound. Each section below
is rewritten by the latest run of that command on that backend.

Targets (issue 8; this 2-core machine, SQLite; PostgreSQL within {PG_SLACK:g}× of them):

- scheduler core p50 ≤ {CORE_P50_MS:g} ms, and ≤ {ANKI_RATIO:g}× Anki's step measured in the
  same run;
- study step through the request path (rate + next question) p50 ≤ {PATH_P50_MS:g} ms,
  p95 ≤ {PATH_P95_MS:g} ms at 100k cards, and ≤ {PATH_GROWTH:g}× the time at 100 cards;
- over HTTP, gunicorn with 2 workers: ≥ {HTTP_STEPS_PER_S} steps/s at 8–32 students,
  p99 ≤ {HTTP_P99_MS:g} ms, no errors (a step is one flip and one rating);
- home page with 50 decks ≤ {HOME_MS:g} ms; class dashboard (100 students) ≤ {DASHBOARD_MS:g} ms;
- reviews CSV ≥ {EXPORT_ROWS_PER_S:,} rows/s with peak RSS ≤ {EXPORT_PEAK_MB:g} MB for 1M rows;
- import of 50,000 cards ≤ {IMPORT_50K_S:g} s;
- Anki package with its history (issue 10): {APKG_SMALL_NOTES:,} notes ≤ {APKG_SMALL_S:g} s,
  100,000 notes / 1M reviews ≤ {APKG_LARGE_S:g} s;
- study page ≤ {FIRST_LOAD_KB:g} KB gzip on first load, ≤ {SWAP_KB:g} KB per htmx swap.

What each change bought (SQLite, p50 unless noted, measured with this command before and
after; the profiles come from `--profile`):

- the step's queue and write as hand-written SQL (decks.queue, services.record_review):
  ORM query building had been most of the step; the core is now about 0.4 ms;
- stats page, reviews grouped by half hour in the database: 31 s → 3.7 s (1M reviews);
- study requests, deck and settings in one statement, the shown card by raw SQL, the card
  check folded into record_review's locked read: rate + next 5.3 → 2.8 ms, flip
  4.9 → 2.6 ms; queries 13 → 11 and 7 → 6;
- session read and signed-in user in one raw statement each (still database sessions and
  ModelBackend): rate 2.8 → 2.7 ms, flip 2.6 → 2.4 ms; HTTP at 8 students 264 → 283
  steps/s;
- reviews CSV, names and questions looked up once per card instead of joined per row:
  37k → 88k rows/s; times read as the database's text instead of parsed and formatted
  again: → 192k; the cards in scope as an IN list instead of a join: → 229k; rating and
  state cells formatted once: → 243k rows/s (peak RSS 69 → 123 MB, the per-card lookups);
- Anki import, replayed on fsrs's own card type, reviews written as plain rows in 50k
  batches, cards and progress by executemany: 137 s → 49 s (100k notes, 1M reviews);
- USE_I18N off (every printed value went through a language lookup) and each study URL
  reversed once per render; rendered card Markdown cached: small, within the run-to-run
  noise of the flip's p50 (about ±0.2 ms);
- home page, each deck's cards counted on its index instead of a join + GROUP BY over
  every card: 50 decks 19.7 → 18.9 ms, PostgreSQL 40.5 → 25.1 ms;
- next_card as a COALESCE of the queue's branches (later branches never run) instead of
  a UNION ALL sorted by branch: its SQL 0.044 → 0.032 ms, PostgreSQL 0.67 → 0.52 ms;
- reviews CSV on PostgreSQL joined to the cards (index order, incremental sort) instead
  of an IN list (a full sort before the first row): 127k → 139k rows/s;
- load generator keeping one connection per student and reading by Content-Length
  (as a browser does) instead of waiting for the server's close: 324 → 355 steps/s at
  8 students. gthread workers with kept-alive connections were slower (287 steps/s).

This machine's speed drifts by up to ±30 % over minutes, so each change below was
measured against the code before it within minutes, and where the difference was near
that drift the two versions were alternated, A/B, several times:

- a rating written in one statement on PostgreSQL (optimistic: the progress row is read
  without a lock, then `WITH moved AS (UPDATE … WHERE reps = read reps) INSERT …`
  applies only if no other rating got in between): 5 round trips → 2; PostgreSQL core
  2.84 → 2.60 ms;
- the study step's fixed statements prepared once per connection on PostgreSQL
  (server-side binding for those cursors only; the ORM's stay client-side): planning
  next_card had cost 0.4–0.6 ms of its 0.9; PostgreSQL core 2.60 → 1.49 ms, rate + next
  7.8 → 6.2 ms;
- the study fragment with its links reversed once per deck, no CSRF inputs in htmx swaps
  (htmx sends the token in a header) and the rating buttons' fixed parts prebuilt:
  rendering the question 0.38 → 0.09 ms, the answer with its buttons 0.51 → 0.27 ms;
- wrk with `bench/wrk_study.lua` as the HTTP load generator instead of the asyncio client
  (which took a quarter of a core): 265 → 334 steps/s at 8 students, same code; with the
  changes above, against the code before them: 187 → 267 steps/s at 8 students, 204 →
  332 at 32;
- PostgreSQL exports streamed in libpq's chunked mode instead of a server-side cursor, so
  the server keeps sending while this process formats: reviews CSV 121k → 174k rows/s
  (having PostgreSQL write each line with to_char instead: 111k → 121k, dropped);
- today's counts and the queue's counts in one statement: one statement fewer per study
  request; SQLite 0.58 → 0.48 ms for the two;
- the flipped or rated card's progress read with the deck and settings (one statement),
  and record_review starting from that row: one statement fewer per flip and rating
  (flip 6 → 4 statements and rate 11 → 9 on SQLite, 8 → 6 on PostgreSQL, with the
  change above).

Then, on 26 November (same method; HTTP figures are 8 / 32 students, steps/s):

- an htmx flip swaps in the card alone and counts nothing (flipping rates nothing, so the
  question's counts still stand): flip 4 → 3 statements, without queue.counts, its
  dearest (0.46 ms SQLite, about 1 ms PostgreSQL);
- the rating buttons rendered once per set of intervals (lru_cache; every new card's
  are the same): the flip fragment's render 0.49 → 0.11 ms with the change above; the
  two, against the code before them, over HTTP on SQLite: 244/233, 287/239 →
  263/282, 292/296;
- the session row names its user (decks.UserSession), so one statement reads session
  and user: one statement fewer per signed-in request; HTTP on SQLite 310/268,
  311/291 → 296/287, 310/310 (within the drift), on PostgreSQL 185/187, 205/214 →
  218/208, 214/208;
- scheduler.preview with one FSRS review per grade from one converted card (1 and 2 are
  both Again): 0.20 → about 0.14 ms per flip;
- the home page's links from the cached reversals and its percentages rounded in Python
  instead of floatformat: its render with 50 decks 17.6 → 10.2 ms;
- the study step's SQLite statements converted to qmark style once (Django's cursor runs
  a regular expression per execute: 2.7 % of a gunicorn worker's samples under load in
  py-spy) and the raw SELECT lists cached: not measurable over HTTP within the drift;
- all of these together, against the code before them, over HTTP on SQLite: 230/231 →
  318/267 in one A/B pair (253/253, 219/229 → 303/243, 281/235 in two more);
- the home page's recall on PostgreSQL computed in double precision (DATE_PART instead
  of EXTRACT, which returns numeric): its summary query for 50 decks 21 → 12.5 ms;
- the bench vacuums the progress and review tables after each rewind on PostgreSQL, as
  the generator leaves them (the same cards rated and rewound run after run had left
  70,000 dead row versions for the queue's scans to visit): PostgreSQL rate + next
  question 6.9 → 6.2 ms on the same code;
- the bench's scheduler core hands next_card's row to record_review, as the rate view
  does with the row it has just read (one read fewer), and its test client sends the
  rating form-encoded, as htmx does, instead of multipart.

And later on 26 November:

- the study step's statements run without Django's CursorWrapper layers when nothing
  watches the queries (rawsql.prepared_cursor; the query log and execute wrappers still
  get them): 23–29 µs saved per statement on SQLite, 33–57 µs on PostgreSQL, timed
  interleaved in one process; HTTP on SQLite 375/382, 341/358 → 417/406, 390/437 in two
  A/B pairs; on PostgreSQL within the drift (272/273, 261/269 → 276/260, 263/265);
- tried and dropped: gunicorn's C request parser (gunicorn_h1c; 284/284, 291/290 →
  261/298, 255/261), no connection health check on PostgreSQL (one `SELECT 1` per
  request; within the drift), and the reviews CSV's cells built as text by SQLite
  (fetching 8 values instead of 12 took 4.9 s instead of 2.6 s: SQLite's string
  concatenation costs more than Python's formatting);
- the study step's reads on PostgreSQL in binary, read by psycopg's C loaders instead of
  Django's Python loader for timestamptz text (the deck-and-settings read stays text for
  its JSON column): next_card 321 → 274 µs and 335 → 286 µs, interleaved;
- the home page's deck list printing its whole numbers with `{{% localize off %}}` (str()
  instead of number_format, same text) and reading only the deck columns it shows:
  50-deck home page 21.95 → 20.55 ms, then 18.82 → 18.14 ms (PostgreSQL 34.44 → 33.24
  ms), interleaved;
- also tried, no gain beyond the drift (8 / 32 students): TCP_CORK on each response
  (a gunicorn pre_request hook; 414/399, 402/383 → 432/385, 428/389), gthread workers
  with kept-alive connections (1 or 2 threads: 327/362, 297/371 against 372/312),
  gunicorn 25.3 instead of 27 (which lingers on each closed socket), and dropping the
  single-column user_id indexes of progress and reviews (record_review on PostgreSQL).

Later still on 26 November (the machine ran slow all evening: PostgreSQL rate + next
question 5–6 ms in-process where it had been 3.2, so every figure below is against the
code before it, interleaved in one process or in alternated runs):

- PostgreSQL: the rate view sends its write, the queue counts and the next card together
  (psycopg's pipeline mode, rawsql.pipelined; record_review(then=...)), one round trip
  instead of three. The next card's statement reads today's counts itself, lazily (only
  when it gets to the review or the new branch), so it no longer waits for counts'
  result.
  - HTTP, 8 / 32 students, four alternated pairs (old → new): 193/192 → 218/221,
    216/222 → 263/274, 240/219 → 244/248, 225/193 → 238/207.
  - Rate + next question in-process, four interleaved rounds: 6.11 → 5.63 ms.
  - SQLite keeps counts then next_card: it has no round trip to save, and counting
    today's reviews a second time cost 3.05 → 3.13 ms (eight interleaved rounds).
  - So does PostgreSQL without prepared statements (DJANGO_DB_PREPARE=0): planning the
    next card with its counts inline costs more than the round trip saves (1.28 → 1.68
    ms).
  - Section A shows the rate view's way on PostgreSQL as its own row. With today's
    counts inside it, it is no cheaper than next_card + record_review with the counts
    given: each statement after a commit waits for an idle CPU to wake (a `SELECT 1`
    takes 50 µs after another statement and 150 µs after a 1 ms pause);
- PostgreSQL prepared statements planned once (`SET plan_cache_mode =
  force_generic_plan` on each new connection, rawsql.plan_prepared_once; the ORM's
  statements are unprepared and unaffected): left to
  choose, PostgreSQL re-planned the next card with inline counts on every run (1.34–1.50
  → 0.58–0.61 ms) and done_today (0.41–0.43 → 0.32–0.34 ms);
- rawsql.instance builds the study step's instances without Model.__init__ (as from_db,
  attributes set at once; models with init signal receivers still go through from_db):
  a progress row and its card, interleaved, SQLite 46.0/32.0/31.2 → 33.8/23.2/22.8 µs,
  PostgreSQL 39.2 → 25.4 µs;
- the core's timings leave out the bench's own bookkeeping (the snapshot of each rated
  progress row for the rewind, 5–8 µs a step);
- tried and dropped: building the new Review the same way (100.9/100.9/99.9/54.2 against
  104.5/104.4/100.5/55.4 µs, interleaved: no gain);
- together, section A against the code before this evening, `--only core` alternated
  (old → new): PostgreSQL next_card + record_review 1.402 → 1.246 and 1.356 → 1.265 ms
  (next_card 0.50 → 0.41, done_today 1.09 → 0.91); SQLite 0.503 → 0.683, 0.585 → 0.551,
  0.872 → 0.703, 0.832 → 0.783, 0.762 → 0.647 ms.

In the evening of 26 November (the machine fast again at first: full runs at 18:47 and
18:52 met every target but the SQLite reviews CSV and the PostgreSQL core):

- ensure_progress (every study page open) finds the deck's newest card on a (deck, id)
  index, asked as the last entry at or below (deck, ∞), instead of `MAX(id) … WHERE
  deck_id = %s`, which PostgreSQL planned as a walk down the cards' primary key through
  every card of the decks made since (43,100 rows here): PostgreSQL ensure_progress 5.2 →
  0.30 ms, study page (full) at 100k cards 11.0 → 4.6 ms (`--only core,path`). The
  deck's own foreign-key index, covered by (deck, id) and (deck, position), is gone;
- reviews CSV: each card's cells written once for all students and found by list index
  where the card ids are dense (a dict where sparse), instead of a dict per student; a
  student's own export leaves reviews of decks no longer visible out in Python instead
  of the database checking each row's card (SQLite 0.3 s of 1M rows). `--only export`
  alternated (old → new): SQLite 194,601 / 197,147 → 212,073 / 207,582 rows/s,
  PostgreSQL 202,225 / 209,625 → 237,411 / 238,035 rows/s, peak RSS 121 → 111 and
  128 → 118 MB;
- cards CSV: times written with isoformat instead of strftime (a fifth of its time):
  54,730 / 57,429 → 67,403 / 71,258 rows/s;
- stats page: the half-hour buckets read with datetime.fromisoformat instead of
  strptime (0.50 s of 2.2 s for a heavy student's year): 2,034 → 1,673 ms in-process;
  then grouped as whole half hours since 1970 (PostgreSQL `FLOOR(DATE_PART('epoch', t)
  / 1800)`, SQLite `unixepoch(t) / 1800`) instead of formatted text (PostgreSQL's
  to_char() of a truncated timestamp: 0.83 → 0.19–0.28 s for the year's reviews), in an
  in-process probe alternated with the code before: SQLite 1,848 / 1,887 → 1,405 /
  1,472 ms, PostgreSQL 3,055 / 3,149 → 1,358 / 1,321 ms;
- deck page: the progress ids sorted alone (recall computed only for the recall sort),
  then one page's 100 rows read with their cards and recall, instead of sorting every
  row with its card's text and recall carried along; one statement more. 100k cards,
  first page, default sort, interleaved in-process: 246 → 130 ms SQLite, 207 → 55 ms
  PostgreSQL; in `--only pages` (a slower phase) 250 → 149 and 152 → 86 ms;
- the pages section clears the cache first: a rewound run leaves the same latest
  rating, so the stats page's first request had found the last run's figures;
- what the PostgreSQL core is made of (a probe of the bench's loop): with
  `synchronous_commit = off` it takes 0.61–0.63 ms instead of 1.02–1.13, so the wait
  for each rating's WAL flush is 0.35–0.5 ms of it on this machine (the same write on
  its own, after a read: 0.27–0.40 ms, and 0.15–0.28 with it off). Not changed: a
  rating must survive a crash. SQLite's `synchronous=NORMAL` in WAL mode does not flush
  at commit either;
- tried and dropped: rating, state before and state after fetched as one integer in
  the reviews CSV (one column instead of three): 4.44 → 4.37 s per 1M rows in-process,
  within the noise; the states as a list indexed by arithmetic: 2.41 → 2.31 s for the
  formatting alone, within the noise too.

Late on 26 November:

- reviews CSV: the database writes each line's cells from the rating on as one text
  (`ReviewCsvCells`: one `printf()` on SQLite, one `format()` on PostgreSQL), so each row
  comes as (user id, card id, text) instead of twelve values and Python formats nothing.
  Building the text by concatenation had cost more than it saved (above); one printf()
  makes one string. `--only export`, alternated with the code before (old → new):
  SQLite 175,558 / 248,821 → 284,156 / 291,186 rows/s, PostgreSQL 174,432 / 165,626 →
  240,100 / 203,357 rows/s. The databases round the four numbers from their shortest
  decimal, ties away from zero (a stability of 1.75515 is written 1.7552; Python's
  format() wrote 1.7551): 138 of the bench history's 3.8M numbers on SQLite, 150 on
  PostgreSQL;
- tried and dropped: without the reviews' and progress rows' own user_id indexes (the
  composite indexes that lead with user_id cover them; 11 index entries per rating
  instead of 13), the PostgreSQL core was within the noise (1.41–1.50 → 1.42–1.97 →
  1.39–1.42 ms, three rounds each in a slow phase, before / without / with them again).

Last on 26 November, with no change to the code: on a new host (kernel fc-v669; the
runs above were on other hosts, fc-v595 the latest) with the bench data generated afresh,
two pairs of full runs met every target on both databases. PostgreSQL core 0.733 and
0.776 ms (Anki 0.208 and 0.250: 3.52× and 3.10×), HTTP 384 / 400 and 420 / 370 steps/s
at 8 / 32 students; SQLite core 0.232 and 0.198 ms (1.06× and 1.03× Anki's), HTTP
673 / 630 and 686 / 720 steps/s, reviews CSV 348,973 and 366,267 rows/s. The misses
recorded above came in slow phases of the older hosts, where the same code had measured
PostgreSQL core 0.95–1.06 ms and SQLite HTTP 370–504 steps/s at 8 students. Probed
and not adopted:

- the PostgreSQL step as one round trip with today's counts already known (the rating's
  write and the next card's read pipelined, the counts carried over from before the
  rating): 0.670 and 0.581 ms against 0.806 and 0.655 for next_card + record_review and
  0.767 and 0.671 for the rate view's way (counts read inline), 600 steps each,
  interleaved. The rate view cannot know the counts before its write without a round
  trip of its own: the study day's start comes from the settings its first statement
  reads;
- the stats page's ratings and calibration from one pass over the history instead of
  two (conditional sums instead of GROUP BY): SQLite 2.25 / 2.12 s → 2.05 / 2.00 s for
  the 1M-review student; the calibration's window over every review is most of it
  (1.85–1.98 s), so it stays as it is.
"""


def write_section(key: str, title: str, report: str, *, plans: list | None = None) -> None:
    """Rewrite BENCHMARKS.md, replacing section ``key`` (``sqlite``, ``postgresql`` or
    ``loadtest:postgresql`` …) and keeping the others."""
    existing = REPORT.read_text() if REPORT.exists() else ""
    found = {
        name: body.strip("\n")
        for name, body in re.findall(
            r"<!-- bench:([\w:]+):start -->\n(.*?)<!-- bench:\1:end -->", existing, flags=re.S
        )
    }
    body = [f"## {title}", "", report.rstrip()]
    if plans:
        plan_text = _format_plans(plans).strip().removeprefix("Query plans:").strip()
        body += ["", "Query plans (`--explain`):", "", "```", plan_text, "```"]
    found[key] = "\n".join(body).rstrip()
    order = [*BACKEND_ORDER, *sorted(k for k in found if k not in BACKEND_ORDER)]
    parts = [HEADER]
    for name in order:
        if name in found:
            parts.append(f"<!-- bench:{name}:start -->\n{found[name]}\n<!-- bench:{name}:end -->\n")
    REPORT.write_text("\n".join(parts))


# --- the timed study session ------------------------------------------------------------


def _branch(progress: CardProgress, now: datetime) -> str:
    if progress.state == State.NEW:
        return "new"
    if progress.state == State.REVIEW:
        return "review"
    return "learning" if progress.due <= now else "learn-ahead"


def _snapshot(progress: CardProgress) -> dict[str, object]:
    return {f.attname: getattr(progress, f.attname) for f in CardProgress._meta.concrete_fields}


def _run_session(data: benchdata.BenchData, steps: int, warmup: int) -> Session:
    """Study ``warmup + steps`` cards, then put the data back as it was.

    The ratings are committed like real ones; afterwards the new reviews are deleted and
    the touched progress rows restored, so the cached data stays valid for the next run.
    """
    user, deck, study_settings = data.user, data.deck, data.study_settings
    rate = _Rater(data)
    session = Session()
    now = benchdata.NOW
    perf = time.perf_counter

    def counted_step(at: datetime) -> None:
        with CaptureQueriesContext(connection) as q_done:
            done = queue.done_today(user, study_settings, at)
        with CaptureQueriesContext(connection) as q_next:
            progress = queue.next_card(user, deck, study_settings, at, done)
        if progress is None:
            raise CommandError(f"The queue ran dry at {at:%H:%M:%S}.")
        branch = _branch(progress, at)
        rate.keep(progress)
        with CaptureQueriesContext(connection) as q_record:
            rate(progress, at)
        session.queries[branch][(len(q_done), len(q_next), len(q_record))] += 1
        session.statements.setdefault(
            branch,
            {
                "done_today": [q["sql"] for q in q_done],
                "next_card": [q["sql"] for q in q_next],
                "record_review": [q["sql"] for q in q_record],
            },
        )

    with rate.rewound():
        for _ in range(warmup):
            counted_step(now)
            now += timedelta(seconds=STEP_SECONDS)
        session.start = now
        load_before = os.getloadavg()[0]
        for index in range(steps):
            t0 = perf()
            done = queue.done_today(user, study_settings, now)
            t1 = perf()
            progress = queue.next_card(user, deck, study_settings, now, done)
            t2 = perf()
            if progress is None:
                raise CommandError(f"The queue ran dry at {now:%H:%M:%S}.")
            branch = _branch(progress, now)
            rate.keep(progress)
            t3 = perf()  # the bench's own bookkeeping above is not the step's
            rate(progress, now)
            t4 = perf()
            session.done.append(t1 - t0)
            session.next.append(t2 - t1)
            session.record.append(t4 - t3)
            session.branch.append(branch)
            now += timedelta(seconds=STEP_SECONDS)
            if index % COUNT_EVERY == COUNT_EVERY - 1:
                counted_step(now)
                now += timedelta(seconds=STEP_SECONDS)
        session.end = now
        session.load = (load_before, os.getloadavg()[0])
    return session


def _run_rated_then_next(data: benchdata.BenchData, steps: int, warmup: int) -> Session:
    """The step as the rate view takes it: record the rating with the next card's read
    riding along (``record_review(then=[next_card_read(...)])``), today's counts read by
    that statement. On PostgreSQL the write and the read go in one round trip. Timed
    from the rating to the next card in hand; the data is put back afterwards."""
    user, deck, study_settings = data.user, data.deck, data.study_settings
    rate = _Rater(data)
    session = Session()
    now = benchdata.NOW
    perf = time.perf_counter
    step_time = timedelta(seconds=STEP_SECONDS)

    def step(progress: CardProgress, at: datetime) -> CardProgress:
        following = queue.next_card_read(user, deck, study_settings, at + step_time)
        rate(progress, at, then=[following])
        if following.result is None:
            raise CommandError(f"The queue ran dry at {at:%H:%M:%S}.")
        return following.result

    with rate.rewound():
        progress = queue.next_card(user, deck, study_settings, now)
        for index in range(warmup + steps):
            rate.keep(progress)
            if index % COUNT_EVERY == COUNT_EVERY - 1:  # untimed: the query log is on
                with CaptureQueriesContext(connection) as captured:
                    progress = step(progress, now)
                session.queries["step"][len(captured)] += 1
            else:
                start = perf()
                progress = step(progress, now)
                if index >= warmup:
                    session.record.append(perf() - start)
            now += step_time
    return session


class _Rater:
    """The core loops' ratings: drawn like the bench data's from a seeded generator,
    committed as the rate view commits them (with the progress row it has just read),
    and taken back when ``rewound()`` ends, so the cached data stays as generated."""

    def __init__(self, data: benchdata.BenchData) -> None:
        self.user, self.study_settings = data.user, data.study_settings
        self.rng = random.Random(benchdata.SEED + 1)
        random.seed(benchdata.SEED)  # FSRS's interval fuzz draws from the global generator
        self.saved: dict[int, dict[str, object]] = {}

    def __call__(self, progress: CardProgress, at: datetime, then=()) -> None:
        services.record_review(
            self.user,
            progress.card_id,
            self.rng.choices(benchdata.RATINGS, weights=benchdata.RATING_WEIGHTS)[0],
            at,
            time_taken_ms=self.rng.randint(1500, 12000),
            expected_reps=progress.reps,
            study_settings=self.study_settings,
            progress=progress,
            then=then,
        )

    def keep(self, progress: CardProgress) -> None:
        """Remember the row as it was before its card's first rating, for the rewind."""
        self.saved.setdefault(progress.card_id, _snapshot(progress))

    @contextmanager
    def rewound(self) -> Iterator[None]:
        last_review_id = Review.objects.filter(user=self.user).aggregate(last=Max("id"))["last"]
        try:
            yield
        finally:
            _restore(self.user, self.saved, last_review_id)


def _restore(user, saved: dict[int, dict[str, object]], last_review_id: int) -> None:
    fields = [f.name for f in CardProgress._meta.concrete_fields if not f.primary_key]
    with transaction.atomic():
        CardProgress.objects.bulk_update(
            [CardProgress(**values) for values in saved.values()], fields, batch_size=500
        )
        Review.objects.filter(user=user, id__gt=last_review_id).delete()
    benchdata.vacuum_after_rewind()


def _sample_branch(session: Session) -> str:
    return "review" if "review" in session.statements else next(iter(session.statements))


def _where_the_time_goes(
    session: Session, data: benchdata.BenchData
) -> list[tuple[str, list[float]]]:
    """The step's own SQL (captured, parameters inlined) through a raw cursor, and FSRS
    alone: what is left is Django building queries and model instances."""
    perf = time.perf_counter
    rows: list[tuple[str, list[float]]] = []

    def execute(cursor, statements: list[str]) -> None:
        for sql in statements:
            cursor.execute(sql)
            if cursor.description is not None:
                cursor.fetchall()

    def run(statements: list[str], *, writes: bool = False, times: int = 200) -> list[float]:
        timings = []
        with connection.cursor() as cursor:
            for _ in range(times):
                start = perf()
                if writes:
                    # Replayed for their cost only: the transaction is rolled back.
                    with transaction.atomic():
                        execute(cursor, statements)
                        transaction.set_rollback(True)
                else:
                    execute(cursor, statements)
                timings.append(perf() - start)
        return timings

    sample = session.statements[_sample_branch(session)]
    rows.append(("done_today SQL", run(sample["done_today"])))
    for branch in ("learning", "review", "new", "learn-ahead"):
        if branch in session.statements:
            rows.append(
                (f"next_card SQL, {branch} card", run(session.statements[branch]["next_card"]))
            )
    writes = [
        sql
        for sql in sample["record_review"]
        if not sql.upper().startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))
    ]
    rows.append(("record_review SQL (rolled back)", run(writes, writes=True)))

    progress = CardProgress.objects.filter(
        user=data.user, deck=data.deck, state=State.REVIEW
    ).first()
    before = services.progress_state(progress)
    fsrs = services.scheduler_for(data.study_settings)
    timings = []
    for _ in range(200):
        start = perf()
        scheduler.review(before, 4, benchdata.NOW, fsrs)
        timings.append(perf() - start)
    rows.append(("FSRS scheduler.review", timings))
    return rows


def _one_offs(data: benchdata.BenchData) -> dict[str, list[float]]:
    """Timings outside the step: the rest of what the study page runs."""
    user, deck, study_settings = data.user, data.deck, data.study_settings
    now = benchdata.NOW
    perf = time.perf_counter
    results: dict[str, list[float]] = {"counts": [], "ensure_progress": []}
    for _ in range(200):
        start = perf()
        queue.counts(user, deck, study_settings, now)
        results["counts"].append(perf() - start)
    # Every progress row exists, so this inserts nothing; it is the cost of opening the
    # study page.
    for _ in range(5):
        start = perf()
        services.ensure_progress(user, deck)
        results["ensure_progress"].append(perf() - start)
    return results


# --- query plans ------------------------------------------------------------------------


def _explain(data: benchdata.BenchData) -> list[tuple[str, str, list[object], list[str]]]:
    """EXPLAIN every distinct query of the step (and of the page's other calls) once.

    next_card stops at the first branch that has a card, so two extra calls with a
    clock ten years back reach the review, new and learn-ahead queries; their
    timestamps are swapped back to the real clock before EXPLAIN.
    """
    user, deck, study_settings = data.user, data.deck, data.study_settings
    now = benchdata.NOW
    past = now - timedelta(days=3650)
    adapt = connection.ops.adapt_datetimefield_value
    real_time = {
        adapt(past): adapt(now),
        adapt(past + queue.LEARN_AHEAD): adapt(now + queue.LEARN_AHEAD),
    }
    captured: dict[str, tuple[str, list[object]]] = {}
    label = ""

    def capture(execute, sql, params, many, context):
        statement = sql.lstrip().upper()
        # INSERT … VALUES has no plan worth showing; INSERT … SELECT (ensure_progress) has.
        if statement.startswith(("SELECT", "UPDATE", "DELETE")) or (
            statement.startswith("INSERT") and "SELECT" in statement
        ):
            captured.setdefault(sql, (label, [real_time.get(p, p) for p in params or ()]))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        label = "done_today"
        done = queue.done_today(user, study_settings, now)
        label = "next_card"
        progress = queue.next_card(user, deck, study_settings, now, done)
        queue.next_card(user, deck, study_settings, past, queue.DoneToday(0, 0))
        queue.next_card(user, deck, study_settings, past, queue.DoneToday(9999, 9999))
        label = "record_review"
        with transaction.atomic():
            services.record_review(user, progress.card_id, 4, now, study_settings=study_settings)
            transaction.set_rollback(True)  # a plan, not a rating
        label = "counts (page render, not in step)"
        queue.counts(user, deck, study_settings, now)
        label = "ensure_progress (page open, not in step)"
        services.ensure_progress(user, deck)  # inserts nothing: every row exists

    plans = []
    with connection.cursor() as cursor:
        for sql, (where, params) in captured.items():
            if connection.vendor == "sqlite":
                cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
                plan = _sqlite_tree(cursor.fetchall())
            else:
                read_only = sql.lstrip().upper().startswith("SELECT") and "FOR UPDATE" not in sql
                prefix = "EXPLAIN (ANALYZE, BUFFERS) " if read_only else "EXPLAIN "
                cursor.execute(prefix + sql, params)
                plan = [row[0] for row in cursor.fetchall()]
            plans.append((where, sql, params, plan))
    return plans


def _sqlite_tree(rows: list[tuple]) -> list[str]:
    depth = {0: -1}
    lines = []
    for node, parent, _unused, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
    return lines


def _format_plans(plans: list[tuple[str, str, list[object], list[str]]]) -> str:
    out = ["", "Query plans:"]
    for where, sql, params, plan in plans:
        out += ["", f"[{where}] {sql}", f"  params: {params}"]
        out += [f"  {line}" for line in plan]
    return "\n".join(out) + "\n"
