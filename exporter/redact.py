"""Secrets out of log lines and error messages: URLs lose their userinfo and their query values.

:func:`redact_url` is for a URL we hold (an endpoint, a receiver); :func:`redact_text` for text we do
not control (a library's exception message, a traceback) that may embed such URLs.  Neither ever
raises: a URL too broken to parse is cut down to what is certainly not a secret.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

MASK = "***"

# A URL inside free text: scheme://, then everything up to whitespace, a quote, a backslash (JSON
# escapes) or a bracket (a final punctuation mark belongs to the sentence).
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://(?:[^\s'\"\\<>()\[\]{}]*[^\s'\"\\<>()\[\]{}.,:;])?")


def redact_url(url: str) -> str:
    """``url`` without userinfo, each query value replaced by ``***`` and without fragment; scheme,
    host, port and path are kept (``https://u:p@h:1/x?k=v&t=s#f`` -> ``https://h:1/x?k=***&t=***``).
    Without ``scheme://`` the text starts with the authority (``user:pass@host:port``, gRPC style)."""
    scheme, sep, rest = url.rpartition("://") if url.count("://") == 1 else ("", "", url)
    # Userinfo ends at the last "@" before the query, even where an unencoded "/" or "#" in a
    # password would make a parser end the authority earlier (and print the rest as the path).
    query_at = rest.find("?")
    at = rest.rfind("@", 0, query_at if query_at >= 0 else len(rest))
    rest = rest[at + 1 :]
    try:
        parts = urlsplit("//" + rest)
    except ValueError:  # e.g. an unbalanced "[" in the host: keep nothing of it
        return f"{scheme}{sep}{MASK}"
    query = "&".join(_mask_value(item) for item in parts.query.split("&")) if parts.query else ""
    return scheme + sep + SplitResult("", parts.netloc, parts.path, query, "").geturl().removeprefix("//")


def _mask_value(item: str) -> str:
    name, sep, _ = item.partition("=")
    return f"{name}={MASK}" if sep else MASK  # a bare item ("?secret") is all value


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted as by :func:`redact_url`."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)
