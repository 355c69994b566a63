"""Shared by the benches that start a studio server: wait until it answers."""

from __future__ import annotations

import time
import urllib.request


def wait_http(url: str, timeout: float = 180) -> None:
    """Return once `url` answers; TimeoutError after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)
