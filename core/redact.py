"""Keeping passwords out of every line the project prints or logs.

Two rules, applied to each log line (core/logs.py), to the CLI's one-line errors and to
an unexpected traceback (recs/cli.py):

- a URL's password is shown as ``***`` (``redis://:***@host:6379/0``), whatever URL it is;
- a value registered with ``register_secret`` (a Redis password, a Kafka ``sasl.password``,
  any setting whose name says it is secret) is replaced by ``***`` wherever it appears,
  since a library may quote it outside a URL (librdkafka echoes bad config values).

Invariant: ``redact`` never returns a registered secret or a URL password; it is cheap
enough for every log line (one regex pass, then one ``in`` test per registered secret).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"
# scheme://[user]:password@host : the password runs to the last '@' of the authority (as
# urllib splits it), so an unencoded '@' in a password is masked whole too.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)([^\s/]*)@")
# Setting names (librdkafka's, Spark's, ...) whose values are secrets.
_SECRET_NAME = re.compile(r"password|secret|token|credential|jaas|\.pem$|private", re.I)
_secrets: set[str] = set()
_MIN_SECRET = 3  # shorter values would mask ordinary words and numbers


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", url)


def register_secret(value: str | None) -> None:
    """From now on ``redact`` masks ``value`` wherever it appears (process-wide)."""
    if value and len(value) >= _MIN_SECRET:
        _secrets.add(value)


def register_url(url: str | None) -> None:
    """Register the password a URL carries (raw and percent-decoded)."""
    if not url:
        return
    for match in _URL_PASSWORD.finditer(url):
        register_secret(match.group(2))
        register_secret(unquote(match.group(2)))


def secret_setting(name: str) -> bool:
    """Whether a KEY=VALUE setting named ``name`` holds a secret (``sasl.password`` ...)."""
    return bool(_SECRET_NAME.search(name))


def register_settings(pairs) -> None:
    """Register the values of the secret settings among ``(key, value)`` pairs."""
    for key, value in pairs:
        if secret_setting(key):
            register_secret(value)


def redact(text: str) -> str:
    """``text`` with URL passwords and every registered secret replaced by ``***``."""
    if "://" in text:
        text = mask_url(text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
