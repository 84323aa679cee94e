"""Bad input and odd data at the command line (issue 23, items 8 and 10): catalogues that would
wipe or break things, titles and reasons that would drive the terminal, output paths that
cannot be written, a malformed quarantine entry, a reader that closes the pipe, default
ports that collide, README flags that do not exist, a Kafka probe that fails slowly."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recs.cli import COMMANDS, build_parser, main, parse_args
from recs.localstack_process import free_port, wait_until
from store.client import RecsClient
from store.keys import Keys
from store.resources import replace_details

pytestmark = pytest.mark.integration

KEYS = Keys()
ROOT = Path(__file__).resolve().parent.parent


def load(server, path: Path) -> int:
    return main(["resources", "load", str(path), "--lang", "en", "--redis-url", server.url])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# -- item 8: `recs resources load` ---------------------------------------------------------------


def test_a_header_only_file_never_wipes_the_catalogue(redis_server, redis_client, tmp_path,
                                                      capsys):
    good = tmp_path / "good.csv"
    good.write_text("id,title,folder,subject,tags\n10,Cells,Bio,Biology,a\n")
    assert load(redis_server, good) == 0
    empty = tmp_path / "empty.csv"
    empty.write_text("id,title,folder,subject,tags\n")
    capsys.readouterr()
    assert load(redis_server, empty) == 2
    assert "no resources" in one_line(capsys)
    assert RecsClient(redis_client).details("en", [10])[10]["title"] == "Cells"


@pytest.mark.parametrize("bad", ["Cells\x00intro", "Cells \x1b[2J\x1b[31mred", "a\x9bb"])
def test_control_characters_in_a_catalogue_are_refused(redis_server, redis_client, tmp_path,
                                                       capsys, bad):
    path = tmp_path / "bad.csv"
    path.write_bytes(f'id,title,folder,subject,tags\n10,Fine,Bio,Biology,a\n11,"{bad}",x,y,z\n'
                     .encode())
    assert load(redis_server, path) == 2
    line = one_line(capsys)
    assert "resource 11" in line and "control character" in line
    assert not redis_client.exists(KEYS.resources("en"))


def test_a_replaced_catalogue_is_freed_in_the_background(redis_server, redis_client, tmp_path):
    for n in (1, 2):
        path = tmp_path / f"r{n}.csv"
        path.write_text("id,title,folder,subject,tags\n" + "".join(
            f"{i},Title {i} v{n},f,s,t\n" for i in range(1, 3000)))
        assert load(redis_server, path) == 0
    # The first catalogue freed by UNLINK in the background, not inside the swap (the
    # counter moves when Redis's lazy-free thread has finished, a moment later).
    wait_until(lambda: redis_client.info("memory")["lazyfreed_objects"] >= 1, 10,
               "the replaced catalogue freed by the lazy-free thread")
    assert RecsClient(redis_client).details("en", [7])[7]["title"] == "Title 7 v2"
    assert [k for k in redis_client.keys("*") if b"_trash" in k or b"_loading" in k] == []


# -- item 8: the terminal --------------------------------------------------------------------------


def test_titles_and_reasons_never_reach_the_terminal_as_escape_sequences(
        redis_server, redis_client, capsys):
    redis_client.hset(KEYS.model("en"), mapping={"version": "v1", "trained_at": "2026-01-01"})
    redis_client.sadd(KEYS.langs, "en")
    redis_client.zadd(KEYS.similar("en", 10), {"11": 0.9})
    replace_details(redis_client, KEYS, "en", [(10, {"title": "A\x1b]0;owned\x07"}),
                                                (11, {"title": "B\x1b[2J\rC"})])
    assert main(["similar", "10", "--lang", "en", "--redis-url", redis_server.url]) == 0
    assert main(["hide", "12", "--lang", "en", "--reason", "dmca \x1b[31m\x9b1m",
                 "--redis-url", redis_server.url]) == 0
    assert main(["hidden", "--lang", "en", "--redis-url", redis_server.url]) == 0
    out = capsys.readouterr().out
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", out), repr(out)
    assert "B\\x1b[2J\\x0dC" in out and "dmca \\x1b[31m\\x9b1m" in out


def test_a_reader_that_closes_the_pipe_is_not_a_traceback(redis_server, redis_client):
    redis_client.hset(KEYS.model("en"), mapping={"version": "v1", "trained_at": "2026-01-01"})
    redis_client.zadd(KEYS.similar("en", 10), {str(i): 1.0 / i for i in range(11, 111)})
    proc = subprocess.Popen([sys.executable, "-m", "recs.cli", "similar", "10", "--lang", "en",
                             "-n", "100", "--json", "--redis-url", redis_server.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head -c 0`: gone before the first byte
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# -- item 10: output paths are checked before the work ------------------------------------------


def test_history_plot_to_a_bad_path_is_one_line(redis_server, redis_client, tmp_path, capsys):
    redis_client.rpush(KEYS.history("en"), json.dumps({
        "version": "v1", "trained_at": "2026-01-01T00:00:00Z", "ndcg": 0.3,
        "popularity_ndcg": 0.1, "k": 10, "published": True}))
    for bad in (tmp_path / "no" / "such" / "plot.png", tmp_path):
        assert main(["history", "--lang", "en", "--plot", str(bad),
                     "--redis-url", redis_server.url]) == 2
        assert "--plot" in one_line(capsys)
    assert not (tmp_path / "no").exists()


def test_tune_out_to_a_bad_path_is_refused_before_the_search(tmp_path, capsys):
    views = tmp_path / "views.csv"
    views.write_text("user_id,resource_id,view_count\n" + "".join(
        f"u{u},{r},1\n" for u in range(30) for r in range(1, 12)))
    out = tmp_path / "missing" / "best.json"
    assert main(["tune", "--views", str(views), "--out", str(out), "--trials", "2",
                 "--min-item-views", "1", "--min-user-views", "1"]) == 2
    assert "--out" in one_line(capsys)
    assert "trial" not in capsys.readouterr().out


def test_repair_skips_a_malformed_entry_and_repairs_the_rest(redis_server, redis_client,
                                                             capsys):
    from store.counts import Counts

    redis_client.hset(KEYS.views("en", "victim"), "5", "abc")
    applied = Counts(redis_client, KEYS).write(KEYS.offsets("g", "t"), [],
                                               {"en": {"victim": {5: 2}}})
    assert len(applied.parked) == 1
    redis_client.hset(KEYS.quarantine("en"), "0:broken", "{not json")
    redis_client.hset(KEYS.quarantine("en"), "1:odd", json.dumps(["a", "list"]))
    redis_client.hset(KEYS.views("en", "victim"), "5", "1")  # the key, fixed
    redis_client.sadd(KEYS.langs, "en")
    assert main(["repair", "--redis-url", redis_server.url]) == 1
    captured = capsys.readouterr()
    assert "1 parked entries counted now" in captured.out
    assert captured.err.count("malformed") == 2 and "Traceback" not in captured.err
    assert redis_client.hget(KEYS.views("en", "victim"), "5") == b"3"
    assert set(redis_client.hkeys(KEYS.quarantine("en"))) == {b"0:broken", b"1:odd"}


# -- item 10: defaults and the README ------------------------------------------------------------


def test_services_that_serve_metrics_have_distinct_default_ports():
    ports = {name: parse_args(argv).metrics_port for name, argv in {
        "consume": ["consume"], "update": ["update"], "control": ["control"],
        "train --every": ["train", "--every", "60"]}.items()}
    assert len(set(ports.values())) == len(ports), ports


def test_the_readme_commands_table_names_only_flags_that_exist():
    parser = build_parser()
    commands = {name for name, *_ in COMMANDS}
    sub = next(a for a in parser._actions if a.choices and "serve" in a.choices).choices
    rows = [line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("| `recs ")]
    assert len(rows) > 15
    for row in rows:
        cells = row.split(" | ")
        name = cells[0].split("`recs ")[1].split()[0].strip("`")
        assert name in commands, row
        options = {o for a in sub[name]._actions for o in a.option_strings}
        named = set(re.findall(r"`(--[a-z][a-z-]*)", cells[-1]))
        assert named <= options, (name, named - options)


# -- item 10: the page's Kafka probe ---------------------------------------------------------------


def test_a_broker_that_is_away_is_asked_once_per_interval_not_once_per_page(redis_client):
    from recs.serve_kafka import LagProbe
    from store.aclient import AsyncRecsClient
    from store.aconnect import connect_async

    probe = LagProbe(f"127.0.0.1:{free_port()}", "views", "recs", ttl=60, timeout=1)

    async def pages() -> list:
        client = connect_async(f"redis://127.0.0.1:{redis_client.connection_pool.connection_kwargs['port']}/0")
        try:
            return await asyncio.gather(*[probe.lag(AsyncRecsClient(client)) for _ in range(4)])
        finally:
            await client.aclose()

    try:
        lags = asyncio.run(pages())
    finally:
        probe.close()
    assert all(lag.total is None and lag.error for lag in lags)
    assert probe.probes == 1
