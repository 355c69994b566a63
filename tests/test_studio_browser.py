"""The studio in a real browser (Debian's chromium driven by Playwright): the user's journeys."""

import os
import shutil

import pytest

from engine.session import Session
from studio.app import build, launch_kwargs, studio_engine

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not shutil.which("chromium") and os.environ.get("RUSHES_REQUIRE_BROWSER"):  # CI: a missing browser is a failure
    raise RuntimeError("RUSHES_REQUIRE_BROWSER is set but Debian's chromium is not installed (apt-get install chromium)")
pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def served(tiny_folder, tmp_path_factory):
    """(the studio's session, its URL)."""
    import os

    os.environ["RUSHES_HOME"] = str(tmp_path_factory.mktemp("browser-home"))
    session = Session("browser", engine=studio_engine())
    demo = build(session, str(tiny_folder))
    _, local_url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs())
    yield session, local_url
    demo.close()
    session.engine.close()


@pytest.fixture(scope="module")
def url(served):
    return served[1]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def _generate(page, compare=False):
    if compare:
        page.locator("#compare input").check()
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#status') && "
                           "document.querySelector('#status').innerText.includes('total')", timeout=60000)


def test_an_empty_seed_box_gives_each_clip_its_own_seed(browser, url):
    """What the page sends for an empty box: Gradio's Number sent 0, so every clip had seed 0."""
    import re

    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("() => { const m = document.querySelector('#memory-estimate');"
                           " return m && m.innerText.includes('GB peak'); }", timeout=60000)  # filled on page load
    seeds, last = [], None  # last: the clip id the status names (the timer text names none)
    for _ in range(2):
        page.locator("#generate").click()
        page.wait_for_function("(old) => { const s = document.querySelector('#status');"
                               " const m = s && s.innerText.match(/clip (\\d+) · seed (\\d+)/);"
                               " return m && m[1] !== old; }", arg=last, timeout=60000)
        last, seed = re.search(r"clip (\d+) · seed (\d+)", page.locator("#status").inner_text()).groups()
        seeds.append(seed)
    assert page.locator("#seed input").input_value() == ""
    assert seeds[0] != seeds[1]
    page.close()


def test_generate_plays_then_rate_and_compare(browser, url):
    page = browser.new_page()
    page.goto(url)
    assert page.locator("#seed input").input_value() == ""  # empty: a random seed per clip
    page.locator("#prompt textarea").fill("a red ball moving right on a black background")
    page.locator("#seed input").fill("5")
    _generate(page)
    assert "seed 5" in page.locator("#status").inner_text()
    assert "GB peak" in page.locator("#memory-estimate").inner_text()
    page.wait_for_function("() => { const v = document.querySelector('#clip video');"
                           " return v && v.readyState >= 2 && v.duration > 0; }", timeout=30000)
    assert page.evaluate("() => document.querySelector('#clip video').videoWidth") == 32
    page.locator("#thumb-up").click()
    page.wait_for_function("() => document.querySelector('#rated').innerText.includes('thumb 1')", timeout=15000)
    _generate(page, compare=True)
    page.wait_for_function("() => document.querySelector('#teacher-status').innerText.includes('teacher')",
                           timeout=60000)
    page.locator("#b-better").click()
    page.wait_for_function("() => document.querySelector('#rated').innerText.includes('preferred over')",
                           timeout=15000)
    page.close()


def test_bad_size_shows_an_error_toast(browser, url):
    page = browser.new_page()
    page.goto(url)
    page.locator("#prompt textarea").fill("   ")
    page.locator("#generate").click()
    page.wait_for_selector("text=prompt must not be empty", timeout=30000)
    page.close()


def test_a_clip_in_flight_when_the_engine_dies_says_so_and_the_next_one_plays(browser, served, tiny_folder):
    """The engine's worker process is killed while the page's clip waits on it: the page shows why,
    and the next Generate starts a new worker and plays."""
    import threading

    from engine.requests import GenerateRequest

    session, url = served
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("() => { const m = document.querySelector('#memory-estimate');"
                           " return m && m.innerText.includes('GB peak'); }", timeout=60000)
    long = GenerateRequest(prompt="x", model=str(tiny_folder), role="teacher", steps=1000, seed=0, frames=17,
                           height=128, width=128)
    busy = threading.Thread(target=lambda: list(session.engine.generate(long)))  # holds the worker
    busy.start()
    page.locator("#generate").click()  # queued in the worker behind the long clip
    page.wait_for_timeout(1500)
    assert busy.is_alive()  # the long clip still holds the worker, so the page's clip is in flight
    session.engine._proc.kill()
    page.wait_for_selector("text=the engine process exited", timeout=30000)
    busy.join(timeout=60)
    _generate(page)
    assert "student 4 steps" in page.locator("#status").inner_text()
    page.close()


def test_library_lists_and_reuses_a_clip(browser, url):
    page = browser.new_page()
    page.goto(url)
    page.locator("#prompt textarea").fill("a cyan box rising")
    page.locator("#seed input").fill("11")
    _generate(page)
    page.get_by_role("tab", name="Library").click()  # lists the new clip without Refresh being pressed
    assert page.locator("#lib-id input").input_value() == ""  # empty until a row is picked
    # visible=true: the Dataframe also renders a row into a hidden sizing table, which can come first
    row = "#lib-table >> text=a cyan box rising >> visible=true"
    page.wait_for_selector(row, timeout=30000)
    page.locator(row).first.click()
    page.wait_for_function("() => document.querySelector('#lib-id input').value !== ''", timeout=15000)
    page.locator("#lib-reuse").click()
    page.wait_for_function("() => document.querySelector('#seed input').value === '11'", timeout=15000)
    page.close()


def test_the_system_tab_is_filled_when_opened(browser, url):
    page = browser.new_page()
    page.goto(url)
    page.get_by_role("tab", name="System").click()
    page.wait_for_function("() => document.querySelector('#system-info').innerText.includes('device')",
                           timeout=30000)
    page.close()


def test_a_fresh_page_lists_earlier_tune_runs(browser, served):
    """The runs table fills from the status timer; with the Run box sending 0 that timer raised."""
    session, url = served
    session.store.create_run("tune", {"steps": 7, "reward": "zebra-stripes"}, status="done")
    page = browser.new_page()
    page.goto(url)
    page.get_by_role("tab", name="Tune").click()
    page.wait_for_selector("#tune-runs >> text=zebra-stripes >> visible=true", timeout=30000)
    assert "0/7" in page.locator("#tune-runs").inner_text()
    page.locator("#tune-run input").fill("9999")  # a run that is not there: said, not raised
    page.wait_for_function("() => document.querySelector('#tune-status').innerText.includes('no run with id 9999')",
                           timeout=15000)
    page.locator("#tune-cancel").click()
    page.wait_for_selector(".toast-body >> text=no run with id 9999", timeout=15000)
    page.close()


def test_tune_then_apply_the_adapter(browser, url):
    page = browser.new_page()
    page.goto(url)
    page.get_by_role("tab", name="Tune").click()
    # the Run box starts empty (a Number would show 0 and the status timer would poll a run 0)
    assert page.locator("#tune-run input").input_value() == ""
    steps = page.locator("#tune-steps input[type=number]")
    steps.fill("5")
    steps.press("Enter")
    page.locator("#tune-name textarea").fill("vivid")
    page.locator("#tune-start").click()
    page.wait_for_function("() => /^[0-9]+$/.test(document.querySelector('#tune-run input').value)", timeout=60000)
    # a 5-step tune on the tiny model can start and finish between two 2 s status polls: running or already done
    page.wait_for_function("() => /running|done/.test(document.querySelector('#tune-status').innerText)",
                           timeout=60000)
    page.wait_for_function("() => document.querySelector('#tune-status').innerText.includes('done')", timeout=240000)
    assert page.locator("#tune-plot").is_visible()
    page.locator("#tune-compare-adapter input").click()  # before / after on fixed prompts
    page.locator("ul[role=listbox] >> text=vivid").first.click()
    page.locator("#tune-compare").click()
    page.wait_for_function("() => document.querySelectorAll('#tune-grid video, #tune-grid img').length >= 6",
                           timeout=120000)
    assert "before" in page.locator("#tune-grid").inner_text() or page.locator("#tune-grid video").count() >= 6
    page.get_by_role("tab", name="Create").click()
    page.locator("#adapter input").click()
    page.locator("ul[role=listbox] >> text=vivid").first.click()
    _generate(page)
    assert "adapter vivid" in page.locator("#status").inner_text()
    page.close()
