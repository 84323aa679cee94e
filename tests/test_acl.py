"""Least privilege (issue 23, item 9): the README's Redis users, one per service, created with
ACL SETUSER on a real redis-server exactly as the README writes them; each service runs as its
user, and without one command it needs fails saying the user lacks a permission."""

from __future__ import annotations

import re
import secrets
import uuid
from pathlib import Path

import pytest

from consumers.produce import produce_events
from consumers.updater import Updater, UpdaterConfig
from recs.cli import main
from recs.serve import ServeConfig
from store.connection import connect
from store.keys import Keys
from tests.conftest import KAFKA_TEST_CONFIG
from tests.test_serve import call
from trainer.data.synth import generate

pytestmark = pytest.mark.integration

KEYS = Keys()
README = Path(__file__).resolve().parent.parent / "README.md"
KAFKA = ["--kafka-config", ",".join(f"{k}={v}" for k, v in KAFKA_TEST_CONFIG.items())]
TRAIN = ["--min-item-views", "5", "--min-user-views", "3", "--factors", "8", "--iterations", "4"]


def readme_users() -> dict[str, list[str]]:
    """user -> the ACL SETUSER rules the README gives it."""
    found = re.findall(r"^ +ACL SETUSER (recs-[a-z]+) (.+)$", README.read_text(), re.M)
    return {user: rules.split() for user, rules in found}


class Users:
    """Creates the README's users (each with a fresh password) and gives their URLs."""

    def __init__(self, server, admin) -> None:
        self.server, self.admin = server, admin
        self.rules = readme_users()
        assert set(self.rules) == {f"recs-{s}" for s in (
            "consume", "update", "train", "serve", "control", "catalogue")}

    def url(self, service: str, without: str | None = None) -> str:
        """The URL of ``recs-SERVICE``, created now, optionally lacking one command."""
        user, password = f"recs-{service}", secrets.token_hex(8)
        rules = [f">{password}" if r == ">PASSWORD" else r for r in self.rules[user]]
        if without is not None:
            assert f"+{without}" in rules, (user, without)
            rules = [r for r in rules if r != f"+{without}"]
        self.admin.execute_command("ACL", "DELUSER", user)
        self.admin.execute_command("ACL", "SETUSER", user, "reset", *rules)
        return f"redis://{user}:{password}@127.0.0.1:{self.server.port}/0"


@pytest.fixture
def users(redis_server, redis_client):
    return Users(redis_server, redis_client)


@pytest.fixture
def extract(tmp_path):
    data = generate(n_users=400, n_resources=80, langs=("en",), seed=3)
    path = tmp_path / "views.csv"
    data.views_for("en").rename(columns={"views": "view_count"}).to_csv(path, index=False)
    return data, path


def published(admin_url: str, path: Path, tmp_path: Path) -> tuple[str, str]:
    """Counts and a model, written as the admin (the default user); a resource and a user."""
    assert main(["backfill", str(path), "--lang", "en", "--redis-url", admin_url]) == 0
    assert main(["train", "--lang", "en", "--redis-url", admin_url, "--model-dir",
                 str(tmp_path / "m0"), *TRAIN]) == 0
    client = connect(admin_url)
    rid = min(client.smembers(KEYS.published_items("en"))).decode()
    user = min(client.smembers(KEYS.published_users("en"))).decode()
    client.close()
    return rid, user


def says_permission(capsys) -> None:
    """The command's last line names the missing permission (ours, or Redis's words)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err
    assert "lacks a permission" in err[-1] or "can't run this command" in err[-1], err[-1]


def test_consume_backfill_and_repair_as_recs_consume(users, redis_server, redis_client, broker,
                                                     extract, capsys):
    data, path = extract
    topic = f"views-{uuid.uuid4().hex[:8]}"
    broker.create_topics({topic: 2, f"{topic}.dlq": 1})
    events = [{"user_id": f"k{i % 40}", "resource_id": int(r), "lang": "en"}
              for i, r in enumerate(data.views_for("en")["resource_id"][:300])]
    produce_events(broker.bootstrap, topic, [*events, {"not": "an event"}])

    def consume(url: str) -> int:
        return main(["consume", "--redis-url", url, "--topic", topic, "--dlq-topic",
                     f"{topic}.dlq", "--group", f"g-{uuid.uuid4().hex[:6]}", "--metrics-port",
                     "0", "--until-drained", "--kafka-bootstrap-servers", broker.bootstrap,
                     *KAFKA])

    url = users.url("consume")
    assert consume(url) == 0
    assert sum(int(v) for v in redis_client.hvals(KEYS.item_views("en"))) == 300
    assert main(["backfill", str(path), "--lang", "en", "--redis-url", url]) == 0
    redis_client.hset(KEYS.views("en", "victim"), "5", "abc")  # poisoned, then fixed
    redis_client.hset(KEYS.quarantine("en"), "1:victim", '{"user": "victim", "reason": "x", '
                                                         '"views": {"5": 2}}')
    redis_client.hset(KEYS.views("en", "victim"), "5", "1")
    assert main(["repair", "--redis-url", url]) == 0
    assert redis_client.hget(KEYS.views("en", "victim"), "5") == b"3"
    capsys.readouterr()
    before = redis_client.hgetall(KEYS.item_views("en"))
    assert consume(users.url("consume", without="hincrby")) == 2
    says_permission(capsys)
    assert redis_client.hgetall(KEYS.item_views("en")) == before
    assert redis_client.hlen(KEYS.quarantine("en")) == 0  # refused, not parked as poisoned


def test_train_tune_history_and_lookups_as_recs_train(users, redis_server, redis_client,
                                                      extract, tmp_path, capsys):
    _, path = extract
    rid, user = published(redis_server.url, path, tmp_path)
    url = users.url("train")
    assert main(["train", "--lang", "en", "--redis-url", url, "--model-dir", str(tmp_path / "m"),
                 "--evaluate", "--force", *TRAIN]) == 0
    assert main(["train", "--lang", "en", "--redis-url", url, "--model-dir", str(tmp_path / "m"),
                 "--model", "ease", *TRAIN]) == 0
    assert redis_client.hget(KEYS.model("en"), "model") == b"ease"
    assert main(["tune", "--lang", "en", "--redis-url", url, "--trials", "2",
                 "--search", "als,ease", *TRAIN[:4]]) == 0
    assert redis_client.exists(KEYS.settings("en"))
    assert main(["history", "--lang", "en", "--redis-url", url]) == 0
    assert main(["similar", rid, "--lang", "en", "--redis-url", url]) == 0
    assert main(["recommend", user, "--lang", "en", "--redis-url", url]) == 0
    capsys.readouterr()
    assert main(["train", "--lang", "en", "--redis-url", users.url("train", without="zadd"),
                 "--model-dir", str(tmp_path / "m"), *TRAIN]) == 2
    says_permission(capsys)


def test_update_and_trending_as_recs_update(users, redis_server, redis_client, extract,
                                            tmp_path, capsys):
    _, path = extract
    _, user = published(redis_server.url, path, tmp_path)
    url = users.url("update")
    client = connect(url)
    redis_client.zadd(KEYS.dirty("en"), {user: 10**9})
    redis_client.delete(KEYS.recs("en", user))
    assert Updater(client, UpdaterConfig(redis_url=url, langs=("en",), metrics_port=0)).drain() >= 1
    assert redis_client.zcard(KEYS.recs("en", user)) == 20
    client.close()
    for _ in range(2):  # the first refresh records the totals, the second scores
        assert main(["trending", "--lang", "en", "--redis-url", url]) == 0
    capsys.readouterr()
    assert main(["trending", "--lang", "en", "--redis-url",
                 users.url("update", without="hscan")]) == 2
    says_permission(capsys)


def test_serve_as_recs_serve(users, redis_server, redis_client, extract, tmp_path, serve_http):
    _, path = extract
    rid, user = published(redis_server.url, path, tmp_path)
    csv = tmp_path / "resources.csv"
    csv.write_text("id,title,folder,subject,tags\n" + f"{rid},Cells,Bio,Biology,a\n")
    assert main(["resources", "load", str(csv), "--lang", "en",
                 "--redis-url", redis_server.url]) == 0
    base = serve_http(ServeConfig(redis_url=users.url("serve"), token="t0ken"))
    for path_ in (f"/v1/en/resources/{rid}/similar", f"/v1/en/users/{user}/recommendations",
                  "/v1/en/users/nobody/recommendations", f"/v1/en/users/{user}/explain",
                  "/v1/en/model", "/v1/en/resources?q=cells", f"/v1/en/resources?q={rid}",
                  "/healthz", "/", "/metrics"):
        assert call(base, path_, token="t0ken").status == 200, path_
    assert call(base, "/v1/en/resources?q=cells", token="t0ken").json["items"]
    lacking = serve_http(ServeConfig(redis_url=users.url("serve", without="evalsha")))
    got = call(lacking, f"/v1/en/resources/{rid}/similar")
    assert got.status == 503 and got.json["error"] == "redis_permission"
    assert "permission" in got.json["detail"]


def test_control_hide_and_forget_as_recs_control(users, redis_server, redis_client, broker,
                                                 extract, tmp_path, capsys):
    _, path = extract
    rid, user = published(redis_server.url, path, tmp_path)
    url = users.url("control")
    assert main(["hide", rid, "--lang", "en", "--reason", "dmca", "--redis-url", url]) == 0
    assert main(["hidden", "--lang", "en", "--redis-url", url]) == 0
    assert main(["unhide", rid, "--lang", "en", "--redis-url", url]) == 0
    assert main(["forget", user, "--redis-url", url]) == 0
    assert not redis_client.exists(KEYS.views("en", user))
    topic = f"changes-{uuid.uuid4().hex[:8]}"
    broker.create_topics({topic: 1, f"{topic}.dlq": 1})
    produce_events(broker.bootstrap, topic, [{"action": "hide", "resource_id": int(rid),
                                              "lang": "en"}, {"action": "bogus"}])
    assert main(["control", "--redis-url", url, "--control-topic", topic, "--control-dlq-topic",
                 f"{topic}.dlq", "--control-group", f"c-{uuid.uuid4().hex[:6]}",
                 "--metrics-port", "0", "--until-drained", "--kafka-bootstrap-servers",
                 broker.bootstrap, *KAFKA]) == 0
    assert redis_client.hexists(KEYS.hidden("en"), rid)
    assert not redis_client.exists(KEYS.takedown_work("en"))
    capsys.readouterr()
    assert main(["hide", rid, "--lang", "en", "--redis-url",
                 users.url("control", without="sscan")]) == 2
    says_permission(capsys)


def test_resources_load_as_recs_catalogue(users, redis_client, tmp_path, capsys):
    csv = tmp_path / "resources.csv"
    csv.write_text("id,title,folder,subject,tags\n" + "".join(
        f"{i},Title {i},f,s,t\n" for i in range(1, 50)))
    for _ in range(2):  # the second replaces the first
        assert main(["resources", "load", str(csv), "--lang", "en",
                     "--redis-url", users.url("catalogue")]) == 0
    assert redis_client.hlen(KEYS.resources("en")) == 49
    capsys.readouterr()
    assert main(["resources", "load", str(csv), "--lang", "en",
                 "--redis-url", users.url("catalogue", without="rename")]) == 2
    says_permission(capsys)
