"""The experiment readout in `recs serve`: the operator page's chart in real chromium (the
browser fixture of tests/test_serve_page.py) and the Prometheus gauges."""

from __future__ import annotations

from urllib.request import Request, urlopen

import pytest

from recs.serve import ServeConfig
from store.experiments import Arm, Experiment, start
from tests.test_experiment_report import KEYS, T0, write_counts
from tests.test_serve import TOKEN, published  # noqa: F401  (a fixture)
from tests.test_serve_page import browser  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration


@pytest.fixture
def experiment(published):  # noqa: F811
    client = published.redis.client()
    start(client, KEYS, Experiment("exp1", "en", "running", (
        Arm("a", "als", 1, {"model": "als"}), Arm("b", "ease", 1, {"model": "ease"})), T0))
    write_counts(client)
    yield published
    client.delete(KEYS.experiment("en"))
    client.close()


def test_the_page_charts_each_arms_ctr_and_interval(experiment, serve_http,
                                                   browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base = serve_http(ServeConfig(redis_url=experiment.url, token=TOKEN))
    browser.get(base + "/")
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form button").click()
    WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "lang-en")))
    dots = browser.find_elements(By.CSS_SELECTOR, "#lang-en svg.experiment-chart circle.arm-ctr")
    bars = browser.find_elements(By.CSS_SELECTOR, "#lang-en svg.experiment-chart line.interval")
    assert len(dots) == len(bars) == 2
    a, b = (float(d.get_attribute("cx")) for d in dots)
    assert b > a  # arm b's CTR (0.4) is drawn right of a's (0.2)
    assert bars[0].size["width"] > 10
    ctrs = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#lang-en tr.arm td.ctr")]
    assert ctrs == ["0.2000", "0.4000"]
    assert "b - a: +0.2000" in browser.find_element(By.CSS_SELECTOR, "#lang-en p.diff").text


def test_metrics_carry_the_per_arm_rates(experiment, serve_http):
    base = serve_http(ServeConfig(redis_url=experiment.url, token=TOKEN))
    request = Request(base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urlopen(request) as answer:
        text = answer.read().decode()
    assert 'recs_experiment_ctr{arm="a",experiment="exp1",lang="en"} 0.2' in text
    assert 'recs_experiment_impressions{arm="b",experiment="exp1",lang="en"} 10.0' in text
    assert 'recs_experiment_ctr_diff{arm="b",experiment="exp1",lang="en"} 0.2' in text
