"""The operator page of `recs serve` in a real headless browser: Debian's chromium driven by its
chromedriver through selenium (nothing is downloaded: both binaries must be installed, as
`.ci/run` does; otherwise the test is skipped and says why).

Set SERVE_SCREENSHOT=docs/serve.png to save the screenshot the README shows.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from recs.serve import ServeConfig
from store.client import RecsClient
from store.keys import Keys
from tests.test_serve import TOKEN, published  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--window-size=1280,1100")


class WithHistory(Keys):
    """A key layout with a quality history (``Keys.history`` of the quality work: a LIST of
    flat JSON records, docs/CONTRACT.md); the page reads whatever ``Keys.history`` names."""

    def history(self, lang: str) -> str:
        return f"{self.prefix}:{lang}:history-test"


@pytest.fixture
def browser(tmp_path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.skip(f"browser test skipped: {', '.join(missing)} not installed "
                    "(apt-get install chromium chromium-driver; .ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="browser test skipped: selenium not installed")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _history(published):  # noqa: F811
    client = published.redis.client()
    keys = WithHistory()
    model = RecsClient(client).model_info("en")
    client.delete(keys.history("en"))
    for i, (m, p) in enumerate([(0.31, 0.14), (0.38, 0.15), (0.42, 0.15)]):
        client.rpush(keys.history("en"), json.dumps({
            "version": f"v{i}", "trained_at": f"2026-11-2{i}T10:00:00Z", "model": "als",
            "k": 10, "ndcg": m, "popularity_ndcg": p, "map": 0.2, "published": i != 1}))
    metrics = model["metrics"]
    client.rpush(keys.history("en"), json.dumps({
        "version": model["version"], "trained_at": model["trained_at"], "k": 10,
        "ndcg": metrics["model"]["ndcg"], "popularity_ndcg": metrics["popularity"]["ndcg"],
        "popularity": metrics["popularity"], "published": True}))
    client.close()
    return keys


def test_the_page_draws_and_looks_up(published, serve_http, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base = serve_http(ServeConfig(redis_url=published.url, token=TOKEN),
                      keys=_history(published))
    wait = WebDriverWait(browser, 15)
    browser.get(base + "/")
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form button").click()
    wait.until(ec.presence_of_element_located((By.ID, "lang-en")))

    # The chart: one polyline per series, the model's with a point per retrain.
    line = browser.find_element(By.CSS_SELECTOR, "#lang-en svg.chart polyline.model")
    assert len(line.get_attribute("points").split()) == 4
    assert line.size["width"] > 100
    assert len(browser.find_elements(By.CSS_SELECTOR, "#lang-en circle.model.gated")) == 1

    # A resource by its title: its similar list, with the titles Redis holds.
    reader = RecsClient(published.url)
    expected = [published.titles[r] for r, _ in reader.similar("en", published.rid, 10)]
    form = browser.find_element(By.ID, "resource-form")
    form.find_element(By.NAME, "q").send_keys(published.titles[published.rid])
    form.find_element(By.TAG_NAME, "button").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#resource-result td.title")))
    titles = [e.text.split(" — ")[0] for e in
              browser.find_elements(By.CSS_SELECTOR, "#resource-result td.title")]
    assert titles == expected
    heading = browser.find_element(By.CSS_SELECTOR, "#resource-result h3").text
    assert heading == f"Similar to {published.titles[published.rid]} [{published.rid}]"

    # A user: their list, each item with the views behind it.
    expected_user = [published.titles[r] for r, _ in reader.recommend("en", published.user, 10)]
    form = browser.find_element(By.ID, "user-form")
    form.find_element(By.NAME, "q").send_keys(published.user)
    form.find_element(By.TAG_NAME, "button").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#user-result .because")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#user-result table.list td.title")
    assert [r.text.split(" — ")[0] for r in rows] == expected_user
    assert all("because you viewed" in r.text for r in rows)

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    target = os.environ.get("SERVE_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        browser.execute_script("window.scrollTo(0, 0)")
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, min(int(height) + 120, 4000))
        assert browser.save_screenshot(str(Path(target).resolve()))


# Positions of the first "[" and the last "]" of the text node holding "[ID]" (the id shown
# next to a title): left to right unless a title's bidi override leaked into it.
_ID_BRACKETS = """
const [root, id] = arguments;
const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const at = node.data.indexOf(`[${id}]`);
  if (at < 0) continue;
  const range = document.createRange();
  const x = i => { range.setStart(node, i); range.setEnd(node, i + 1);
                   return range.getBoundingClientRect().left; };
  const close = at + String(id).length + 1;
  return [x(at), x(close)];
}
return null;
"""


def test_titles_that_would_break_the_page_stay_in_their_place(redis_server, serve_http,
                                                               browser):
    """A right-to-left override, 500 combining marks and a 20,000-character title: the ids
    beside them read left to right, no mark stack paints over other rows, and the page is
    no wider than the window."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from store.resources import replace_details

    client = redis_server.client()
    client.hset(Keys().model("en"), mapping={"version": "v1", "trained_at": "2026-01-01"})
    client.sadd(Keys().langs, "en")
    client.zadd(Keys().similar("en", 504), {"501": 0.9, "502": 0.8, "503": 0.7})
    replace_details(client, Keys(), "en", [
        (501, {"title": "\u202eevil title", "subject": "Bio"}),
        (502, {"title": "Z" + "\u0301" * 500 + " marks", "subject": "Bio"}),
        (503, {"title": "Long " + "x" * 20000, "subject": "Bio"}),
        (504, {"title": "Plain title", "subject": "Bio"})])
    client.close()
    base = serve_http(ServeConfig(redis_url=redis_server.url))
    wait = WebDriverWait(browser, 15)
    browser.get(base + "/")
    form = browser.find_element(By.ID, "resource-form")
    form.find_element(By.NAME, "q").send_keys("title")
    form.find_element(By.TAG_NAME, "button").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#resource-result li")))
    result = browser.find_element(By.ID, "resource-result")
    left, right = browser.execute_script(_ID_BRACKETS, result, 501)
    assert left < right  # "[501]", not "]105["

    form.find_element(By.NAME, "q").clear()
    form.find_element(By.NAME, "q").send_keys("504")
    form.find_element(By.TAG_NAME, "button").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#resource-result td.title")))
    cells = browser.find_elements(By.CSS_SELECTOR, "#resource-result td.title")
    assert len(cells) == 3
    stacked = browser.execute_script(
        "return Array.from(arguments[0]).some(c => /\\p{M}{4,}/u.test(c.textContent))", cells)
    assert not stacked
    wide, window = browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]")
    assert wide <= window, (wide, window)
