"""A damaged model file is refused on load with one clear line (issue 9 item 11), and the
metrics server listens where it is told (item 10)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request

import joblib
import numpy as np
import pytest

from core.errors import ModelFileError
from recs.cli import main
from recs.localstack_process import free_port, wait_until
from trainer.config import AlsConfig, FilterConfig
from trainer.data.matrix import apply_filters, build_matrix
from trainer.data.synth import generate
from trainer.models import file as model_files
from trainer.models.als import fit
from trainer.models.file import load_model


@pytest.fixture(scope="module")
def model_doc():
    data = generate(n_users=200, n_resources=40, langs=["en"], seed=5, n_subjects=3)
    df, _ = apply_filters(data.views_for("en"), FilterConfig(5, 0, 2))
    model = fit(build_matrix(df), AlsConfig(factors=4, iterations=3, seed=1), "en",
                num_threads=1)
    return model_files.model_doc(model)


def _damaged(doc: dict) -> list[tuple[str, dict]]:
    negative = doc["seen_indices"].copy()
    negative[0] = -3
    nan_items = doc["item_factors"].copy()
    nan_items[1, 2] = np.nan
    inf_users = doc["user_factors"].copy()
    inf_users[0, 0] = np.inf
    backwards = doc["seen_indptr"].copy()
    backwards[1], backwards[2] = backwards[2], backwards[1] - 1
    return [("negative", {**doc, "seen_indices": negative}),
            ("NaN", {**doc, "item_factors": nan_items}),
            ("infinite", {**doc, "user_factors": inf_users}),
            ("non-decreasing", {**doc, "seen_indptr": backwards})]


def test_damaged_model_files_are_refused(model_doc, tmp_path):
    good = tmp_path / "good.dump"
    joblib.dump(model_doc, good)
    assert load_model(good).item_factors.shape[1] == 4
    for what, doc in _damaged(model_doc):
        path = tmp_path / f"{what}.dump"
        joblib.dump(doc, path)
        with pytest.raises(ModelFileError, match=f"damaged model file: .*{what}"):
            load_model(path)


def test_cli_says_one_line_for_a_damaged_model(model_doc, tmp_path, capsys):
    path = tmp_path / "nan.dump"
    joblib.dump(_damaged(model_doc)[1][1], path)
    rid = str(model_doc["item_ids"][0])
    assert main(["similar", rid, "--model", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN" in err[0] and "Traceback" not in err[0]


def _answers(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_metrics_listen_on_the_address_given(redis_server, tmp_path):
    """127.0.0.2 is loopback too, but a server bound there does not answer on 127.0.0.1:
    the updater's metrics go exactly where --metrics-address (RECS_METRICS_ADDRESS) says."""
    port = free_port()
    env = {**os.environ, "RECS_METRICS_ADDRESS": "127.0.0.2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recs.cli", "update", "--redis-url", redis_server.url,
         "--metrics-port", str(port)], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers("127.0.0.2", port), 30, "metrics on 127.0.0.2")
        assert not _answers("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(30)
