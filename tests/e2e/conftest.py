"""Browser tests: Debian's Chromium driven by pytest-playwright against ``live_server``."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.core.management import call_command
from playwright.sync_api import ConsoleMessage, Page, expect

from decks.management.commands.setup_demo import DEMO_PASSWORD, DEMO_USERNAME
from decks.models import Deck

# Playwright's sync API keeps an asyncio event loop running in the test thread for the
# rest of the session once it has started, and Django's ORM refuses to run inside one.
# The test thread only touches the database while the browser waits, so this is safe; it
# must stay set for the whole session, not just these tests, for the same reason.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path("/usr/bin/chromium")
DEMO_DECK_TITLE = "week 2 - CNN's Flashcards"  # the title line of decks/demo/cnn_week2.txt
ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "test-artifacts"

# Short default timeouts: the live server answers in milliseconds, and a wait that
# would fail should fail fast instead of stretching the run.
expect.set_options(timeout=5_000)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    if not CHROMIUM.exists():
        reason = f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; browser tests cannot be skipped in CI.", pytrace=False)
        pytest.skip(reason)
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture
def demo_deck(transactional_db) -> Deck:
    """The 12-card demo deck and the demo student, as ``manage.py setup_demo`` makes them."""
    call_command("setup_demo", stdout=io.StringIO())
    return Deck.objects.get(owner=None, title=DEMO_DECK_TITLE)


@dataclass
class BrowserErrors:
    """Console errors and uncaught exceptions from every page it watches."""

    messages: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> Page:
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.messages.append(f"uncaught: {error}"))
        return page

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.messages.append(f"console.error at {message.location}: {message.text}")

    def assert_none(self) -> None:
        assert self.messages == [], "\n".join(self.messages)


@pytest.fixture
def browser_errors() -> BrowserErrors:
    return BrowserErrors()


@pytest.fixture
def log_in(live_server, demo_deck: Deck):
    """Log a page in as the demo student through the real login form."""

    def log_in(page: Page) -> Page:
        page.goto(f"{live_server.url}/accounts/login/")
        page.get_by_label("Username").fill(DEMO_USERNAME)
        page.get_by_label("Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Your decks")).to_be_visible()
        return page

    return log_in


@pytest.fixture
def student_page(page: Page, log_in, browser_errors: BrowserErrors) -> Page:
    """A JavaScript-enabled page, logged in as the demo student, watched for errors."""
    return log_in(browser_errors.watch(page))


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    return ARTIFACTS_DIR
