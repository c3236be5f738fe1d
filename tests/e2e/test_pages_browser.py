"""Screenshots and layout checks of the progress pages: home, deck, stats, class dashboard."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import Page, expect

from decks import services
from decks.management.commands.setup_demo import DEMO_USERNAME

SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


@pytest.fixture
def history(demo_deck):
    """Three weeks of study by the demo student and two classmates."""
    User = get_user_model()
    student = User.objects.get(username=DEMO_USERNAME)
    classmates = [User.objects.create_user(f"classmate{i}", password="x") for i in range(2)]
    cards = list(demo_deck.cards.order_by("position"))
    start = timezone.now() - timedelta(days=21)
    for day in range(21):
        for i, card in enumerate(cards[: 4 + day % 8]):
            at = start + timedelta(days=day, minutes=i)
            services.record_review(student, card.pk, 1 + (i + day) % 5, at)
    for n, classmate in enumerate(classmates):
        for card in cards[: 3 + 4 * n]:
            services.record_review(classmate, card.pk, 2 + n, start)
    return demo_deck


def no_sideways_scroll(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


@pytest.mark.parametrize("size", SIZES)
def test_progress_pages_render_without_errors_at_each_width(
    student_page: Page, live_server, history, browser_errors, artifacts_dir, size
):
    width, height = SIZES[size]
    student_page.set_viewport_size({"width": width, "height": height})
    for name, path, heading in [
        ("home", "/", "Your decks"),
        ("deck", f"/decks/{history.pk}/", history.title),
        ("stats", "/stats/", "Your stats"),
    ]:
        student_page.goto(f"{live_server.url}{path}")
        expect(student_page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        student_page.screenshot(path=artifacts_dir / f"{name}-{width}x{height}.png", full_page=True)
        assert no_sideways_scroll(student_page), f"{name} scrolls sideways at {width}px"
    expect(student_page.locator("svg.heatmap title").first).to_have_count(1)
    browser_errors.assert_none()


@pytest.mark.parametrize("size", SIZES)
def test_class_dashboard_renders_for_staff(
    page: Page, live_server, history, browser_errors, artifacts_dir, size
):
    get_user_model().objects.create_user("teacher", password="teach-42-long", is_staff=True)
    width, height = SIZES[size]
    page.set_viewport_size({"width": width, "height": height})
    browser_errors.watch(page)
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("teacher")
    page.get_by_label("Password").fill("teach-42-long")
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_server.url}/decks/{history.pk}/class/")
    expect(page.get_by_role("heading", name="Students")).to_be_visible()
    expect(page.get_by_role("row", name="classmate0")).to_have_count(1)
    page.screenshot(path=artifacts_dir / f"class-{width}x{height}.png", full_page=True)
    assert no_sideways_scroll(page)
    browser_errors.assert_none()
