"""One redaction for every text that may quote a secret (error messages, server answers, log lines).

Why more than `text.replace(secret, ...)`: an error rarely shows a secret literally. h11 reports an
illegal header as `b'key\\n'` (bytes repr), Python's repr escapes control characters, JSON escapes
them differently, a URL carries them percent-encoded, and an error nested in another error's repr is
escaped twice. Every rendering of the secret, and of the secret without its surrounding whitespace, is
replaced; so is every long run of URL-safe characters inside the secret (those runs survive any
escaping unchanged, so a doubly escaped or partly quoted copy loses its readable parts too).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from pydantic import SecretStr

REDACTED = "[redacted]"
# Runs of characters no escaping changes (letters, digits, -._~); shorter runs would also match
# ordinary words of a message, and are not enough to reconstruct a key.
_SAFE_RUN = re.compile(r"[A-Za-z0-9._~-]{8,}")


def _escapes(text: str) -> set[str]:
    """`text` as a message may show it: literal, repr-escaped (str and bytes), JSON, URL-encoded."""
    escaped = text.encode("unicode_escape").decode("ascii")
    forms = {
        text,
        repr(text)[1:-1],
        ascii(text)[1:-1],
        escaped,
        repr(text + "'\"")[1:-4],  # repr with single quotes escaped (as a repr nested in one shows it)
        escaped.replace("'", "\\'"),
        escaped.replace('"', '\\"'),
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        quote(text, safe=""),
        quote(text),
        quote_plus(text),
    }
    with contextlib.suppress(UnicodeEncodeError):  # lone surrogates: no bytes form exists
        forms.add(repr(text.encode("utf-8"))[2:-1])
    return forms


def secret_forms(secret: str) -> list[str]:
    """Every substring a text must not keep, longest first (so a longer form is replaced whole)."""
    if not secret:
        return []
    forms: set[str] = set()
    for variant in {secret, secret.strip()}:
        if variant:
            for form in _escapes(variant):
                forms |= {form, *_escapes(form)}  # escaped once more: an error inside another's repr
    forms |= set(_SAFE_RUN.findall(secret))
    return sorted((f for f in forms if f), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str | SecretStr]) -> str:
    """`text` with every rendering of every secret replaced by `[redacted]`."""
    return Redactor(secrets)(text)


class Redactor:
    """`redact` bound to a fixed set of secrets, with their forms computed once."""

    def __init__(self, secrets: Iterable[str | SecretStr]):
        values = [s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets]
        self._forms = sorted({f for v in values for f in secret_forms(v)}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._forms)} forms)"
