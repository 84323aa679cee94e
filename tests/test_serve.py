"""`recs serve` over real HTTP (uvicorn on a loopback port) against a real redis-server holding
a model trained by the real trainer on synthetic data, and `recs resources load`."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import quote, urlparse

import pytest

from recs.cli import main
from recs.serve import ServeConfig
from store.client import RecsClient
from store.keys import Keys
from store.read import DETAIL_FIELDS
from store.resources import replace_details
from tests.helpers import publish_views
from trainer.config import AlsConfig, FilterConfig, ModelSpec
from trainer.data.synth import generate
from trainer.settings import RetrainConfig

pytestmark = pytest.mark.integration

KEYS = Keys()
TOKEN = "s3cret-token"
ODD_USERS = ["a/b", "what?x=1&y=2", "100%", "%2F", "ünï 👩‍🎓", "+plus sign", "#hash",
             "..", "a;b,c=d", "x" * 128]


@pytest.fixture(scope="module")
def published(module_redis, tmp_path_factory):
    """A trained and published 'en' model (with metrics) and its resource details."""
    client = module_redis.client()
    client.flushall()
    data = generate(n_users=600, n_resources=120, langs=("en",), seed=5)
    settings = RetrainConfig(
        filters=FilterConfig(min_item_views=5, max_item_views=0, min_user_views=3),
        spec=ModelSpec("als", als=AlsConfig(factors=8, iterations=6)), top_n=10, evaluate=True,
        model_dir=str(tmp_path_factory.mktemp("models")))
    by_user = publish_views(client, data.views_for("en"), "en", settings)
    table = data.resources_for("en")
    replace_details(client, KEYS, "en", zip(table.index, table.to_dict("records"), strict=True))
    rid = int(sorted(client.smembers(KEYS.published_items("en")))[0])
    user = sorted(client.smembers(KEYS.published_users("en")))[0].decode()
    client.close()
    return SimpleNamespace(url=module_redis.url, redis=module_redis, titles=table["title"],
                           rid=rid, user=user, by_user=by_user)


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict

    @property
    def json(self):
        return json.loads(self.body)


def call(base: str, path: str, token: str | None = None, method: str = "GET",
         body: bytes | None = None, headers: dict | None = None) -> Reply:
    """One request with ``path`` sent exactly as given (no re-encoding by a client library)."""
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=sent)
    resp = conn.getresponse()
    reply = Reply(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
    conn.close()
    return reply


@pytest.fixture
def open_server(published, serve_http):
    return serve_http(ServeConfig(redis_url=published.url))


@pytest.fixture
def token_server(published, serve_http):
    return serve_http(ServeConfig(redis_url=published.url, token=TOKEN))


def test_similar_lists_come_with_titles_and_match_the_sync_client(published, open_server):
    got = call(open_server, f"/v1/en/resources/{published.rid}/similar?n=5")
    assert got.status == 200 and got.headers["content-type"] == "application/json"
    body = got.json
    expected = RecsClient(published.url).similar("en", published.rid, 5)
    assert [(i["resource_id"], i["score"]) for i in body["items"]] == [
        (r, pytest.approx(s, abs=1e-6)) for r, s in expected]
    assert len(body["items"]) == 5
    for item in body["items"]:
        assert item["title"] == published.titles[item["resource_id"]]
        assert set(DETAIL_FIELDS) <= set(item)
    assert body["resource"]["title"] == published.titles[published.rid]
    default = call(open_server, f"/v1/en/resources/{published.rid}/similar").json
    assert len(default["items"]) == 10


def test_recommendations_say_where_they_come_from(published, open_server):
    body = call(open_server, f"/v1/en/users/{published.user}/recommendations?n=3").json
    assert body["source"] == "personal" and body["user_id"] == published.user
    expected = RecsClient(published.url).recommend("en", published.user, 3)
    assert [i["resource_id"] for i in body["items"]] == [r for r, _ in expected]
    assert all(i["title"] for i in body["items"])
    none = call(open_server, "/v1/en/users/nobody-at-all/recommendations").json
    assert none["source"] == "none" and none["items"] == []


def test_trending_is_the_fallback_when_the_key_layout_has_one(published, serve_http):
    class WithTrending(Keys):
        def trending(self, lang: str) -> str:
            return f"{self.prefix}:{lang}:trending-test"

    keys = WithTrending()
    client = published.redis.client()
    client.zadd(keys.trending("en"), {str(published.rid): 9.0})
    try:
        base = serve_http(ServeConfig(redis_url=published.url), keys=keys)
        body = call(base, "/v1/en/users/nobody-at-all/recommendations").json
        assert body["source"] == "trending"
        assert body["items"][0]["resource_id"] == published.rid
        assert body["items"][0]["title"] == published.titles[published.rid]
        own = call(base, f"/v1/en/users/{published.user}/recommendations").json
        assert own["source"] == "personal"
    finally:
        client.delete(keys.trending("en"))
        client.close()


def test_every_user_id_the_contract_allows_round_trips(published, open_server):
    client = published.redis.client()
    try:
        for i, user in enumerate(ODD_USERS):
            client.zadd(KEYS.recs("en", user), {str(published.rid): float(i + 1)})
        for i, user in enumerate(ODD_USERS):
            got = call(open_server, f"/v1/en/users/{quote(user, safe='')}/recommendations")
            assert got.status == 200, (user, got.body)
            body = got.json
            assert body["user_id"] == user and body["source"] == "personal"
            assert body["items"] == [{"resource_id": published.rid, "score": float(i + 1),
                                      **_details(published, published.rid)}]
    finally:
        client.delete(*[KEYS.recs("en", u) for u in ODD_USERS])
        client.close()


def _details(published, rid):
    return RecsClient(published.url).details("en", [rid])[rid]


@pytest.mark.parametrize(("path", "status", "error"), [
    ("/v1/EN/model", 400, "bad_language"),
    ("/v1/english/resources/5/similar", 400, "bad_language"),
    ("/v1/e1/users/u/recommendations", 400, "bad_language"),
    ("/v1/fr/model", 404, "no_model"),
    ("/v1/fr/resources/5/similar", 404, "no_model"),
    ("/v1/fr/users/u/recommendations", 404, "no_model"),
    ("/v1/en/resources/abc/similar", 400, "bad_resource_id"),
    ("/v1/en/resources/0/similar", 400, "bad_resource_id"),
    ("/v1/en/resources/4294967296/similar", 400, "bad_resource_id"),
    ("/v1/en/resources/-3/similar", 400, "bad_resource_id"),
    ("/v1/en/resources/%D9%A1%D9%A2/similar", 400, "bad_resource_id"),
    ("/v1/en/users/u/recommendations?n=%EF%BC%95", 400, "bad_n"),
    ("/v1/en/resources/7/similar", 404, "unknown_resource"),
    ("/v1/en/resources/7/similar?n=0", 400, "bad_n"),
    ("/v1/en/users/u/recommendations?n=101", 400, "bad_n"),
    ("/v1/en/users/u/recommendations?n=abc", 400, "bad_n"),
    ("/v1/en/users/u/recommendations?n=-1", 400, "bad_n"),
    ("/v1/en/users/" + "x" * 129 + "/recommendations", 400, "bad_user_id"),
    ("/v1/en/users/a%01b/recommendations", 400, "bad_user_id"),
    ("/v1/en/users/%C2%85/recommendations", 400, "bad_user_id"),
    ("/v1/en/users/%FF%FE/recommendations", 400, "bad_user_id"),
    ("/v1/en/users//recommendations", 400, "bad_user_id"),
    ("/v1/en/users/a/b/recommendations", 404, "not_found"),
    ("/v1/en/users/u/something", 404, "not_found"),
    ("/v1/en/resources?q=", 400, "bad_query"),
    ("/no/such/route", 404, "not_found"),
    ("/static/secrets.txt", 404, "not_found"),
])
def test_bad_input_gets_a_4xx_with_a_json_reason(open_server, path, status, error):
    got = call(open_server, path)
    assert got.status == status, got.body
    assert got.json["error"] == error and got.json["detail"]


def test_wrong_method_is_a_json_405(published, open_server):
    got = call(open_server, f"/v1/en/resources/{published.rid}/similar", method="POST")
    assert got.status == 405 and got.json["error"] == "method_not_allowed"


def test_model_and_health(published, open_server):
    model = call(open_server, "/v1/en/model").json
    assert model["lang"] == "en" and model["factors"] == 8 and model["users"] > 0
    assert model["metrics"]["model"]["ndcg"] > model["metrics"]["popularity"]["ndcg"]
    assert 0 <= model["age_seconds"] < 3600
    health = call(open_server, "/healthz")
    assert health.status == 200 and health.json["redis"] == "ok"
    assert health.json["models"]["en"]["version"] == model["version"]


def test_title_search(published, open_server):
    rid = published.rid
    word = published.titles[rid].split(":")[0].upper()
    body = call(open_server, f"/v1/en/resources?q={quote(word)}&n=50").json
    assert body["items"] and all(word.casefold() in i["title"].casefold() for i in body["items"])
    assert rid in [i["resource_id"] for i in body["items"]]
    by_id = call(open_server, f"/v1/en/resources?q={rid}").json
    assert by_id["items"][0]["resource_id"] == rid
    assert call(open_server, "/v1/en/resources?q=zzzz-no-such-title").json["items"] == []


def test_the_token_guards_everything_but_healthz(published, token_server):
    guarded = ["/v1/en/model", f"/v1/en/resources/{published.rid}/similar",
               f"/v1/en/users/{published.user}/recommendations", "/metrics", "/openapi.json",
               "/v1/en/resources?q=a"]
    for path in guarded:
        got = call(token_server, path)
        assert got.status == 401 and got.json["error"] == "unauthorized", path
        assert got.headers["www-authenticate"] == "Bearer"
        assert call(token_server, path, token="wrong").status == 401
        assert call(token_server, path, token=TOKEN).status == 200, path
    assert call(token_server, "/healthz").status == 200
    page = call(token_server, "/")
    assert page.status == 200 and b'name="token"' in page.body
    assert b"<svg" not in page.body and b"lang-en" not in page.body
    assert call(token_server, "/", token=TOKEN).status == 200


def test_the_page_signs_in_with_a_cookie(token_server):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    wrong = call(token_server, "/login", method="POST", body=b"token=nope", headers=form)
    assert wrong.status == 401 and "set-cookie" not in wrong.headers
    ok = call(token_server, "/login", method="POST", body=f"token={TOKEN}".encode(),
              headers=form)
    assert ok.status == 303 and ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    jar = {"Cookie": cookie.split(";")[0]}
    assert call(token_server, "/", headers=jar).status == 200
    assert call(token_server, "/v1/en/model", headers=jar).status == 200


def test_explanations_need_a_token_and_name_viewed_resources(published, open_server,
                                                              token_server):
    path = f"/v1/en/users/{published.user}/explain?n=5"
    off = call(open_server, path)
    assert off.status == 403 and off.json["error"] == "user_lookups_off"
    body = call(token_server, path, token=TOKEN).json
    viewed = published.by_user[published.user]
    assert {v["resource_id"]: v["count"] for v in body["views"]} == viewed
    assert all(v["title"] == published.titles[v["resource_id"]] for v in body["views"])
    assert body["source"] == "personal" and len(body["items"]) == 5
    for item in body["items"]:
        assert item["resource_id"] not in viewed
        reasons = item["because"]
        assert 1 <= len(reasons) <= 3
        assert all(r["resource_id"] in viewed and r["title"] for r in reasons)
        shares = [r["share"] for r in reasons]
        assert shares == sorted(shares, reverse=True)


def test_page_is_server_rendered_with_a_chart(published, open_server):
    got = call(open_server, "/")
    assert got.status == 200 and got.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in got.headers["content-security-policy"]
    page = got.body.decode()
    assert 'id="lang-en"' in page and "<polyline" in page and "NDCG@10" in page
    assert "User look-ups are off" in page and 'id="user-form"' not in page
    for name in ("page.js", "page.css", "favicon.svg"):
        assert call(open_server, f"/static/{name}").status == 200


def test_openapi_describes_every_route(published, open_server, token_server):
    from recs.serve import create_app

    open_doc = call(open_server, "/openapi.json").json
    # Without a token: no bearer scheme, no 401, nothing asks for credentials.
    assert "security" not in open_doc and "securitySchemes" not in open_doc["components"]
    for path, item in open_doc["paths"].items():
        assert "401" not in item["get"]["responses"] and "security" not in item["get"], path
    # What is not JSON says so.
    assert set(open_doc["paths"]["/"]["get"]["responses"]["200"]["content"]) == {"text/html"}
    assert list(open_doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"])[0] \
        .startswith("text/plain")
    doc = call(token_server, "/openapi.json", token=TOKEN).json
    assert doc["security"] == [{"bearer": []}]
    assert doc["openapi"].startswith("3.1")
    routes = {r.path for r in create_app(ServeConfig()).routes} - {"/login", "/static/{name}"}
    described = set(doc["paths"])
    assert "/v1/{lang}/users/{rest:path}" in routes
    routes.discard("/v1/{lang}/users/{rest:path}")
    assert {"/v1/{lang}/users/{user_id}/recommendations",
            "/v1/{lang}/users/{user_id}/explain"} <= described
    assert routes <= described
    assert doc["paths"]["/healthz"]["get"]["security"] == []


def test_metrics_count_requests_by_route_and_status(published, open_server):
    call(open_server, f"/v1/en/resources/{published.rid}/similar")
    call(open_server, "/v1/en/resources/0/similar")
    text = call(open_server, "/metrics").body.decode()
    assert 'recs_serve_requests_total{route="similar",status="200"} 1.0' in text
    assert 'recs_serve_requests_total{route="similar",status="400"} 1.0' in text
    assert "recs_serve_request_seconds_bucket" in text


def test_redis_down_gives_503_and_healthz_says_so(redis_server, serve_http):
    client = redis_server.client()
    client.hset(KEYS.model("en"), mapping={"version": "v1", "trained_at": "2026-01-01T00:00:00Z"})
    client.zadd(KEYS.similar("en", 5), {"6": 0.5})
    client.close()
    base = serve_http(ServeConfig(redis_url=redis_server.url, redis_timeout=1.0))
    assert call(base, "/v1/en/resources/5/similar").status == 200
    redis_server.kill()
    for path in ("/v1/en/resources/5/similar", "/v1/en/users/u/recommendations",
                 "/v1/en/model", "/v1/en/resources?q=a"):
        got = call(base, path)
        assert got.status == 503 and got.json["error"] == "unavailable", path
    health = call(base, "/healthz")
    assert health.status == 503 and health.json["status"] == "unavailable"
    assert "unreachable" in health.json["redis"]
    page = call(base, "/")
    assert page.status == 503


# -- recs resources load, and the CLI using the details ------------------------------------------


def test_resources_load_replaces_the_catalogue_and_the_cli_shows_titles(
        published, redis_server, tmp_path, capsys):
    client = redis_server.client()
    client.hset(KEYS.model("en"), mapping={"version": "v1", "items": "3"})
    client.zadd(KEYS.similar("en", 10), {"11": 0.9, "12": 0.8})
    first = tmp_path / "resources_en.csv"
    first.write_text('id,title,folder,subject,tags\n10,"Cells, intro",Bio,Biology,"a,b"\n'
                     "11,Mitosis,Bio,Biology,c\n12,Meiosis,Bio,Biology,\n13,Gone,x,y,z\n")
    assert main(["resources", "load", str(first), "--lang", "en",
                 "--redis-url", redis_server.url]) == 0
    assert "4 resources" in capsys.readouterr().out
    assert main(["similar", "10", "--lang", "en", "--json", "--redis-url",
                 redis_server.url]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["resource_id"], r["title"]) for r in rows] == [(11, "Mitosis"), (12, "Meiosis")]
    assert main(["similar", "10", "--lang", "en", "--redis-url", redis_server.url]) == 0
    assert "Similar to Cells, intro — Biology [10]" in capsys.readouterr().out
    second = tmp_path / "resources_en_2.csv"
    second.write_text("id,title,folder,subject,tags\n11,Mitosis II,Bio,Biology,c\n")
    assert main(["resources", "load", str(second), "--lang", "en",
                 "--redis-url", redis_server.url]) == 0
    details = RecsClient(client).details("en", [10, 11, 13])
    assert details == {11: {"title": "Mitosis II", "folder": "Bio", "subject": "Biology",
                            "tags": "c"}}
    assert [k for k in client.keys("*") if b"_resources_loading" in k] == []
    client.close()


def test_resources_load_refuses_bad_input(redis_server, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,title\nseven,Nope\n")
    assert main(["resources", "load", str(bad), "--lang", "en",
                 "--redis-url", redis_server.url]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["resources", "load", str(bad), "--lang", "English"]) == 2
    assert "not a language code" in capsys.readouterr().err
    assert main(["resources", "load", str(tmp_path / "missing.csv"), "--lang", "en",
                 "--redis-url", redis_server.url]) == 2


def test_recs_serve_runs_from_the_environment_and_stops_on_sigterm(redis_server, start_recs):
    import os
    import time

    from recs.localstack_process import free_port

    port = free_port()
    env = {**os.environ, "RECS_REDIS_URL": redis_server.url, "RECS_PORT": str(port),
           "RECS_TOKEN": TOKEN}
    proc = start_recs(["serve"], env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        proc.check_alive("starting")
        try:
            if call(base, "/healthz").status == 200:
                break
        except OSError:
            assert time.monotonic() < deadline, "recs serve did not answer"
            time.sleep(0.1)
    assert call(base, "/v1/en/model").status == 401
    assert call(base, "/v1/en/model", token=TOKEN).status == 404
    assert proc.stop() == 0
    log = proc.log_path.read_text()
    assert TOKEN not in log and '"token":"set"' in log


def test_the_page_shows_the_consumer_lag_from_kafka(redis_server, broker, topics, serve_http):
    from consumers.produce import produce_events

    topic, _ = topics
    ends: dict[int, int] = {}
    events = [{"user_id": f"u{i}", "resource_id": 1 + i % 7, "lang": "en"} for i in range(40)]
    # One record per batch: Tansu answers ListOffsets after a multi-record batch with the
    # batch's base offset + 1 (Apache Kafka does not), which would make the lag look smaller.
    one_by_one = {"linger.ms": "0", "batch.num.messages": "1"}
    assert produce_events(broker.bootstrap, topic, events, one_by_one, ends=ends) == 40
    applied = {p: end // 2 for p, end in list(ends.items())[:2]}  # two partitions half done
    client = redis_server.client()
    if applied:
        client.hset(KEYS.offsets("recs", topic), mapping=applied)
    client.sadd(KEYS.langs, "en")
    client.close()
    expected = sum(end - applied.get(p, 0) for p, end in ends.items())
    base = serve_http(ServeConfig(redis_url=redis_server.url, topic=topic,
                                  kafka_bootstrap_servers=broker.bootstrap))
    page = call(base, "/").body.decode()
    assert f'<strong class="lag">{expected}</strong>' in page, page[:2000]
    gone = serve_http(ServeConfig(redis_url=redis_server.url, topic="no-such-topic",
                                  kafka_bootstrap_servers=broker.bootstrap))
    got = call(gone, "/")
    assert got.status == 200 and "Kafka end offsets unavailable" in got.body.decode()


def test_a_damaged_item_side_still_lists_without_reasons(redis_server, serve_http):
    client = redis_server.client()
    client.hset(KEYS.model("en"), mapping={"version": "v1", "factors": "4", "alpha": "1",
                                           "regularization": "0.1", "scaling": "log"})
    client.set(KEYS.item_factors("en"), b"\x00" * 12)  # not 4 x 4 bytes per item id
    client.set(KEYS.item_ids("en"), b"\x01\x00\x00\x00")
    client.zadd(KEYS.recs("en", "u"), {"1": 1.0})
    client.hset(KEYS.views("en", "u"), mapping={"2": "3"})
    client.close()
    base = serve_http(ServeConfig(redis_url=redis_server.url, token=TOKEN))
    got = call(base, "/v1/en/users/u/explain", token=TOKEN)
    assert got.status == 200, got.body
    assert got.json["items"][0]["because"] == [] and got.json["views"][0]["count"] == 3


def test_any_contract_user_id_round_trips(published, open_server):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from core.contract import CONTROL_CHARACTERS

    client = published.redis.client()
    written: list[str] = []

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.text(st.characters(exclude_categories=("Cs",)), min_size=1,
                   max_size=128).filter(lambda u: not CONTROL_CHARACTERS.search(u)))
    def round_trip(user: str) -> None:
        client.zadd(KEYS.recs("en", user), {str(published.rid): 1.5})
        written.append(user)
        got = call(open_server, f"/v1/en/users/{quote(user, safe='')}/recommendations?n=1")
        assert got.status == 200, (user, got.body)
        assert got.json["user_id"] == user and got.json["source"] == "personal"

    try:
        round_trip()
    finally:
        client.delete(*[KEYS.recs("en", u) for u in written] or ["-"])
        client.close()


def test_ease_models_explain_their_lists_too(redis_server, serve_http, tmp_path):
    from trainer.config import EaseConfig, ModelSpec

    client = redis_server.client()
    data = generate(n_users=300, n_resources=60, langs=("en",), seed=9)
    settings = RetrainConfig(
        filters=FilterConfig(min_item_views=3, max_item_views=0, min_user_views=3),
        spec=ModelSpec(model="ease", ease=EaseConfig()), top_n=5, model_dir=str(tmp_path))
    by_user = publish_views(client, data.views_for("en"), "en", settings)
    user = sorted(client.smembers(KEYS.published_users("en")))[0].decode()
    client.close()
    base = serve_http(ServeConfig(redis_url=redis_server.url, token=TOKEN))
    body = call(base, f"/v1/en/users/{quote(user)}/explain?n=5", token=TOKEN).json
    assert body["source"] == "personal" and len(body["items"]) == 5
    for item in body["items"]:
        assert item["because"], item
        assert all(r["resource_id"] in by_user[user] and r["contribution"] > 0
                   for r in item["because"])
