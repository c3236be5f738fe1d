"""A small closed-loop load generator for the study flow (stdlib only).

Each simulated student opens its own deck's study page, then loops as fast as the server
answers: flip (GET, htmx) and rate (POST, htmx, with the card token from the page). A
study step is one flip plus one rate. Runs for a bounded time, then stops by itself;
refuses any address outside the loopback range, since it is only for a server on this
machine.

Used by ``manage.py bench`` and ``manage.py loadtest``, which start gunicorn, make the
students' sessions and pass them in; by hand::

    python bench/loadgen.py < config.json

config: {"host": "127.0.0.1", "port": 8000, "duration": 15, "concurrency": 8,
         "students": [{"deck": 1, "cookie": "sessionid=…; csrftoken=…", "csrf": "…"}],
         "seed": 1, "timeout": 30}

It prints one JSON object: steps, requests, latencies (ms) per kind, errors, and for each
student how many ratings the server accepted (what the load test checks the database
against).

Each student keeps one HTTP/1.1 connection open, as a browser does, and opens a new one
whenever the server closes it (gunicorn's sync workers do after every response).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

TOKEN = re.compile(rb'name="token" value="([^"]+)"')
# The rate view answers 200 with this message when the token's card was already rated.
STALE = b"already rated"
# Ratings drawn like the bench data's (4 % 1, 6 % 2, 15 % 3, 55 % 4, 20 % 5).
RATINGS = (1, 2, 3, 4, 5)
RATING_WEIGHTS = (4, 6, 15, 55, 20)
MAX_ERRORS_KEPT = 20
# A student that gets this many failures in a row stops (the server is down, say),
# so a broken run ends quickly instead of spinning until the deadline.
MAX_ERRORS_IN_A_ROW = 10


def check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise SystemExit(f"loadgen: {host!r} is not an IP address on this machine") from None
    if not address.is_loopback:
        raise SystemExit(f"loadgen: refusing {host}: only loopback addresses are allowed")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One student's HTTP/1.1 connection, kept open between requests as a browser keeps
    it. A server that closes it (gunicorn's sync workers do after every response, saying
    ``Connection: close``) gets a new one for the next request."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> Response:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        reused = self.writer is not None
        try:
            return await self._exchange(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            if not reused:
                raise
        # The server had closed the kept connection before reading this request (an idle
        # timeout): nothing was processed, so send it once more on a new connection.
        return await self._exchange(message)

    async def _exchange(self, message: bytes) -> Response:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(message)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        parsed = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
        if "content-length" in parsed:
            payload = await self.reader.readexactly(int(parsed["content-length"]))
        elif parsed.get("transfer-encoding", "").lower() == "chunked":
            payload = await self._chunks()
        else:
            payload = await self.reader.read()  # until the server closes
            parsed["connection"] = "close"
        if parsed.get("connection", "").lower() == "close":
            self.close()
        return Response(int(status_line.split()[1]), parsed, payload)

    async def _chunks(self) -> bytes:
        out = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # the empty trailer
                return bytes(out)
            out += await self.reader.readexactly(size)
            await self.reader.readexactly(2)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class StudentResult:
    deck: int
    ratings_ok: int = 0  # 200 answers to a rating, counted by the server
    ratings_stale: int = 0  # 200 answers saying the card was already rated
    # A rating sent but not answered when the run ended (wrk's runs only: this client
    # waits for every answer), which the server may or may not have recorded.
    ratings_in_flight: int = 0
    finished: bool = False  # the queue ran dry
    errors: int = 0


@dataclass
class Run:
    host: str
    port: int
    deadline: float
    timeout: float
    # (kind, start offset s, duration s, status); status 0 is a connection error
    samples: list[tuple[str, float, float, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0

    async def call(
        self, connection: Connection, kind: str, method: str, path: str,
        headers: dict[str, str], body: bytes = b"",
    ) -> Response | None:  # fmt: skip
        start = time.perf_counter()
        try:
            response = await asyncio.wait_for(
                connection.request(method, path, headers, body), self.timeout
            )
        except (
            TimeoutError,
            OSError,
            ValueError,
            IndexError,
            asyncio.IncompleteReadError,
        ) as error:
            connection.close()
            self.samples.append((kind, start - self.started, time.perf_counter() - start, 0))
            self._error(f"{kind}: {type(error).__name__}: {error}")
            return None
        self.samples.append(
            (kind, start - self.started, time.perf_counter() - start, response.status)
        )
        if response.status >= 400:
            self._error(f"{kind}: HTTP {response.status}: {response.body[:200]!r}")
        return response

    def _error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(text)


async def student(run: Run, spec: dict, result: StudentResult, rng: random.Random) -> None:
    connection = Connection(run.host, run.port)
    try:
        await _study(run, connection, spec, result, rng)
    finally:
        connection.close()


async def _study(
    run: Run, connection: Connection, spec: dict, result: StudentResult, rng: random.Random
) -> None:
    deck = spec["deck"]
    base = {"Cookie": spec["cookie"]}
    htmx = {**base, "HX-Request": "true", "HX-Current-URL": f"/decks/{deck}/study/"}
    page = await run.call(connection, "open", "GET", f"/decks/{deck}/study/", base)
    match = page and page.status == 200 and TOKEN.search(page.body)
    if not match:
        result.errors += 1
        return
    token = match.group(1).decode()
    in_a_row = 0
    while time.perf_counter() < run.deadline and in_a_row < MAX_ERRORS_IN_A_ROW:
        if in_a_row:
            await asyncio.sleep(0.05)  # back off a little after a failure
        query = urlencode({"token": token})
        flip = await run.call(connection, "flip", "GET", f"/decks/{deck}/study/flip/?{query}", htmx)
        if flip is None or flip.status != 200:
            result.errors += 1
            in_a_row += 1
            continue
        rating = rng.choices(RATINGS, weights=RATING_WEIGHTS)[0]
        form = urlencode({"token": token, "rating": rating}).encode()
        rate = await run.call(
            connection,
            "rate",
            "POST",
            f"/decks/{deck}/study/rate/",
            {
                **htmx,
                "Content-Type": "application/x-www-form-urlencoded",
                "X-CSRFToken": spec["csrf"],
            },
            form,
        )
        if rate is None or rate.status != 200:
            if rate is not None and rate.status < 400:
                run._error(f"rate: unexpected HTTP {rate.status}")
            result.errors += 1
            in_a_row += 1
            continue
        in_a_row = 0
        if STALE in rate.body:
            result.ratings_stale += 1
        else:
            result.ratings_ok += 1
        match = TOKEN.search(rate.body)
        if not match:
            result.finished = True  # "all done": nothing left to study
            return
        token = match.group(1).decode()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(max(math.ceil(q * len(ordered)) - 1, 0), len(ordered) - 1)] * 1000


def _summary(durations: list[float]) -> dict[str, float | int | None]:
    return {
        "count": len(durations),
        "p50_ms": _percentile(durations, 0.50),
        "p95_ms": _percentile(durations, 0.95),
        "p99_ms": _percentile(durations, 0.99),
        "max_ms": max(durations) * 1000 if durations else None,
    }


def _target(config: dict) -> tuple[str, int, int, list[dict]]:
    """The server (loopback only) and the students to run, from the config."""
    host, port = config.get("host", "127.0.0.1"), int(config["port"])
    check_loopback(host)
    concurrency = int(config["concurrency"])
    students = config["students"][:concurrency]
    if len(students) < concurrency:
        raise SystemExit(f"loadgen: {concurrency} students asked for, {len(students)} given")
    return host, port, concurrency, students


async def main(config: dict) -> dict:
    host, port, concurrency, students = _target(config)
    duration = float(config["duration"])
    run = Run(host, port, deadline=0.0, timeout=float(config.get("timeout", 30)))
    results = [StudentResult(deck=spec["deck"]) for spec in students]
    seed = int(config.get("seed", 1))
    run.started = time.perf_counter()
    run.deadline = run.started + duration
    await asyncio.gather(
        *(
            student(run, spec, result, random.Random(seed * 1000 + index))
            for index, (spec, result) in enumerate(zip(students, results, strict=True))
        )
    )
    elapsed = time.perf_counter() - run.started
    ok = [s for s in run.samples if s[0] in ("flip", "rate") and 200 <= s[3] < 400]
    steps = sum(r.ratings_ok + r.ratings_stale for r in results)
    return {
        "concurrency": concurrency,
        "duration_s": elapsed,
        "steps": steps,
        "steps_per_s": steps / elapsed if elapsed else 0.0,
        "requests": len(run.samples),
        "requests_per_s": len(run.samples) / elapsed if elapsed else 0.0,
        "errors": sum(1 for s in run.samples if not 200 <= s[3] < 400),
        "status_5xx": sum(1 for s in run.samples if s[3] >= 500),
        "connection_errors": sum(1 for s in run.samples if s[3] == 0),
        "latency": {
            "all": _summary([s[2] for s in ok]),
            "flip": _summary([s[2] for s in ok if s[0] == "flip"]),
            "rate": _summary([s[2] for s in ok if s[0] == "rate"]),
            "open": _summary([s[2] for s in run.samples if s[0] == "open" and s[3] == 200]),
        },
        "error_samples": run.errors,
        "students": [r.__dict__ for r in results],
    }


WRK_SCRIPT = Path(__file__).with_name("wrk_study.lua")


def run_wrk(config: dict) -> dict:
    """The same run through wrk (a C client, Debian's ``wrk``) and bench/wrk_study.lua,
    summed up as main() sums up its own: the load generator shares the CPU with the
    server, and wrk takes a fraction of what this asyncio client does."""
    host, port, concurrency, students = _target(config)
    seconds = max(math.ceil(float(config["duration"])), 1)
    timeout = math.ceil(float(config.get("timeout", 30)))
    with tempfile.NamedTemporaryFile("w", suffix=".tsv") as listing:
        listing.writelines(f"{s['deck']}\t{s['cookie']}\t{s['csrf']}\n" for s in students)
        listing.flush()
        done = subprocess.run(
            ["wrk", "--threads", str(concurrency), "--connections", str(concurrency),
             "--duration", f"{seconds}s", "--timeout", f"{timeout}s",
             "--script", str(WRK_SCRIPT), f"http://{host}:{port}/"],
            env={**os.environ, "STUDY_WRK_STUDENTS": listing.name},
            capture_output=True,
            text=True,
            timeout=seconds + timeout + 30,
        )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"loadgen: wrk failed ({done.returncode}): {done.stderr[-2000:]}")
    return _wrk_result(done.stdout, concurrency)


def _wrk_result(output: str, concurrency: int) -> dict:
    """main()'s summary from what wrk_study.lua's done() printed."""
    results: list[dict] = []
    samples: dict[str, list[float]] = {"open": [], "flip": [], "rate": []}
    errors: list[str] = []
    summary = None
    for line in output.splitlines():
        tag, *fields = line.split("\t")
        if tag == "SUMMARY":
            summary = [int(f) for f in fields]
        elif tag == "STUDENT":
            _index, deck, ok, stale, in_flight, failed, server_errors, finished = fields
            results.append(
                {
                    "deck": int(deck),
                    "ratings_ok": int(ok),
                    "ratings_stale": int(stale),
                    "ratings_in_flight": int(in_flight),
                    "finished": finished == "true",
                    "errors": int(failed),
                    "server_errors": int(server_errors),
                }
            )
        elif tag == "SAMPLES" and fields[1]:
            samples[fields[0]] += [int(us) / 1e6 for us in fields[1].split(",")]
        elif tag == "ERROR" and len(errors) < MAX_ERRORS_KEPT:
            errors.append(fields[0])
    if summary is None or len(results) != concurrency:
        raise SystemExit(f"loadgen: wrk printed no summary:\n{output[-2000:]}")
    micros, requests, connect, read, write, _status, timeouts = summary
    elapsed = micros / 1e6
    connection_errors = connect + read + write + timeouts
    steps = sum(r["ratings_ok"] + r["ratings_stale"] for r in results)
    return {
        "generator": "wrk",
        "concurrency": concurrency,
        "duration_s": elapsed,
        "steps": steps,
        "steps_per_s": steps / elapsed if elapsed else 0.0,
        "requests": requests,
        "requests_per_s": requests / elapsed if elapsed else 0.0,
        "errors": sum(r["errors"] for r in results) + connection_errors,
        "status_5xx": sum(r.pop("server_errors") for r in results),
        "connection_errors": connection_errors,
        "latency": {
            "all": _summary(samples["flip"] + samples["rate"]),
            "flip": _summary(samples["flip"]),
            "rate": _summary(samples["rate"]),
            "open": _summary(samples["open"]),
        },
        "error_samples": errors,
        "students": results,
    }


if __name__ == "__main__":
    config = json.load(sys.stdin)
    if config.get("generator") == "wrk":
        print(json.dumps(run_wrk(config)))
    else:
        print(json.dumps(asyncio.run(main(config))))
