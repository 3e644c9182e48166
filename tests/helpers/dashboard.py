"""Helpers of tests/test_dashboard.py, used by other test files too."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ..conftest import API_KEY, ROOT, wait_until

CHROMIUM = "/usr/bin/chromium"

CHROMEDRIVER = "/usr/bin/chromedriver"

ARTIFACTS = ROOT / "tests" / "artifacts"


# -- fixtures ------------------------------------------------------------------------------
def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return (
                f"{path} not found: install Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
            )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: ./install.sh --dev"
    return None


def start_chromium(profile: Path, what: str = "browser tests", capabilities: dict | None = None):
    """A fresh headless Chromium with its profile in ``profile`` (skipped where it is missing,
    failed under CI); ``capabilities`` are set on its options (e.g. ``goog:loggingPrefs``)."""
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the {what}: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    for name, value in (capabilities or {}).items():
        options.set_capability(name, value)
    # Service(executable_path=...) so Selenium Manager never downloads a driver.
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture
def browser(tmp_path, request):
    """A fresh headless Chromium; its last screen is saved as a test artifact."""
    driver = start_chromium(tmp_path / "chromium-profile", "dashboard's browser tests")
    driver.set_script_timeout(30)
    yield driver
    try:
        shot(driver, request.node.name + "-last")
    finally:
        driver.quit()


def shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    driver.save_screenshot(str(path))
    return path


# -- page helpers ------------------------------------------------------------------------------
def sign_in(driver, url: str, key: str = API_KEY) -> None:
    driver.get(url)
    wait_for(driver, lambda: driver.find_element("id", "login").is_displayed(), "the key form")
    driver.find_element("id", "login-key").send_keys(key)
    driver.find_element("id", "login-submit").click()


def wait_for(driver, predicate, what: str, timeout: float = 20) -> None:
    """Poll a page condition; a stale element mid-update just means: look again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def safe():
        try:
            return predicate()
        except (NoSuchElementException, StaleElementReferenceException):
            return False

    wait_until(safe, timeout=timeout, what=what)
