"""The study page in a real browser: keyboard, htmx swaps, focus, no-JS fallback, layout."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Locator, Page, expect

from decks.models import CardProgress, Deck, Review, State

if TYPE_CHECKING:
    from tests.e2e.conftest import BrowserErrors

FIRST_QUESTION = "what is a CNN convolutional layer"
FIRST_ANSWER = "This layer applies convolutional filters"
RATING_NAMES = {
    1: re.compile(r"^1 Not at all\b"),
    2: re.compile(r"^2\b"),
    3: re.compile(r"^3\b"),
    4: re.compile(r"^4\b"),
    5: re.compile(r"^5 Perfectly\b"),
}
# Each step shows a card at most twice (new, then once from learning), so 12 cards
# finish well within this; more means the queue never empties.
MAX_STEPS = 40
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
MIN_TAP_TARGET_PX = 44


def questions_in_deck_order(deck: Deck) -> list[str]:
    return list(deck.cards.order_by("position", "id").values_list("front", flat=True))


def study_region(page: Page) -> Locator:
    return page.locator("#study")


def question(page: Page) -> Locator:
    return study_region(page).get_by_role("region", name="Question")


def answer(page: Page) -> Locator:
    return study_region(page).get_by_role("region", name="Answer")


def show_answer_button(page: Page) -> Locator:
    return study_region(page).get_by_role("button", name="Show answer")


def rating_button(page: Page, value: int) -> Locator:
    return study_region(page).get_by_role("button", name=RATING_NAMES[value])


def all_done(page: Page) -> Locator:
    return page.get_by_role("heading", name="All done for now")


def status_message(page: Page) -> Locator:
    return study_region(page).get_by_role("status")


def open_study_page_from_home(page: Page, live_server) -> None:
    page.goto(f"{live_server.url}/")
    page.get_by_role("link", name=re.compile(r"^Study\b")).click()
    expect(page).to_have_url(re.compile(r"/decks/\d+/study/$"))


def expect_all_rating_buttons(page: Page) -> None:
    for value in RATING_NAMES:
        expect(rating_button(page, value)).to_be_visible()


def expect_ready_for_the_next_key(page: Page) -> None:
    """Wait until htmx has settled the swap: it moves focus to the next step's control.

    A key pressed before that is ignored on purpose (see study.js), so a test that only
    waited for the new content to be visible would race it.
    """
    ready = show_answer_button(page).or_(rating_button(page, 1)).or_(all_done(page))
    expect(ready).to_be_focused()


def press_when_ready(page: Page, key: str) -> None:
    expect_ready_for_the_next_key(page)
    page.keyboard.press(key)


def flip_and_rate_with_keyboard(page: Page, key: str) -> None:
    press_when_ready(page, "Space")
    expect(rating_button(page, int(key))).to_be_visible()
    press_when_ready(page, key)
    expect(rating_button(page, 1)).to_be_hidden()
    expect_ready_for_the_next_key(page)


def study_to_the_end(page: Page, step) -> int:
    """Run ``step`` until "All done for now" shows; return how many steps it took."""
    for steps in range(MAX_STEPS):
        if all_done(page).is_visible():
            return steps
        step()
    pytest.fail(f"The queue was not empty after {MAX_STEPS} ratings.")


def assert_every_card_left_the_queue(deck: Deck) -> None:
    states = set(CardProgress.objects.filter(deck=deck).values_list("state", flat=True))
    assert states == {State.REVIEW}


def test_a_student_studies_the_whole_deck_by_keyboard_without_a_full_page_load(
    student_page: Page, live_server, demo_deck: Deck, browser_errors: BrowserErrors
) -> None:
    page = student_page
    questions = questions_in_deck_order(demo_deck)
    open_study_page_from_home(page, live_server)
    expect(question(page)).to_contain_text(FIRST_QUESTION)
    page.evaluate("window.__noReload = 42")

    press_when_ready(page, "Space")
    expect(answer(page)).to_contain_text(FIRST_ANSWER)
    expect_all_rating_buttons(page)
    press_when_ready(page, "4")  # a learning step: card 1 comes back within the learn-ahead
    expect(question(page)).to_contain_text(questions[1])

    flip_and_rate_with_keyboard(page, "1")
    expect(question(page)).to_contain_text(questions[2])
    flip_and_rate_with_keyboard(page, "3")
    expect(question(page)).to_contain_text(questions[3])

    press_when_ready(page, "u")
    expect(status_message(page)).to_have_text("Your last rating was undone.")
    expect(question(page)).to_contain_text(questions[2])
    expect(show_answer_button(page)).to_be_focused()

    steps = study_to_the_end(page, lambda: flip_and_rate_with_keyboard(page, "5"))

    # Cards 3-12 once each, then cards 1 and 2 again from their learning steps.
    assert steps == 12
    expect(all_done(page)).to_be_visible()
    assert page.evaluate("window.__noReload") == 42, "a full page load happened"
    assert_every_card_left_the_queue(demo_deck)
    assert Review.objects.filter(user__username="student").count() == 14
    browser_errors.assert_none()


def test_a_student_without_javascript_studies_the_whole_deck_with_the_buttons(
    new_context, log_in, live_server, demo_deck: Deck, browser_errors: BrowserErrors
) -> None:
    page = log_in(browser_errors.watch(new_context(java_script_enabled=False).new_page()))
    questions = questions_in_deck_order(demo_deck)
    open_study_page_from_home(page, live_server)
    expect(question(page)).to_contain_text(FIRST_QUESTION)

    show_answer_button(page).click()
    expect(page).to_have_url(re.compile(r"/study/flip/\?token="))
    expect(answer(page)).to_contain_text(FIRST_ANSWER)
    expect_all_rating_buttons(page)
    rating_button(page, 4).click()
    expect(question(page)).to_contain_text(questions[1])

    study_region(page).get_by_role("button", name="Undo last rating").click()
    expect(status_message(page)).to_have_text("Your last rating was undone.")
    expect(question(page)).to_contain_text(FIRST_QUESTION)

    def flip_and_rate_perfectly() -> None:
        show_answer_button(page).click()
        rating_button(page, 5).click()
        expect(show_answer_button(page).or_(all_done(page))).to_be_visible()

    assert study_to_the_end(page, flip_and_rate_perfectly) == 12
    assert_every_card_left_the_queue(demo_deck)
    browser_errors.assert_none()


def test_focus_follows_the_study_step_and_the_answer_is_announced(
    student_page: Page, live_server, demo_deck: Deck, browser_errors: BrowserErrors
) -> None:
    page = student_page
    questions = questions_in_deck_order(demo_deck)
    page.goto(f"{live_server.url}/decks/{demo_deck.pk}/study/")
    expect(show_answer_button(page)).to_be_focused()

    page.keyboard.press("Space")
    expect(answer(page)).to_contain_text(FIRST_ANSWER)
    expect(rating_button(page, 1)).to_be_focused()
    assert page.evaluate("document.activeElement.dataset.rating") == "1"
    live = answer(page).evaluate("el => el.closest('[aria-live]')?.getAttribute('aria-live')")
    assert live == "polite", "the answer is not inside an aria-live region"

    # A second, reflex Space on the button focused for the student must not rate "1".
    page.keyboard.press("Space")
    page.keyboard.press("4")
    expect(question(page)).to_contain_text(questions[1])
    expect(show_answer_button(page)).to_be_focused()
    assert page.evaluate("document.activeElement.id") == "show-answer"
    assert list(Review.objects.values_list("rating", flat=True)) == [4]
    browser_errors.assert_none()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_study_page_screenshots_for_review(
    student_page: Page,
    live_server,
    demo_deck: Deck,
    browser_errors: BrowserErrors,
    artifacts_dir,
    viewport: dict,
) -> None:
    """Writes test-artifacts/study-{question,answer}-WxH.png (whole page), plus what the
    screen shows right after the flip and the answer in dark mode, for a human to look at.
    """
    page = student_page
    page.set_viewport_size(viewport)
    size = f"{viewport['width']}x{viewport['height']}"
    page.goto(f"{live_server.url}/decks/{demo_deck.pk}/study/")
    expect(show_answer_button(page)).to_be_focused()
    page.screenshot(path=artifacts_dir / f"study-question-{size}.png", full_page=True)

    show_answer_button(page).click()
    expect(rating_button(page, 1)).to_be_focused()
    page.screenshot(path=artifacts_dir / f"study-answer-{size}.png", full_page=True)
    page.screenshot(path=artifacts_dir / f"study-answer-{size}-viewport.png")
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=artifacts_dir / f"study-answer-{size}-dark.png", full_page=True)
    browser_errors.assert_none()


def test_rating_buttons_are_big_enough_to_tap_and_fit_a_phone_screen(
    student_page: Page, live_server, demo_deck: Deck, browser_errors: BrowserErrors
) -> None:
    page = student_page
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/decks/{demo_deck.pk}/study/")
    show_answer_button(page).click()
    expect_all_rating_buttons(page)

    for value in RATING_NAMES:
        box = rating_button(page, value).bounding_box()
        assert box is not None
        assert box["height"] >= MIN_TAP_TARGET_PX, f"button {value} is {box['height']}px tall"
        assert box["x"] >= 0, f"button {value} starts left of the screen"
        assert box["x"] + box["width"] <= PHONE["width"], f"button {value} overflows"
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= PHONE["width"], "the page scrolls sideways on a phone"
    browser_errors.assert_none()


def test_a_shortcut_pressed_before_htmx_settles_waits_for_it_instead_of_loading_a_page(
    student_page: Page, live_server, demo_deck: Deck, browser_errors: BrowserErrors
) -> None:
    """htmx wires up swapped-in buttons only when the swap settles (20 ms later by
    default). A shortcut in that window used to click a button htmx did not handle yet,
    so the browser submitted its form as a full page load; now the key is held and runs
    through htmx once the swap settles. The window is widened here to make the race
    deterministic."""
    page = student_page
    questions = questions_in_deck_order(demo_deck)
    page.goto(f"{live_server.url}/decks/{demo_deck.pk}/study/")
    expect(show_answer_button(page)).to_be_focused()
    page.evaluate(
        """() => {
            window.__noReload = 42;
            htmx.config.defaultSettleDelay = 1000;
            document.addEventListener("keydown", (event) => {
                if (event.key === "5" && !("__settlingAtKey5" in window)) {
                    window.__settlingAtKey5 = Boolean(document.querySelector(".htmx-settling"));
                }
            }, {capture: true});
        }"""
    )
    rate_requests = []
    page.on("request", lambda r: rate_requests.append(r) if "/rate/" in r.url else None)
    settling = page.locator(".study-card.htmx-settling")  # the flip swaps the card in

    page.keyboard.press("Space")
    expect(settling).to_be_attached()
    expect(rating_button(page, 5)).to_be_visible()
    page.keyboard.press("5")  # early: swapped in, not settled yet

    assert page.evaluate("window.__settlingAtKey5"), "too slow: the key came after the settle"
    expect(question(page)).to_contain_text(questions[1], timeout=5_000)
    assert len(rate_requests) == 1
    assert rate_requests[0].headers.get("hx-request") == "true"
    assert page.evaluate("window.__noReload") == 42, "the early key press loaded a page"
    assert list(Review.objects.values_list("rating", flat=True)) == [5]
    browser_errors.assert_none()
