"""Redaction of credentials in URLs: the one function every manifest, state file, log and error uses.

A URL may carry a secret in its userinfo (``postgresql://user:pw@host/db``) or in its query string
(``?password=``, ``?sslpassword=``, ``?token=``, an Azure SAS ``?sv=...&sig=...``). :func:`redact_url`
replaces each such value with ``***`` and leaves the rest (scheme, user, host, path, harmless
parameters) readable, so a record still says where data came from. :func:`url_secrets` names what it
found, for the places that must refuse a URL holding a secret (a spec file, a command line).

The rule is deliberately broad: any parameter whose name is, ends with or contains one of the
credential words below (case-insensitive, ``-`` and ``_`` ignored) counts as a secret. Redacting a
harmless parameter costs a little readability; missing a secret costs the secret.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

__all__ = ["redact_url", "redact_text", "url_secrets", "is_secret_param", "RedactingFilter", "redact_logger",
           "redact_log_output", "MASK"]

MASK = "***"

#: Parameter names that are a credential by themselves (normalised: lower case, no ``-``/``_``).
_EXACT = frozenset({
    "password", "passwd", "pwd", "pass", "sslpassword", "sslkey", "token", "accesstoken", "refreshtoken",
    "idtoken", "authtoken", "sessiontoken", "securitytoken", "key", "apikey", "accesskey", "secretkey",
    "accountkey", "privatekey", "secret", "clientsecret", "sig", "signature", "auth", "authorization",
    "credential", "credentials", "xamzsignature", "xamzcredential", "xamzsecuritytoken", "xgoogsignature",
    "xgoogcredential", "sastoken", "sas", "code",
})
#: Words that make a parameter a credential wherever they appear in its name (``db_password``, ``mytoken``).
_PARTS = ("password", "passwd", "secret", "token", "apikey", "signature", "credential", "privatekey",
          "accesskey", "accountkey")

# a URL inside free text ends at white space or a quote
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
# a query parameter in free text: after ? & or ; up to the next separator, white space or quote
_QUERY_PAIR = re.compile(r"([?&;])([^=&;?#\s'\"<>]+)=([^&;#\s'\"<>]*)")


def _norm(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(".", "")


def is_secret_param(name: str) -> bool:
    """Whether a query parameter name (any case) carries a credential."""
    n = _norm(name)
    return n in _EXACT or any(p in n for p in _PARTS)


def _split_query(query: str) -> list[tuple[str, str, bool]]:
    """(name, raw pair, has value) per ``&``/``;``-separated pair, keeping the raw text."""
    out = []
    for raw in re.split(r"[&;]", query):
        if not raw:
            continue
        out.append((unquote_plus(raw.split("=", 1)[0]), raw, "=" in raw))
    return out


def url_secrets(url: str) -> list[str]:
    """What in ``url`` is a credential: ``"password"`` for a userinfo password, and each secret
    query parameter's name. Empty when the URL holds none."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        return ["unparseable URL"] if ("@" in url or "=" in url) else []
    netloc = parts.netloc
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        if ":" in userinfo:
            found.append("password")
    for section in (parts.query, parts.fragment):
        for name, _raw, has_value in _split_query(section):
            if has_value and is_secret_param(name):
                found.append(name)
    return found


def redact_url(url: str) -> str:
    """``url`` with every credential replaced by ``***`` (userinfo password, secret query values).

    A URL that does not parse keeps only its scheme, user and host: nothing after ``?`` survives."""
    if not isinstance(url, str) or not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _redact_rough(url)
    if not url_secrets(url):
        return url  # as written (urlunsplit would normalise it, e.g. drop the '//' of memory:///x)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{host}"
    query = parts.query
    if query:
        pieces = []
        for name, raw, has_value in _split_query(query):
            if has_value and is_secret_param(name):
                pieces.append(f"{raw.split('=', 1)[0]}={quote(MASK, safe='*')}")
            else:
                pieces.append(raw)
        query = "&".join(pieces)
    fragment = parts.fragment
    if fragment and "=" in fragment:  # OAuth implicit flows put access_token in the fragment
        fragment = "&".join(
            f"{raw.split('=', 1)[0]}={MASK}" if has_value and is_secret_param(name) else raw
            for name, raw, has_value in _split_query(fragment)
        )
    out = f"{parts.scheme}://{netloc}{parts.path}" if "://" in url else urlunsplit(
        (parts.scheme, netloc, parts.path, "", ""))
    return out + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else "")


def _redact_rough(url: str) -> str:
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    if "@" in rest:
        userinfo, host = rest.rsplit("@", 1)
        rest = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}" if ":" in userinfo else rest
    return f"{head}://{rest.split('?', 1)[0]}" + ("?" + MASK if "?" in rest else "")


def redact_text(text: str) -> str:
    """``text`` (an error message, a log line) with every URL in it redacted."""
    if not isinstance(text, str):
        return text
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    if "=" in text:  # a request path's query string in an access log line has no scheme
        text = _QUERY_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}" if is_secret_param(unquote_plus(m.group(2)))
                               and m.group(3) != MASK else m.group(0), text)
    return text


class RedactingFilter(logging.Filter):
    """Redacts URLs in the records of a logger we do not own (httpx logs every request URL at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact_text(a) if isinstance(a, str) else
                                redact_text(str(a)) if "://" in str(a) else a for a in record.args)
        record.msg = redact_text(record.msg) if isinstance(record.msg, str) else record.msg
        return True


def redact_logger(name: str) -> None:
    """Install :class:`RedactingFilter` on a logger once."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())


def redact_log_output() -> None:
    """Redact every record skiff's process writes: a filter on each handler of the root logger (a logger's
    own filter misses what its children propagate) and on uvicorn's loggers, whose handlers are their own."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    for name in ("uvicorn.error", "uvicorn.access", "httpx"):
        redact_logger(name)

