"""REST sources: JSON pages over HTTP(S) with httpx.

Pagination by page number, by cursor (a dotted path in the page names the next cursor) or by the
``Link: <...>; rel="next"`` header. A request that answers 429 or 5xx, times out or fails to connect
is retried up to ``max_retries`` times with exponential backoff (``backoff``, doubling, capped at
60 s), waiting what ``Retry-After`` asks when the server sends it (capped at 300 s). Other 4xx
answers fail at once. The auth header is built from an environment variable and never logged; it
is sent only to the host of the source URL (not to another host a link header points to). A key in
the URL itself (``?api_key=``, ``?token=``, a signed URL) is sent as given but recorded, logged and
quoted in errors only through :func:`skiff.redact.redact_url`.

The client takes an injectable httpx transport, so tests can serve pages without a network.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from components.ingest.files import find_records, records_to_table
from skiff.errors import InputError, SourceError
from skiff.manifest import RestSourceEntry
from skiff.redact import redact_logger, redact_text, redact_url
from skiff.sources import SourceBatch, StatelessSource
from skiff.spec import RestSource

__all__ = ["RestReader", "RETRY_STATUS"]

log = logging.getLogger("skiff.ingest")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 300.0


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _dig(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


class RestReader(StatelessSource):
    """Reads a :class:`RestSource` page by page (a :class:`~skiff.sources.SourceReader`)."""

    kind: ClassVar[str] = "rest"
    fingerprint_before_read: ClassVar[bool] = False  # a hash of the pages, known once they are read

    def __init__(self, source: RestSource, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.source = source
        self.label = redact_url(source.url)
        self._transport = transport
        self._sleep = sleep
        self.pages = 0
        self.rows = 0
        self.truncated = False
        self._hash = hashlib.sha256()
        self._auth: dict[str, str] = {}
        if source.auth is not None:
            secret = os.environ.get(source.auth.env)
            if not secret:
                raise SourceError(f"{self.label}: environment variable {source.auth.env} (the auth header "
                                  "value) is not set", source=self.label)
            value = f"{source.auth.scheme} {secret}" if source.auth.scheme else secret
            self._auth = {source.auth.header: value}
        self._host = urlsplit(source.url).netloc
        redact_logger("httpx")  # it logs each request's URL, a key in the query included

    def _get(self, client: httpx.Client, url: str, params: dict[str, Any] | None, page: int) -> httpx.Response:
        src = self.source
        headers = self._auth if urlsplit(url).netloc == self._host else {}
        shown = redact_url(url)
        attempt = 0
        while True:
            problem: str
            wait: float | None = None
            try:
                resp = client.get(url, params=params, headers=headers)
            except httpx.TimeoutException:
                problem = f"timed out after {src.timeout:g} s"
            except httpx.TransportError as e:
                problem = f"unreachable ({type(e).__name__}: {redact_text(str(e))})"
            else:
                if resp.status_code < 400:
                    return resp
                problem = f"HTTP {resp.status_code}"
                if resp.status_code not in RETRY_STATUS:
                    raise SourceError(f"{shown} (page {page}): {problem}: {redact_text(resp.text[:200])!r}",
                                      source=self.label, page=page, status=resp.status_code)
                wait = _retry_after(resp)
            if attempt >= src.max_retries:
                raise SourceError(f"{shown} (page {page}): {problem}, gave up after {attempt + 1} attempts",
                                  source=self.label, page=page)
            delay = min(src.backoff * (2**attempt), MAX_BACKOFF_S)
            if wait is not None:
                delay = min(wait, MAX_RETRY_AFTER_S)
            log.warning("%s (page %d): %s; retry %d/%d in %.2f s", shown, page, problem, attempt + 1,
                        src.max_retries, delay)
            self._sleep(delay)
            attempt += 1

    def batches(self) -> Iterator[SourceBatch]:
        src = self.source
        pg = src.pagination
        # httpx replaces a URL's query with ``params``: carry the URL's own parameters (an API key) along
        first = httpx.URL(src.url)
        params: dict[str, Any] = {**dict(first.params.multi_items()), **src.params}
        if pg.size_param and pg.size:
            params[pg.size_param] = pg.size
        url: str | None = str(first.copy_with(query=None))
        page_no = pg.start_page
        cursor = None
        with httpx.Client(transport=self._transport, timeout=src.timeout, follow_redirects=True) as client:
            while url is not None:
                if self.pages >= pg.max_pages:
                    self.truncated = True
                    log.warning("%s: stopped after max_pages=%d pages", self.label, pg.max_pages)
                    break
                query: dict[str, Any] = dict(params)
                if pg.type == "page":
                    query[pg.page_param] = page_no
                elif pg.type == "cursor" and cursor is not None:
                    query[pg.cursor_param] = cursor
                # the next link carries its own query
                req_params = None if pg.type == "link" and self.pages > 0 else query
                resp = self._get(client, url, req_params, self.pages + 1)
                self.pages += 1
                page = self.pages
                where = f"{redact_url(str(resp.url))} (page {page})"
                self._hash.update(resp.content)
                try:
                    doc = resp.json()
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise SourceError(f"{where}: not JSON: {e}", source=self.label, page=page) from e
                try:
                    records = find_records(doc, src.records_path, where)
                except InputError as e:
                    raise SourceError(e.message, source=self.label, page=page) from e
                if records:
                    table = records_to_table(records)
                    yield SourceBatch(table=table, source=self.label, row_offset=0, page=page)
                    self.rows += table.num_rows
                # where is the next page?
                if pg.type == "none":
                    url = None
                elif pg.type == "page":
                    if not records or (pg.size and len(records) < pg.size):
                        url = None
                    page_no += 1
                elif pg.type == "cursor":
                    cursor = _dig(doc, pg.cursor_path) if isinstance(doc, dict) else None
                    if cursor in (None, "") or not records:
                        url = None
                else:  # link
                    nxt = resp.links.get("next", {}).get("url")
                    url = str(resp.url.join(nxt)) if nxt else None

    def fingerprint(self) -> dict[str, Any]:
        return {"type": "rest", "url": self.label, "sha256": self._hash.hexdigest()}

    def describe(self) -> RestSourceEntry:
        d: RestSourceEntry = {"type": "rest", "url": self.label, "pages": self.pages, "rows": self.rows,
                              "sha256": self._hash.hexdigest()}
        if self.truncated:
            d["truncated_at_max_pages"] = True
        return d
