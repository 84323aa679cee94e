"""The ``recs`` command: one parser, handlers imported only when their command runs.

Every option also reads ``RECS_<OPTION>`` from the environment (``--redis-url`` reads
``RECS_REDIS_URL``). Which value wins is ONE rule, ``trainer.settings.resolve``: the flag,
then its variable, then (training commands) the tuned settings, then the default, which
lives in the library's settings dataclass (recs/cli_options.py). :func:`parse_args` keeps
each value's source in ``args.sources`` so the tuned layer can be added later. The commands
and their options are recs/cli_commands.py's. A service error that reaches ``main`` (Redis
down, a wrong password, a Kafka error) is one line with secrets masked, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence

from core import options as o
from core.errors import RecsError
from core.logs import setup_logging
from core.redact import mask_url, redact, register_settings, register_url
from recs.cli_commands import COMMANDS
from recs.cli_options import Default, common
from trainer.settings import SettingSources, resolve

ENV_PREFIX = "RECS_"
_TRUE = {"1", "true", "yes", "on"}
_QUOTED_VALUE = re.compile(r'value \\?"[^"\\]*\\?"')


def build_parser(environ: Mapping[str, str] = os.environ) -> argparse.ArgumentParser:
    """Every command's parser. The ``RECS_*`` variables :func:`parse_args` reads are those of
    ``environ`` as it is now (the environment the command runs in)."""
    parser = argparse.ArgumentParser(prog="recs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = argparse.ArgumentParser(add_help=False)
    common(shared)
    for name, handler, help_, add_options in COMMANDS:
        p = sub.add_parser(name, parents=[shared], help=help_, description=help_)
        p.set_defaults(handler=handler)
        add_options(p)
    parser.environ = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    return parser


def subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.values()


def _options(command: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    return (a for a in command._actions if a.option_strings and a.dest not in ("help",
                                                                               "handler"))


def parse_args(argv: Sequence[str] | None = None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """``argv`` as the command sees it: every option's value resolved from its flag, its
    ``RECS_*`` variable and its default, each checked by the option's type; the sources in
    ``args.sources``. A bad value is argparse's one-line error, exit 2."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    command = next(c for c in subparsers(parser) if c.prog.split()[-1] == args.command)
    flags = _given(argv, parser.environ)
    env, defaults = {}, {}
    for action in _options(command):
        try:
            defaults[action.dest] = _default(action)
            text = parser.environ.get(ENV_PREFIX + action.dest.upper())
            if text is not None and action.dest not in flags:
                env[action.dest] = _from_env(command, action, text)
        except argparse.ArgumentTypeError as exc:
            command.error(f"argument {'/'.join(action.option_strings)}: {exc}")
        except argparse.ArgumentError as exc:
            command.error(str(exc))
    for dest, value in resolve(flags, env, {}, defaults).items():
        setattr(args, dest, value)
    args.sources = SettingSources(flags=flags, env=env, defaults=defaults)
    return args


def _given(argv: Sequence[str] | None, environ: Mapping[str, str]) -> dict:
    """The options given on the command line, typed: ``argv`` parsed again with every
    default suppressed, so only given options appear (a flag given with the default's value
    is still given)."""
    parser = build_parser(environ)
    for p in [parser, *subparsers(parser)]:
        for action in p._actions:
            if action.option_strings:
                action.default = argparse.SUPPRESS
    given = vars(parser.parse_args(argv))
    return {k: v for k, v in given.items() if k not in ("command", "handler")}


def _default(action: argparse.Action):
    """The option's default, checked by its type like a flag (argparse's own rule for text
    defaults)."""
    value = action.default
    if isinstance(value, Default):
        value = value.value()
        return action.type(str(value)) if action.type is not None else value
    if isinstance(value, str) and action.type is not None:
        return action.type(value)
    return value


def _from_env(command: argparse.ArgumentParser, action: argparse.Action, text: str):
    """A ``RECS_*`` variable's value for ``action``, checked like its flag."""
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return text.strip().lower() in _TRUE  # the value of the option's dest
    if isinstance(action, argparse._AppendAction):
        return _env_items(action, text)
    value = command._get_value(action, text)
    command._check_value(action, value)
    return value


def _env_items(action: argparse.Action, text: str) -> list:
    """The checked items of a repeatable option's ``RECS_*`` variable."""
    name = ENV_PREFIX + action.dest.upper()
    try:
        if action.type is o.key_value:
            items = o.key_value_items(text)
        else:
            items = [v.strip() for v in text.split(",") if v.strip()]
        return [action.type(item) if action.type else item for item in items]
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise argparse.ArgumentError(None, f"{name}: {exc}") from None


def _service_error(exc: Exception, args: argparse.Namespace) -> str | None:
    """One line for an error of a server we talk to (Redis, Kafka), or None for a bug."""
    import redis

    where = mask_url(getattr(args, "redis_url", "") or "")
    if isinstance(exc, redis.AuthenticationError):
        return f"Redis at {where} refused the credentials: {exc}"
    from store.connection import permission_denied

    if permission_denied(exc):
        return (f"the Redis user of {where} lacks a permission this command needs "
                f"(README: Redis ACL users): {exc}")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return f"cannot reach Redis at {where}: {exc}"
    if isinstance(exc, redis.RedisError):
        return f"Redis at {where} answered with an error: {exc}"
    kafka = sys.modules.get("confluent_kafka")
    if kafka is not None and isinstance(exc, kafka.KafkaException):
        # librdkafka quotes a rejected setting's value: it may be (part of) a password.
        return "Kafka: " + _QUOTED_VALUE.sub("value (not shown)", str(exc))
    return None


def _register_secrets(args: argparse.Namespace) -> None:
    """Tell ``core.redact`` the secrets this run was given, before anything can log them."""
    register_url(getattr(args, "redis_url", None))
    for value in vars(args).values():
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            register_settings(v.partition("=")[::2] for v in value if "=" in v)


def _redacting_excepthook(kind, exc, tb) -> None:
    import traceback

    sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse's one line (or --help): a code, like any other
        return exc.code if isinstance(exc.code, int) else 2
    _register_secrets(args)
    sys.excepthook = _redacting_excepthook
    setup_logging(args.log_level, args.log_format)
    refusal = _cluster_refusal(args)
    if refusal:
        print(redact(f"recs {args.command}: error: {refusal}"), file=sys.stderr)
        return 2
    module_name, func_name = args.handler.split(":")
    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        code = int(handler(args) or 0)
        sys.stdout.flush()  # here, not at exit: a reader that went away is handled below
        return code
    except BrokenPipeError:
        # `recs similar --json | head -c 400`: the reader has what it wanted.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except RecsError as exc:
        print(redact(f"recs {args.command}: error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        line = _service_error(exc, args)
        if line is None:
            raise
        print(redact(f"recs {args.command}: error: {line}"), file=sys.stderr)
        return 2


def _cluster_refusal(args: argparse.Namespace) -> str | None:
    """The one line for a ``redis+cluster://`` URL given to a command that does not run on a
    cluster yet (core/redis_urls.py ``CLUSTER_COMMANDS``)."""
    from core.redis_urls import CLUSTER_COMMANDS, CLUSTER_SCHEME, cluster_unsupported

    url = str(getattr(args, "redis_url", "") or "")
    if url.lower().startswith(CLUSTER_SCHEME) and args.command not in CLUSTER_COMMANDS:
        return cluster_unsupported(args.command)
    return None


if __name__ == "__main__":
    sys.exit(main())
