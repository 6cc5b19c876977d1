"""The registered model's page in the MLflow UI, opened in headless Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and ``selenium``
(the ``test`` extra); without them the test is skipped and says which is missing. The screenshot
goes to the test's temporary folder; with ``GENRE_RAY_UPDATE_SCREENSHOT=1`` it replaces the README's
``results/mlflow_ui_model.png`` (a test run never changes a tracked file otherwise).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from _mlflow_server import ROOT, MlflowServer, searched_store

README_SCREENSHOT = ROOT / "results" / "mlflow_ui_model.png"

# Headless, and nothing that reaches outside the machine (updates, sync, QUIC, first-run pages).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,900"]


def _find(name: str, default: str) -> str | None:
    path = shutil.which(name) or default
    return path if Path(path).is_file() else None


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    """Paths of Chromium and its driver; skips (before any search runs) when either is missing."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    browser = _find("chromium", "/usr/bin/chromium")
    driver = _find("chromedriver", "/usr/bin/chromedriver")
    missing = [n for n, p in (("chromium", browser), ("chromedriver", driver)) if p is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found (Debian: apt-get install chromium chromium-driver)")
    assert browser is not None and driver is not None
    return browser, driver


@pytest.fixture(scope="module")
def store(chromium: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
          ray_session: object) -> tuple[Path, dict[str, Any]]:
    return searched_store(tmp_path_factory.getbasetemp())


def _processes_using(marker: str) -> list[int]:
    """Live processes whose command line mentions ``marker`` (the browser's own profile folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_model_page_shows_name_and_champion(chromium: tuple[str, str], store: tuple[Path, dict[str, Any]],
                                            tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shot = tmp_path / "mlflow_ui_model.png"
    browser, driver_path = chromium
    results, info = store
    profile = tmp_path / "chromium-profile"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    with MlflowServer(f"sqlite:///{results / 'mlflow.db'}", tmp_path / "server") as server:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        try:
            driver.get(f"{server.url}/#/models/{info['model']}")  # the UI is a single-page app

            def shown(d: Any) -> bool:
                """The model's name as the page heading, and the alias chip ("@ champion"): the word
                alone could come from a version tag, the name alone from a "does not exist" page."""
                heading = any(h.text.strip() == info["model"] for h in d.find_elements(By.TAG_NAME, "h2"))
                chip = re.search(r"@\s*champion\b", d.find_element(By.TAG_NAME, "body").text)
                return heading and chip is not None

            WebDriverWait(driver, 40, poll_frequency=0.5,
                          ignored_exceptions=(StaleElementReferenceException,)).until(shown)
            assert driver.save_screenshot(str(shot))
        finally:
            driver.quit()
    assert server.left_over == []
    assert _processes_using(str(profile)) == [], "Chromium processes left running"
    assert shot.stat().st_size > 10_000
    if os.environ.get("GENRE_RAY_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, README_SCREENSHOT)
