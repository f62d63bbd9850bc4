"""A real headless Chromium (Debian's chromium + chromium-driver) driven by selenium, for page tests.

Flags: what works as root on an offline machine (no sandbox, no background networking to Google, a
fresh profile each time). Tests skip when the browser is missing, unless VIDCAP_REQUIRE_BROWSER=1
(`make test` installs it and sets that), so a missing browser fails CI instead of passing it silently.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("VIDCAP_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VIDCAP_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000", "--allow-file-access-from-files")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def browser_missing() -> str:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install vidcap[test])")
    return ", ".join(missing)


@pytest.fixture
def chromium():
    """A selenium WebDriver on headless Chromium that keeps the console log (level ALL)."""
    missing = browser_missing()
    if missing:
        if os.environ.get("VIDCAP_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests need {missing} (make test installs them)")
        pytest.skip(f"no browser: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="vidcap-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, script: str, timeout: float = 30.0, every: float = 0.05):  # noqa: ANN001
    """Poll a JS expression until it is truthy; return its value (fail with the expression on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {script}")
        time.sleep(every)


def console_errors(driver) -> list[dict]:  # noqa: ANN001
    """Console entries at error level since the last call (page errors, failed loads, console.error)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def save_screenshot(driver, name: str) -> Path:  # noqa: ANN001
    """Full-page screenshot under test-artifacts/ (ignored by git), for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    width = driver.execute_script("return document.documentElement.scrollWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(max(1400, width), min(max(1000, height + 120), 6000))
    driver.save_screenshot(str(path))
    return path
