"""End to end in a real browser: Debian's chromium driven by Playwright opens a battle, waits out the minimum
viewing time, votes, sees the reveal and the leaderboard update, then starts a battle on its own prompt.
The browser binary comes from apt (.ci/arena.sh); Playwright's own browser download is never used."""

import re

import pytest

from incasa.arena.app import ArenaConfig, create_app

from .conftest import need_binary

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser_page():
    chromium = need_binary("/usr/bin/chromium")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the arena extra)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15000)
            yield page
        finally:
            browser.close()


def test_vote_reveal_and_leaderboard_in_chromium(sessions, db_url, live_server, browser_page):
    server = live_server(create_app(ArenaConfig(db_url=db_url, min_view_s=0.8, seed=5)))
    page = browser_page
    page.goto(server.url + "/")
    prompt = page.text_content("#prompt")
    assert prompt
    # Both images really load in the browser.
    page.wait_for_function("document.getElementById('image-a').naturalWidth > 0 && "
                           "document.getElementById('image-b').naturalWidth > 0")
    assert "standin/" not in page.content()  # blind
    button_a = page.locator("button[value=a]")
    assert button_a.is_disabled()  # the minimum viewing time is enforced in the page too
    page.wait_for_function("!document.querySelector('button[value=a]').disabled")
    button_a.click()
    page.wait_for_selector("#model-a")
    winner = page.text_content("#model-a")
    loser = page.text_content("#model-b")
    assert re.fullmatch(r"standin/\w+", winner) and winner != loser
    assert "A is better" in page.text_content("#your-vote") and "not counted" not in page.text_content("#your-vote")

    page.click("text=Leaderboard")
    page.wait_for_selector("#leaderboard")
    assert "1 counted votes" in page.content()
    assert page.text_content(f'tr[data-variant="{winner}"] td.votes') == "1"
    assert page.text_content(f'tr[data-variant="{loser}"] td.votes') == "1"
    winner_rank = page.text_content(f'tr[data-variant="{winner}"] td:first-child')
    assert winner_rank == "1"

    # A battle on the voter's own prompt, decided as a tie.
    page.goto(server.url + "/")
    page.fill("input[name=prompt]", "a purple octopus playing drums")
    page.click("text=New battle")
    page.wait_for_selector("#prompt")
    assert page.text_content("#prompt") == "a purple octopus playing drums"
    page.wait_for_function("!document.querySelector('button[value=tie]').disabled")
    page.click("button[value=tie]")
    page.wait_for_selector("#model-a")
    page.click("text=Leaderboard")
    assert "2 counted votes" in page.content()
