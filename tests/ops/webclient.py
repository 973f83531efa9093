"""A raw HTTP client for the dashboard tests: requests written byte for byte (so a test can send
what a browser never would), responses read under a timeout, and server-sent events parsed."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LIMIT = 30.0


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw(
    method: str,
    path: str,
    port: int,
    *,
    host: str | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    """One request as bytes; ``host`` defaults to the dashboard's own name."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
    length = headers.get("content-length")
    body = await reader.readexactly(int(length)) if length is not None else await reader.read()
    return Response(status, headers, body)


async def exchange(port: int, data: bytes) -> Response:
    """Send ``data`` on a new connection and read one response."""
    async with asyncio.timeout(LIMIT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(data)
            await writer.drain()
            return await read_response(reader)
        finally:
            writer.close()
            await writer.wait_closed()


async def request(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    host: str | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> Response:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    return await exchange(port, raw(method, path, port, host=host, headers=all_headers, body=body))


def action_headers(port: int, token: str) -> dict[str, str]:
    """What the dashboard's own page sends with an action."""
    return {
        "Authorization": f"Bearer {token}",
        "Origin": f"http://127.0.0.1:{port}",
        "Sec-Fetch-Site": "same-origin",
        "Content-Type": "application/json",
    }


class EventStream:
    """The page's event stream, read event by event."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, token: str) -> EventStream:
        async with asyncio.timeout(LIMIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw("GET", f"/api/events?token={token}", port))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"content-type: text/event-stream" in head.lower()
        return cls(reader, writer)

    async def next(self) -> tuple[str, Any]:
        """The next event (comments and ``retry`` skipped): its name and decoded data."""
        name, data = "message", None
        while True:
            line = (await self.reader.readline()).decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                return name, data

    async def until(self, name: str, predicate: Any = None) -> Any:
        """Read events until one called ``name`` whose data passes ``predicate``."""
        async with asyncio.timeout(LIMIT):
            while True:
                event, data = await self.next()
                if event == name and (predicate is None or predicate(data)):
                    return data

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def get(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    """A blocking GET (for tests that drive a subprocess); the status and the JSON body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=LIMIT)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body.startswith(b"{") else body
    finally:
        connection.close()


class BlockingEventStream:
    """The page's event stream, read event by event without an event loop (for tests that
    drive subprocesses)."""

    def __init__(self, port: int, token: str) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=LIMIT)
        self._connection.request("GET", f"/api/events?token={token}")
        self._response = self._connection.getresponse()
        assert self._response.status == 200, self._response.status
        assert self._response.getheader("Content-Type", "").startswith("text/event-stream")

    def next(self) -> tuple[str, Any]:
        name, data = "message", None
        while True:
            line = self._response.fp.readline().decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                return name, data

    def until(self, name: str, predicate: Any = None) -> Any:
        """Read events until one called ``name`` whose data passes ``predicate``, for at most
        ``LIMIT`` seconds."""
        deadline = time.monotonic() + LIMIT
        while True:
            assert time.monotonic() < deadline, f"no {name} event as expected within {LIMIT} s"
            event, data = self.next()
            if event == name and (predicate is None or predicate(data)):
                return data

    def close(self) -> None:
        self._connection.close()


def post_action(port: int, token: str, op: str, component: str) -> Any:
    """What the page's buttons send, blocking; the decoded answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=LIMIT)
    try:
        body = json.dumps({"op": op, "component": component})
        connection.request("POST", "/api/actions", body=body, headers=action_headers(port, token))
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()
