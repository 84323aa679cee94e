"""The README's advice on securing Redis holds: every Redis-side command works as an ACL user
limited to the key prefix, with the password carried in the URL."""

import pytest
import redis

from consumers.updater import Updater, UpdaterConfig
from recs.cli import main
from store.connection import connect
from store.keys import Keys
from trainer.data.synth import generate

pytestmark = pytest.mark.integration

KEYS = Keys("recs")


def test_every_command_works_as_a_prefix_limited_acl_user(redis_server, redis_client,
                                                           tmp_path, capsys):
    # Exactly the user the README tells operators to create; no access without a password.
    redis_client.execute_command("ACL", "SETUSER", "recs", "on", ">s3cret", "~recs:*",
                                 "+@all", "-@dangerous")
    redis_client.execute_command("ACL", "SETUSER", "default", "off")
    url = f"redis://recs:s3cret@127.0.0.1:{redis_server.port}/0"

    data = generate(n_users=600, n_resources=120, langs=("en",), seed=3)
    views = tmp_path / "views.csv"
    data.views_for("en").rename(columns={"views": "view_count"}).to_csv(views, index=False)

    assert main(["backfill", str(views), "--lang", "en", "--redis-url", url]) == 0
    assert main(["train", "--lang", "en", "--redis-url", url, "--model-dir", str(tmp_path),
                 "--min-item-views", "10", "--min-user-views", "3", "--factors", "8",
                 "--iterations", "5"]) == 0
    client = connect(url)
    rid = next(iter(client.smembers(KEYS.published_items("en")))).decode()
    user = next(iter(client.smembers(KEYS.published_users("en")))).decode()
    capsys.readouterr()
    assert main(["similar", rid, "--lang", "en", "--redis-url", url, "--json"]) == 0
    assert main(["recommend", user, "--lang", "en", "--redis-url", url, "--json"]) == 0
    assert capsys.readouterr().out.count("resource_id") >= 2

    # The updater's claims, version-checked writes and queue edits under the same user.
    client.zadd(KEYS.dirty("en"), {user: 10**9})
    client.delete(KEYS.recs("en", user))
    updater = Updater(client, UpdaterConfig(redis_url=url, langs=("en",), metrics_port=0))
    assert updater.drain() >= 1
    assert client.zcard(KEYS.recs("en", user)) == 20
    client.close()

    # The user really is limited to the prefix.
    with pytest.raises(redis.exceptions.NoPermissionError):
        connect(url).set("elsewhere", 1)
