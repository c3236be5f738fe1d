"""``manage.py loadtest``: issue 7's load test. No rating is lost or counted twice.

gunicorn with 2 workers (production settings, loopback) against DATABASE_URL's database
(PostgreSQL for the real test; without DATABASE_URL, the bench's SQLite file), and 20
simulated students (``bench/loadgen.py``) studying their own decks for 60 seconds. Then
the database is checked against what the clients were told: every rating answered 200
(and not "already rated") must be exactly one Review row, and the cards' review counts
must move by exactly as many. Any 5xx, lost or duplicated review fails the command.
Finally every rating of the run is rewound, so the data can be used again.

Uses the load students of ``decks.benchdata`` (made here if the database lacks them:
a few seconds, not the whole bench data). Figures go to stdout and BENCHMARKS.md.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from decks import benchdata
from decks.management.commands.bench import Command as BenchCommand
from decks.management.commands.bench import (
    Gunicorn,
    _database_label,
    _environment,
    _ppp,
    prepare_database,
    run_load,
    write_section,
)


class Command(BaseCommand):
    help = "Load test: gunicorn -w 2, 20 students for 60 s; no 5xx, no lost or doubled review."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--students", type=int, default=20, help="Concurrent students (20).")
        parser.add_argument("--seconds", type=float, default=60.0, help="Duration (60 s).")

    def handle(self, *args, students: int, seconds: float, **options) -> None:
        if not 1 <= students <= benchdata.LOAD_STUDENTS:
            raise CommandError(f"--students must be 1 to {benchdata.LOAD_STUDENTS}.")
        if not 1 <= seconds <= 600:
            raise CommandError("--seconds must be 1 to 600: the test is bounded.")
        started = time.perf_counter()
        settings.DEBUG = False
        # The bench's SQLite file unless DATABASE_URL names a database (PostgreSQL).
        BenchCommand()._use_bench_database()
        prepare_database()
        self.stdout.write(f"Load test on {_database_label()}.")
        if connection.vendor != "postgresql":
            self.stderr.write("Note: issue 7 asks for PostgreSQL; set DATABASE_URL for it.")
        load = benchdata.find_load_students(students)
        if load is None:
            self.stdout.write("Making the load students…")
            load = benchdata.generate_load_students(benchdata.LOAD_STUDENTS)[:students]
            benchdata.finish_generation()
        with Gunicorn(self.stderr.write) as server:
            specs = server.sessions(load)
            # Warm-up: workers import lazily and compile templates on first use.
            run_load(server.port, specs, concurrency=min(students, 4), seconds=3, students=load)
            self.stdout.write(f"{students} students studying for {seconds:g} s…")
            # The asyncio client waits for every answer, so each rating it sent is either
            # answered or an error: the strictest check of lost and doubled reviews.
            result = run_load(server.port, specs, students, seconds, load, generator="asyncio")
            log = server.log_tail()

        failures = []
        if result["status_5xx"]:
            failures.append(f"{result['status_5xx']} responses were 5xx")
        if result["errors"]:
            failures.append(f"{result['errors']} requests failed")
        if result["lost"] or result["duplicated"]:
            failures.append(f"{result['lost']} reviews lost, {result['duplicated']} duplicated")
        if not result["reps_consistent"]:
            failures.append("the cards' review counts do not match the review rows")
        report = _report(result, students, failures, log)
        self.stdout.write(report)
        write_section(f"loadtest:{connection.vendor}", _title(), report)
        self.stdout.write(
            f"Load test {'FAILED' if failures else 'passed'} in "
            f"{time.perf_counter() - started:.0f} s; wrote BENCHMARKS.md."
        )
        if failures:
            raise CommandError("; ".join(failures))


def _title() -> str:
    name = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(connection.vendor)
    return f"Load test ({name or connection.vendor})"


def _report(result: dict, students: int, failures: list[str], log: str) -> str:
    lat = result["latency"]
    lines = [
        *_environment(),
        f"- `make loadtest`: gunicorn `--workers 2` (sync), production settings, loopback; "
        f"{students} students, each studying its own 1,000-card deck (flip GET + rate POST, "
        f"closed loop, no think time) for {result['duration_s']:.0f} s.",
        "",
        "```",
        f"steps (flip + rate)        {result['steps']:,} ({result['steps_per_s']:.0f}/s)",
        f"requests                   {result['requests']:,} ({result['requests_per_s']:.0f}/s)",
        f"latency p50/p95/p99 ms     all {_ppp(lat['all'])}; flip {_ppp(lat['flip'])}; "
        f"rate {_ppp(lat['rate'])}",
        f"max latency                {lat['all']['max_ms'] or 0:.0f} ms",
        f"errors                     {result['errors']} (5xx: {result['status_5xx']}, "
        f"connection: {result['connection_errors']})",
        f"ratings answered 200       {result['ratings_ok']:,} "
        f"(+{result['ratings_stale']} answered 'already rated')",
        f"review rows added          {result['db_reviews']:,}",
        f"lost / duplicated          {result['lost']} / {result['duplicated']}",
        f"card review counts match   {'yes' if result['reps_consistent'] else 'NO'}",
        "```",
        "",
        f"Result: {'FAILED: ' + '; '.join(failures) if failures else 'passed'}.",
    ]
    if result["error_samples"]:
        lines += [
            "",
            "Errors (first few):",
            "",
            *[f"    {e[:200]}" for e in result["error_samples"]],
        ]
    if failures and log.strip():
        lines += ["", "gunicorn log (tail):", "", "```", log.strip()[-1500:], "```"]
    return "\n".join(lines) + "\n"
