"""The benchmark's HTTP clients (bench/loadgen.py, and wrk with bench/wrk_study.lua):
the asyncio one reads responses by their length, keeps the connection when the server
does, and opens a new one when the server closes it, so the throughput it reports is the
server's; both count what the server recorded."""

from __future__ import annotations

import asyncio
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils.crypto import get_random_string

from bench.loadgen import Connection, main, run_wrk
from decks.models import Review
from tests.conftest import make_deck, make_user


def _run(coroutine):
    """asyncio.run in a thread of its own: the browser tests' Playwright keeps an event
    loop running in the main thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


RESPONSES = [
    # kept alive, sized
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
    # kept alive, chunked
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n",
    # sized, then the server closes (what gunicorn's sync workers do)
    b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nConnection: close\r\n\r\nthird",
    # on a new connection: no length, the body runs to the close
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nfourth",
]


async def _exchange() -> tuple[list, list[int]]:
    answers = iter(RESPONSES)
    requests_per_connection: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests_per_connection.append(0)
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = [
                int(line.split(b":")[1]) for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]  # fmt: skip
            if length:
                await reader.readexactly(length[0])
            requests_per_connection[-1] += 1
            answer = next(answers)
            writer.write(answer)
            await writer.drain()
            if b"Connection: close" in answer:
                break
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = Connection("127.0.0.1", port)
    try:
        got = [
            await connection.request("GET", "/a", {}),
            await connection.request("POST", "/b", {}, b"x=1"),
            await connection.request("GET", "/c", {}),
            await connection.request("GET", "/d", {}),
        ]
    finally:
        connection.close()
        server.close()
        await server.wait_closed()
    return [(r.status, r.body) for r in got], requests_per_connection


def test_connection_is_reused_until_the_server_closes_it():
    got, requests_per_connection = _run(_exchange())
    assert got == [(200, b"first"), (200, b"second"), (201, b"third"), (200, b"fourth")]
    assert requests_per_connection == [3, 1]


async def _after_idle_close() -> tuple[list, int]:
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers one request as if keeping the connection, then closes it (an idle timeout).
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    connection = Connection("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        got = [await connection.request("GET", "/", {}) for _ in range(2)]
    finally:
        connection.close()
        server.close()
        await server.wait_closed()
    return [(r.status, r.body) for r in got], connections


def test_a_request_on_a_connection_the_server_dropped_is_sent_again_on_a_new_one():
    got, connections = _run(_after_idle_close())
    assert got == [(200, b"ok"), (200, b"ok")]
    assert connections == 2


@pytest.mark.parametrize("generator", ["asyncio", "wrk"])
def test_each_load_generator_reports_what_the_server_recorded(live_server, generator):
    """Both clients study through a real server for a second and count the same ratings
    the database holds, per student, with a latency sample for every request. Two
    students at once on PostgreSQL; the test server's in-memory SQLite database is one
    connection shared by its threads, so one at a time there."""
    if generator == "wrk" and shutil.which("wrk") is None:
        message = "wrk is not installed (apt-get install wrk)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; .ci/run installs it.", pytrace=False)
        pytest.skip(message)
    specs, users = [], []
    for name in ("ann", "ben"):
        user = make_user(name)
        client = Client()
        client.force_login(user)
        csrf = get_random_string(32)
        specs.append(
            {
                "deck": make_deck(f"{name}'s", cards=40, owner=user).pk,
                "cookie": f"{settings.SESSION_COOKIE_NAME}="
                f"{client.cookies[settings.SESSION_COOKIE_NAME].value}; "
                f"{settings.CSRF_COOKIE_NAME}={csrf}",
                "csrf": csrf,
            }
        )
        users.append(user)
    config = {
        "host": live_server.thread.host,
        "port": live_server.thread.port,
        "duration": 1,
        "concurrency": 2 if connection.vendor == "postgresql" else 1,
        "students": specs,
        "timeout": 10,
    }
    result = run_wrk(config) if generator == "wrk" else _run(main(config))

    assert result["errors"] == 0, result["error_samples"]
    for user, student in zip(users, result["students"], strict=False):
        assert student["ratings_stale"] == 0
        recorded = Review.objects.filter(user=user).count()
        assert 0 < student["ratings_ok"] <= recorded
        assert recorded <= student["ratings_ok"] + student["ratings_in_flight"]
    assert result["steps"] == sum(s["ratings_ok"] for s in result["students"])
    latency = result["latency"]
    assert latency["rate"]["count"] == result["steps"]
    students = config["concurrency"]
    assert len(result["students"]) == latency["open"]["count"] == students
    # A student's last flip may have no rating after it when time runs out.
    assert result["steps"] <= latency["flip"]["count"] <= result["steps"] + students
    assert 0 < latency["all"]["p50_ms"] <= latency["all"]["p99_ms"]
