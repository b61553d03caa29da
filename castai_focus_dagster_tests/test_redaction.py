"""Redaction: a secret is removed from a text in every rendering an error message can give it."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from castai_focus_dagster.redaction import REDACTED, Redactor, redact

KEY = "castai-key-LEAKCANARY-7f3a9c1e5b2d"


def renderings(secret: str) -> dict[str, str]:
    """How messages show a value: each rendering built independently of the redaction code."""
    return {
        "literal": secret,
        "quoted": f"'{secret}'",
        "repr": repr(secret),
        "bytes repr": repr(secret.encode()),
        "json": json.dumps(secret),
        "json in json": json.dumps(json.dumps(secret)),
        "repr of repr": repr(repr(secret)),
        "url-encoded": quote(secret, safe=""),
        "form-encoded": quote_plus(secret),
    }


@pytest.mark.parametrize("suffix", ["", "\n", "\r\n", " ", "\t", "\x00", "\x1b[0m"])
def test_every_rendering_of_the_key_is_redacted(suffix: str) -> None:
    secret = KEY + suffix
    for how, shown in renderings(secret).items():
        text = redact(f"Cast AI said: {shown} (end)", [secret])
        assert KEY not in text and KEY[: len(KEY) // 2] not in text, how
        assert REDACTED in text and text.startswith("Cast AI said: ") and text.endswith(" (end)"), how


def test_the_message_h11_gives_an_illegal_header_is_redacted() -> None:
    """The message that leaked: h11 quotes the header value as a bytes repr."""
    secret = KEY + "\n"
    with pytest.raises(h11.LocalProtocolError) as info:
        h11.Request(method="GET", target="/", headers=[("Host", "x"), ("X-API-Key", secret)])
    message = str(info.value)
    assert KEY in message  # the leak is real: h11 shows the key
    assert KEY not in redact(message, [SecretStr(secret)])


def test_a_control_character_inside_the_key_leaves_no_readable_part() -> None:
    secret = "castai-key-LEAKCANARY\x07-7f3a9c1e5b2d"
    for shown in renderings(secret).values():
        text = redact(shown, [secret])
        assert "LEAKCANARY" not in text and "7f3a9c1e5b2d" not in text


def test_text_without_the_secret_is_unchanged() -> None:
    text = "Cast AI workload-costs cluster 79cb: HTTP 503 Service Unavailable (gave up after 3 attempt(s))"
    assert redact(text, [KEY, ""]) == text
    assert Redactor([]).__call__(text) == text


@given(
    secret=st.text(
        st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Cc", "Zs")), min_size=12, max_size=60
    ).filter(lambda s: len(s.strip()) >= 12),
    before=st.text(st.characters(codec="ascii"), max_size=20),
    after=st.text(st.characters(codec="ascii"), max_size=20),
)
def test_no_rendering_of_any_secret_survives(secret: str, before: str, after: str) -> None:
    redactor = Redactor([secret])
    for how, shown in renderings(secret).items():
        text = redactor(before + shown + after)
        assert secret not in text and secret.strip() not in text, how
        assert shown not in text, how
