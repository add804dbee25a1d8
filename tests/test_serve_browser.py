"""The search page in a real browser: headless Debian chromium + chromedriver, driven by Selenium.

It opens the page of a live server, runs a query on a tiny corpus and finds the expected document,
with each stage's candidates and ms; then picks the other pipeline. Skips when no browser is
installed (CI installs Debian's chromium and chromium-driver: .ci/run).
"""
from __future__ import annotations

import shutil

import pytest

pytest.importorskip("fastapi", reason='the serve extra is not installed: pip install -e ".[serve]"')
pytest.importorskip("uvicorn", reason='the serve extra is not installed: pip install -e ".[serve]"')
webdriver = pytest.importorskip("selenium.webdriver", reason='selenium is not installed: pip install -e ".[test]"')
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from cascade.stages.bm25 import BM25  # noqa: E402

from conftest import DOCS  # noqa: E402
from serve_helpers import app_over, free_port, uvicorn_thread  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="no browser: apt-get install -y chromium chromium-driver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def rows(driver, table: str) -> list[list[str]]:
    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")]


def run_query(driver, query: str, k: int) -> None:
    before = driver.find_element(By.ID, "summary").text
    box = driver.find_element(By.ID, "query")
    box.clear()
    box.send_keys(query)
    k_box = driver.find_element(By.ID, "k")
    k_box.clear()
    k_box.send_keys(str(k))
    driver.find_element(By.ID, "search").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "summary").text not in ("", before)
                                    or d.find_element(By.ID, "error").is_displayed())


def test_the_page_finds_the_expected_document(browser, tmp_path):
    docs = {doc_id: f"{title}. {text}" for doc_id, (title, text) in DOCS.items()}
    app = app_over({"bm25": BM25() % 10, "rescore": BM25() % 10 >> BM25(name="rescore") % 2}, docs)
    with uvicorn_thread(app, free_port()) as url:
        browser.get(f"{url}/")
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        select = Select(browser.find_element(By.ID, "pipeline"))
        assert [o.get_attribute("value") for o in select.options] == ["bm25", "rescore"]
        assert browser.find_element(By.ID, "pipeline").is_displayed()  # shown: two pipelines
        assert "6 documents" in browser.find_element(By.ID, "status").text

        run_query(browser, "barking dogs", 3)
        assert not browser.find_element(By.ID, "error").is_displayed()
        hits = rows(browser, "results")
        expected = app.state.searchers["bm25"].target.search("barking dogs", k=3)
        assert [h[1] for h in hits] == expected.doc_ids and hits[0][:2] == ["1", "d2"]
        assert hits[0][3] == docs["d2"] and float(hits[0][2]) == pytest.approx(expected.scores[0], abs=1e-4)
        stages = rows(browser, "stages")
        assert [s[0] for s in stages] == ["bm25"] and stages[0][1] == "10"
        assert int(stages[0][2]) >= len(hits) and float(stages[0][3]) >= 0

        select.select_by_value("rescore")
        run_query(browser, "fish in rivers", 5)
        assert [s[0] for s in rows(browser, "stages")] == ["bm25", "rescore"]
        assert [h[1] for h in rows(browser, "results")][0] == "d5" and len(rows(browser, "results")) <= 2

        browser.execute_script("document.getElementById('k').removeAttribute('min')")
        run_query(browser, "cats", 0)  # the server's 422 is shown, naming the field
        error = browser.find_element(By.ID, "error")
        assert error.is_displayed() and "422" in error.text and "body.k" in error.text
