"""Every mistake is one line and exit 2, never a traceback, never a password (issue 9, 5-8, 11).

Option checks run ``recs.cli.main`` in-process (no server needed); the Redis cases run the
real ``python -m recs.cli`` against a real redis-server (down, or with a password set).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import options as o
from core.redact import mask_url, redact, register_secret
from recs import cli
from recs.cli_options import Default
from recs.localstack_process import free_port

PASSWORD = "s3cr3t-Pa55"


def _main(argv: list[str], capsys, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``recs ARGV`` in-process: (exit code, stderr)."""
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, capsys.readouterr().err


def _one_line_error(code: int, err: str, command: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"recs {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


# -- bad options: refused at start-up, flag or variable alike ---------------------------------

BAD_OPTIONS = [
    (["train", "--log-level", "bogus"], "--log-level"),
    (["train", "--lock-ttl", "nan"], "--lock-ttl"),
    (["train", "--lock-ttl", "0.5"], "--lock-ttl"),
    (["update", "--lease-seconds", "inf"], "--lease-seconds"),
    (["consume", "--metrics-port", "70000"], "--metrics-port"),
    (["update", "--metrics-port", "-1"], "--metrics-port"),
    (["generate", "--users", "0"], "--users"),
    (["generate", "--langs", "en,EN"], "--langs"),
    (["evaluate", "--views", "v.csv", "--seed", "-1"], "--seed"),
    (["train", "--threads", "-5"], "--threads"),
    (["consume", "--batch-timeout", "nan"], "--batch-timeout"),
    (["train", "--every", "nan"], "--every"),
    (["train", "--every", "-1"], "--every"),
    (["consume", "--redis-retry-max", "-1"], "--redis-retry-max"),
    (["consume", "--broker-warn-after", "0"], "--broker-warn-after"),
    (["consume", "--metrics-address", "not an address"], "--metrics-address"),
    (["update", "--lang", "EN"], "--lang"),
    (["train", "--lang", ""], "--lang"),
    (["similar", "5", "--lang", "e"], "--lang"),
    (["backfill", "v.csv", "--lang", "english"], "--lang"),
    (["train", "--factors", "0"], "--factors"),
    (["train", "--alpha", "inf"], "--alpha"),
    (["recommend", "u", "-n", "0", "--lang", "en"], "-n"),
    (["similar", "5", "--lang", "en", "--redis-url", f"redis://:{PASSWORD}@h:abc/0"],
     "--redis-url"),
    (["similar", "5", "--lang", "en", "--redis-url",
      f"redis://:{PASSWORD}@h:1/0?ssl_cert_reqs=required"], "--redis-url"),
    (["train", "--redis-url", f"http://:{PASSWORD}@h:1/0"], "--redis-url"),
]


@pytest.mark.parametrize(("argv", "option"), BAD_OPTIONS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else v)
def test_bad_option_is_one_line(argv, option, capsys):
    line = _one_line_error(*_main(argv, capsys), argv[0])
    assert option in line
    assert PASSWORD not in line


BAD_VARIABLES = [
    ("consume", {"RECS_BATCH_TIMEOUT": "nan"}, "--batch-timeout"),
    ("consume", {"RECS_REDIS_RETRY_MAX": "-1"}, "--redis-retry-max"),
    ("train", {"RECS_EVERY": "nan"}, "--every"),
    ("train", {"RECS_LOG_LEVEL": "loud"}, "--log-level"),
    ("update", {"RECS_LANG": "en,EN"}, "RECS_LANG"),
    ("update", {"RECS_METRICS_PORT": "65536"}, "--metrics-port"),
    ("consume", {"RECS_KAFKA_CONFIG": '{"sasl.password": ["a"]}'}, "RECS_KAFKA_CONFIG"),
    ("consume", {"RECS_KAFKA_CONFIG": '{"sasl.password": "' + PASSWORD}, "RECS_KAFKA_CONFIG"),
]


@pytest.mark.parametrize(("command", "env", "option"), BAD_VARIABLES,
                         ids=lambda v: str(v)[:40])
def test_bad_variable_is_one_line(command, env, option, capsys):
    line = _one_line_error(*_main([command], capsys, env), command)
    assert option in line
    assert PASSWORD not in line


def test_every_numeric_option_has_a_checked_type():
    parser = cli.build_parser()
    unchecked = []
    for sub in cli.subparsers(parser):
        for action in sub._actions:
            default = action.default
            if isinstance(default, Default):
                default = default.value()
            numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
            if action.type in (int, float) or (numeric and getattr(
                    action.type, "__module__", None) != "core.options"):
                unchecked.append(f"{sub.prog} {'/'.join(action.option_strings)}")
    assert not unchecked


def test_defaults_come_from_the_config_dataclasses(capsys):
    from consumers.config import ConsumerConfig, UpdaterConfig
    from trainer.settings import RetrainConfig

    consume = cli.parse_args(["consume"])
    assert (consume.batch_size, consume.batch_timeout, consume.redis_retry_max,
            consume.metrics_address, consume.broker_warn_after) == (
        ConsumerConfig.batch_size, ConsumerConfig.batch_timeout, ConsumerConfig.retry_max,
        ConsumerConfig.metrics_address, ConsumerConfig.broker_warn_after)
    update = cli.parse_args(["update"])
    assert (update.lease_seconds, update.metrics_port, update.top_n) == (
        UpdaterConfig.lease_seconds, UpdaterConfig.metrics_port, UpdaterConfig.top_n)
    train = cli.parse_args(["train"])
    assert (train.lock_ttl, train.model_dir, train.threads) == (
        RetrainConfig.lock_ttl, RetrainConfig.model_dir, RetrainConfig.threads)
    assert cli.main(["consume", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert f"(default {ConsumerConfig.batch_size})" in help_text
    assert f"(default {ConsumerConfig.broker_warn_after})" in help_text


def test_a_flag_wins_over_a_repeatable_variable(monkeypatch):
    monkeypatch.setenv("RECS_LANG", "en,es")
    assert cli.parse_args(["update"]).lang == ["en", "es"]
    assert cli.parse_args(["update", "--lang", "pt"]).lang == ["pt"]


# -- KEY=VALUE passthrough: any value, never echoed --------------------------------------------


def test_kafka_config_variable_carries_any_value(monkeypatch):
    from core.options import parse_kafka_config

    forms = {
        '{"sasl.password": "a,b=c", "security.protocol": "SASL_SSL", "linger.ms": 5}':
            {"sasl.password": "a,b=c", "security.protocol": "SASL_SSL", "linger.ms": "5"},
        "sasl.password=a,b=c\nsecurity.protocol=SASL_SSL\n":
            {"sasl.password": "a,b=c", "security.protocol": "SASL_SSL"},
        "security.protocol=SASL_SSL,sasl.password=a,b":  # the old form keeps working
            {"security.protocol": "SASL_SSL", "sasl.password": "a,b"},
    }
    for text, expected in forms.items():
        monkeypatch.setenv("RECS_KAFKA_CONFIG", text)
        assert parse_kafka_config(cli.parse_args(["consume"]).kafka_config) == expected


def test_key_value_errors_never_quote_the_value():
    for bad in (PASSWORD, f"={PASSWORD}", f"bad key={PASSWORD}"):
        with pytest.raises(argparse.ArgumentTypeError) as info:
            o.key_value(bad)
        assert PASSWORD not in str(info.value)
    with pytest.raises(ValueError) as info:
        o.key_value_items('{"sasl.password": "' + PASSWORD + '" "x": 1}')
    assert PASSWORD not in str(info.value)


# -- passwords masked ---------------------------------------------------------------------------


def test_urls_and_registered_secrets_are_masked():
    assert mask_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert mask_url("rediss://user:p@ss@h:1/0 x") == "rediss://user:***@h:1/0 x"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"
    register_secret("kafka-secret-42")
    assert redact("auth with kafka-secret-42 failed") == "auth with *** failed"


def test_log_lines_never_carry_a_password(capsys):
    import logging

    from core.logs import setup_logging

    register_secret(PASSWORD)
    for fmt in ("text", "json"):
        setup_logging("INFO", fmt)
        logging.getLogger("t").warning("to redis://:%s@h/0", PASSWORD,
                                       extra={"fields": {"conf": f"sasl.password={PASSWORD}"}})
        try:
            raise RuntimeError(f"boom {PASSWORD}")
        except RuntimeError:
            logging.getLogger("t").exception("failed")
    err = capsys.readouterr().err
    assert "redis://:***@h/0" in err and "boom ***" in err
    assert PASSWORD not in err


def _recs(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recs.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def _check_one_line(proc: subprocess.CompletedProcess, command: str) -> str:
    out = proc.stdout + proc.stderr
    assert PASSWORD not in out, out
    return _one_line_error(proc.returncode, proc.stderr, command)


@pytest.fixture
def views_csv(tmp_path):
    path = tmp_path / "views.csv"
    path.write_text("user_id,resource_id,view_count\nu1,5,3\n")
    return str(path)


COMMANDS = [["similar", "5", "--lang", "en"], ["recommend", "u1", "--lang", "en"],
            ["backfill", "VIEWS", "--lang", "en"], ["train", "--lang", "en"], ["update"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: a[0])
def test_redis_down_is_one_masked_line(argv, views_csv, tmp_path):
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    argv = [views_csv if a == "VIEWS" else a for a in argv]
    extra = ["--model-dir", str(tmp_path)] if argv[0] == "train" else []
    line = _check_one_line(_recs(*argv, *extra, "--redis-url", url), argv[0])
    assert "cannot reach Redis" in line


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: a[0])
def test_wrong_redis_password_is_one_masked_line(argv, views_csv, redis_server, tmp_path):
    client = redis_server.client()
    client.config_set("requirepass", "the-right-one")
    client.close()
    url = f"redis://:{PASSWORD}@127.0.0.1:{redis_server.port}/0"
    argv = [views_csv if a == "VIEWS" else a for a in argv]
    extra = ["--model-dir", str(tmp_path)] if argv[0] == "train" else []
    line = _check_one_line(_recs(*argv, *extra, "--redis-url", url), argv[0])
    assert "Redis" in line


def test_no_password_in_a_log_of_the_running_consumer(tmp_path):
    """The consumer logs its Kafka trouble; neither the Redis nor the SASL password shows."""
    env = {"RECS_KAFKA_CONFIG": '{"sasl.password": "' + PASSWORD + '", '
           '"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN", '
           '"sasl.username": "recs"}'}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recs.cli", "consume", "--metrics-port", "0", "--log-level",
         "DEBUG", "--kafka-bootstrap-servers", f"127.0.0.1:{free_port()}",
         "--redis-url", f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "Connection refused" in out or "refused" in out.lower(), out
    assert PASSWORD not in out


def test_a_kafka_setting_error_is_one_line():
    proc = _recs("consume", "--metrics-port", "0", "--kafka-config", "no.such.setting=1",
                 "--kafka-config", f"sasl.password={PASSWORD}")
    line = _check_one_line(proc, "consume")
    assert "no.such.setting" in line


def test_bad_model_dir_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # No Redis at this URL: the model folder must be refused before it is even tried.
    code, err = _main(["train", "--model-dir", str(blocker / "models"), "--redis-url",
                       f"redis://127.0.0.1:{free_port()}/0"], capsys)
    assert "--model-dir" in _one_line_error(code, err, "train")
    code, err = _main(["train", "--views", "missing.csv", "--lang", "en", "--model-dir",
                       str(blocker)], capsys)
    assert "is not a folder" in _one_line_error(code, err, "train")


def test_a_rejected_kafka_value_is_not_quoted():
    from confluent_kafka import KafkaError, KafkaException

    exc = KafkaException(KafkaError(KafkaError._INVALID_ARG,
                                    f'Invalid value "{PASSWORD}" for configuration property "x"'))
    line = cli._service_error(exc, argparse.Namespace())
    assert PASSWORD not in line
    assert "(not shown) for configuration property" in line


def test_an_unexpected_traceback_is_masked_too():
    code = ("import sys; from recs import cli; sys.excepthook = cli._redacting_excepthook; "
            f"raise RuntimeError('lost redis://:{PASSWORD}@h:1/0')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert "redis://:***@h:1/0" in proc.stderr and PASSWORD not in proc.stderr


_KEYS = st.from_regex(r"[a-z][a-z0-9_.]{0,20}", fullmatch=True)


@given(st.dictionaries(_KEYS, st.text(max_size=30), max_size=5))
def test_any_value_survives_the_json_form(settings):
    import json

    items = o.key_value_items(json.dumps(settings))
    assert dict(item.partition("=")[::2] for item in map(o.key_value, items)) == settings


@given(st.dictionaries(_KEYS, st.text(max_size=30).filter(
    lambda v: v == v.strip() and "\n" not in v and "\r" not in v), min_size=2, max_size=5))
def test_any_one_line_value_survives_the_lines_form(settings):
    text = "\n".join(f"{k}={v}" for k, v in settings.items())
    items = o.key_value_items(text)
    assert dict(item.partition("=")[::2] for item in items) == settings
