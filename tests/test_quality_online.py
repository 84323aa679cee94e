"""Online quality: `recs tune --lang` and the settings hash, the history `recs train
--evaluate` appends (capped), `recs history` and its plot, and the quality gate."""

from __future__ import annotations

import json

import pytest

from recs.cli import main
from store.keys import Keys
from store.quality import append_history, read_history, read_settings, write_settings
from tests.helpers import load_counts
from tests.test_train_online import FLAGS
from trainer.data.synth import generate
from trainer.quality.gate import gate

pytestmark = pytest.mark.integration

KEYS = Keys()


@pytest.fixture(scope="module")
def data():
    return generate(n_users=800, n_resources=120, langs=("en",), seed=13, n_subjects=6)


def recs(server, tmp_path, *args) -> int:
    """``recs ARGS`` against ``server``; a train gets FLAGS first, so its own flags win."""
    common = ["--model-dir", str(tmp_path / "models"), *FLAGS] if args[0] == "train" else []
    return main([args[0], *common, *args[1:], "--redis-url", server.url])


def model_field(client, name: str) -> str:
    return client.hget(KEYS.model("en"), name).decode()


def test_tuned_settings_apply_under_the_flags_given(redis_server, redis_client, tmp_path,
                                                    data, capsys):
    load_counts(redis_client, data.views_for("en"), "en")
    assert main(["tune", "--lang", "en", "--redis-url", redis_server.url, "--trials", "2",
                 "--search", "als", "--min-item-views", "20", "--min-user-views", "3",
                 "--iterations", "4", "--threads", "1"]) == 0
    stored = read_settings(redis_client, KEYS, "en")
    assert stored["model"] == "als" and stored["trials"] == "2" and "factors" in stored
    assert "settings stored in recs:en:settings" in capsys.readouterr().out

    write_settings(redis_client, KEYS, "en", {"model": "als", "factors": 12, "alpha": 9.5})
    assert recs(redis_server, tmp_path, "train", "--lang", "en") == 0
    # FLAGS give --factors 16: the flag wins; alpha was not given: the tuned value wins.
    assert model_field(redis_client, "factors") == "16"
    assert model_field(redis_client, "alpha") == "9.5"
    assert model_field(redis_client, "model") == "als"
    write_settings(redis_client, KEYS, "en", {"model": "ease"})
    assert recs(redis_server, tmp_path, "train", "--lang", "en", "--model", "als") == 0


def test_history_and_the_gate(redis_server, redis_client, tmp_path, data, capsys):
    load_counts(redis_client, data.views_for("en"), "en")
    assert recs(redis_server, tmp_path, "train", "--lang", "en", "--evaluate") == 0
    [first] = read_history(redis_client, KEYS, "en")
    live = model_field(redis_client, "version")
    assert first["version"] == live and first["published"] is True
    assert first["model"] == "als" and first["settings"]["factors"] == 16
    assert first["ndcg"] > first["popularity_ndcg"] > 0

    # The live model's last figure, raised out of reach: the next model is 5% or more below.
    append_history(redis_client, KEYS, "en", {**first, "ndcg": 0.99, "version": "v-high"})
    assert recs(redis_server, tmp_path, "train", "--lang", "en", "--evaluate") == 0
    out, err = capsys.readouterr()
    assert "en: not published: held-out NDCG@10" in out
    assert [line for line in err.splitlines()
            if "WARNING" in line and "the live model stays" in line]
    assert model_field(redis_client, "version") == live
    assert read_history(redis_client, KEYS, "en")[-1]["published"] is False

    assert recs(redis_server, tmp_path, "train", "--lang", "en", "--evaluate", "--force") == 0
    assert model_field(redis_client, "version") != live
    history = read_history(redis_client, KEYS, "en")
    assert [e["published"] for e in history] == [True, True, False, True]

    capsys.readouterr()
    png = tmp_path / "quality.png"
    assert main(["history", "--lang", "en", "--redis-url", redis_server.url,
                 "--plot", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["version", "trained_at", "model", "ndcg@10"]
    assert len(out) == 1 + 4 + 1 and "no (gate)" in out[3] and out[-1] == f"plot: {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_history_is_capped(r):
    client = r
    for n in range(7):
        append_history(client, KEYS, "en", {"version": f"v{n}"}, cap=3)
    assert [e["version"] for e in read_history(client, KEYS, "en")] == ["v4", "v5", "v6"]
    assert json.loads(client.lindex(KEYS.history("en"), 0))["version"] == "v4"


def test_the_gate_refuses_below_popularity_and_below_the_live_model():
    def metrics(ndcg, pop):
        return {"model": {"ndcg": ndcg}, "popularity": {"ndcg": pop}}

    assert "below popularity's" in gate(metrics(0.10, 0.12), [], 0.05)
    assert gate(metrics(0.30, 0.12), [], 0.05) is None
    history = [{"ndcg": 0.40, "published": True, "version": "a"},
               {"ndcg": 0.90, "published": False, "version": "b"}]  # gated: not live
    assert gate(metrics(0.381, 0.12), history, 0.05) is None
    assert "more than 5% below the live model's 0.4000 (a)" in gate(metrics(0.379, 0.12),
                                                                    history, 0.05)
    assert gate(metrics(0.379, 0.12), history, 0.10) is None


def test_auto_is_decided_by_tune_and_stored_with_its_evidence(redis_server, redis_client,
                                                              tmp_path, data, monkeypatch):
    from tests.test_tune import count_fits

    load_counts(redis_client, data.views_for("en"), "en")
    assert main(["tune", "--lang", "en", "--redis-url", redis_server.url, "--trials", "3",
                 "--search", "als,ease", "--min-item-views", "20", "--min-user-views", "3",
                 "--iterations", "4", "--factors", "8", "--threads", "1"]) == 0
    stored = read_settings(redis_client, KEYS, "en")
    evidence = json.loads(stored["auto_evidence"])
    assert stored["auto_choice"] in ("als", "ease") and set(evidence) == {"als", "ease"}
    assert all(e["validation_ndcg"] > 0 and e["fit_seconds"] >= 0 for e in evidence.values())

    fits = count_fits(monkeypatch)
    assert recs(redis_server, tmp_path, "train", "--lang", "en", "--model", "auto") == 0
    assert fits == [stored["auto_choice"]]
    assert model_field(redis_client, "model") == stored["auto_choice"]
