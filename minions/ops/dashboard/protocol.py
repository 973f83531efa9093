"""Just enough HTTP/1.1 for the dashboard: read one request under bounds, write one response.

What a client sends is bounded before it is looked at (:class:`Limits`): the request line and
headers together (16 KiB, 48 headers), the time to send them (10 s, which also ends idle
keep-alive connections), and a body (16 KiB, sent within 10 s, with a ``Content-Length``:
chunked bodies are refused). Anything outside
the grammar is a :class:`HttpError` carrying the status to answer; the connection is then
closed. A header that decides a check (``Host``, ``Authorization``, ``Origin``,
``Content-Length``...) may appear once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

__all__ = ["HttpError", "Limits", "Request", "read_request", "response_head"]

_MAX_QUERY_FIELDS = 4
_SINGLE = frozenset(
    {
        "host",
        "authorization",
        "origin",
        "content-length",
        "content-type",
        "transfer-encoding",
        "sec-fetch-site",
    }
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_METHOD = re.compile(r"^[A-Z]{1,16}$")


@dataclass(frozen=True)
class Limits:
    """What a client may send: see the module docstring."""

    head_bytes: int = 16 * 1024
    headers: int = 48
    body_bytes: int = 16 * 1024
    #: Seconds to send a whole request head, from the moment the server waits for it.
    head_timeout: float = 10.0
    body_timeout: float = 10.0


class HttpError(Exception):
    """A request the server will not serve; ``status`` is the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    """One parsed request; header names are lower case."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    keep_alive: bool

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


async def read_request(reader: asyncio.StreamReader, limits: Limits) -> Request | None:
    """The next request on the connection, or ``None`` when the client has closed it (or
    stayed idle past the head timeout). The reader's limit must be ``limits.head_bytes``."""
    try:
        async with asyncio.timeout(limits.head_timeout):
            head = await reader.readuntil(b"\r\n\r\n")
    except TimeoutError:
        return None
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise HttpError(400, "the request ended before its headers did") from None
        return None
    except asyncio.LimitOverrunError:
        raise HttpError(431, f"request headers are limited to {limits.head_bytes} bytes") from None
    method, target, version, headers = _parse_head(head, limits)
    length = _content_length(headers, limits)
    body = b""
    if length:
        try:
            async with asyncio.timeout(limits.body_timeout):
                body = await reader.readexactly(length)
        except (TimeoutError, asyncio.IncompleteReadError):
            raise HttpError(408, "the request body did not arrive in time") from None
    url = urlsplit(target)
    try:
        pairs = parse_qsl(
            url.query, strict_parsing=bool(url.query), max_num_fields=_MAX_QUERY_FIELDS
        )
    except ValueError:
        raise HttpError(400, "malformed query string") from None
    query: dict[str, str] = {}
    for key, value in pairs:
        if key in query:
            raise HttpError(400, f"query parameter {key!r} given twice")
        query[key] = value
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return Request(method, url.path, query, headers, body, keep_alive)


def _parse_head(head: bytes, limits: Limits) -> tuple[str, str, str, dict[str, str]]:
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _METHOD.match(parts[0]) or not parts[1].startswith("/"):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, "only HTTP/1.1 and HTTP/1.0 are served")
    if len(lines) - 1 > limits.headers:
        raise HttpError(431, f"at most {limits.headers} request headers are accepted")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name):
            raise HttpError(400, "malformed header line")
        key = name.lower()
        if key in headers and key in _SINGLE:
            raise HttpError(400, f"the {name} header may appear once")
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return method, target, version, headers


def _content_length(headers: Mapping[str, str], limits: Limits) -> int:
    if "transfer-encoding" in headers:
        raise HttpError(501, "chunked request bodies are not accepted; send a Content-Length")
    text = headers.get("content-length", "0")
    if not text.isdigit() or len(text) > 9:
        raise HttpError(400, "malformed Content-Length")
    length = int(text)
    if length > limits.body_bytes:
        raise HttpError(413, f"request bodies are limited to {limits.body_bytes} bytes")
    return length


def response_head(status: int, headers: Mapping[str, str]) -> bytes:
    """The status line and headers of a response, ready to write."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
