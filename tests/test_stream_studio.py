"""The studio's side of streaming: the engine process streams, steers and stops; the Create tab's
Stream panel in Debian's chromium (engine/stream itself: tests/test_stream.py)."""

from __future__ import annotations

import pytest

from tests.test_stream import _causal_folder


def test_the_studios_engine_process_streams_steers_and_stops(tiny_folder, tmp_path):
    import threading

    from engine.events import Failed
    from engine.events import StreamChunk
    from engine.requests import StreamRequest
    from engine.worker import EngineProcess

    folder, _ = _causal_folder(tiny_folder, tmp_path, None)
    proc = EngineProcess()
    try:
        cancel, steer, seen = threading.Event(), [None], []
        req = StreamRequest(prompt="a red circle moving left", seconds=None, model=str(folder))
        for event in proc.stream(req, cancel, prompt_now=lambda: steer[0]):
            assert isinstance(event, StreamChunk), event
            seen.append(event.prompt)
            steer[0] = "a blue square rising"  # typed while the first chunk plays
            if seen[-1] == "a blue square rising" or len(seen) > 40:
                cancel.set()
        assert seen[0] == "a red circle moving left" and seen[-1] == "a blue square rising"
        bad = list(proc.stream(StreamRequest(prompt="a red circle", model=str(tiny_folder))))
        assert isinstance(bad[-1], Failed) and "has no causal student" in bad[-1].message
    finally:
        proc.close()


def test_the_studio_plays_a_stream_steers_it_by_the_prompt_box_and_saves_it(tiny_folder, tmp_path, rushes_home):
    """In Debian's chromium: the Stream panel of a model with a causal student."""
    import shutil as sh

    from tests.test_studio_browser import CHROMIUM

    if not sh.which("chromium"):
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    from engine.session import Session
    from studio.app import build, launch_kwargs, studio_engine

    folder, _ = _causal_folder(tiny_folder, tmp_path, None)
    session = Session("browser", engine=studio_engine())
    demo = build(session, str(folder))
    try:
        _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs())
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(url)
            page.locator("#stream").get_by_text("Stream: an endless clip").click()
            page.locator("#prompt textarea").fill("a red circle moving left")
            page.locator("#stream-play").click()
            page.wait_for_function("() => (document.querySelector('#stream-status') || {}).innerText"
                                   "?.includes('streaming')", timeout=60000)
            assert page.locator("#stream-frame img").count() == 1
            page.locator("#prompt textarea").fill("a blue square rising")
            page.wait_for_function("() => document.querySelector('#stream-status').innerText"
                                   ".includes('prompt: a blue square rising')", timeout=60000)
            page.locator("#stream-stop").click()
            page.wait_for_function("() => document.querySelector('#stream-status').innerText.includes('saved stream')",
                                   timeout=60000)
            status = page.locator("#stream-status").inner_text()
            browser.close()
        row = session.store.generations(limit=1)[0]
        assert row["role"] == "stream" and f"clip {row['id']}" in status
        assert "a red circle moving left" in status and "a blue square rising" in status
    finally:
        demo.close()
        session.engine.close()
