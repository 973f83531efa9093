"""The dashboard's HTTP server, on ``127.0.0.1`` only.

A few routes, written out by hand on asyncio (:mod:`.protocol`) rather than a web framework:
the dashboard needs five of them, and a server inside the supervised process must neither
install signal handlers of its own nor outlive a stop by more than a few milliseconds.

==================  ======  ==================================================================
path                method  what
==================  ======  ==================================================================
``/``, ``/static``  GET     the page and its files (:mod:`.assets`); no token needed
``/api/events``     GET     the page's live feed: server-sent events, first a ``snapshot``,
                            then ``tick``, ``lifecycle`` and ``reachability`` as they happen
``/api/state``      GET     the snapshot alone, as JSON
``/api/actions``    POST    ``{"op": "restart"|"stop"|"redeploy", "component": NAME}``
==================  ======  ==================================================================

Every request passes the Host check, every ``/api`` request the token check, and an action the
origin check too (:mod:`.access`). Connections are capped (:data:`MAX_CONNECTIONS`), and so are
event streams (:data:`MAX_STREAMS`; a browser allows six connections per site, one stream per
open page). A stream carries a comment every :data:`PING_INTERVAL` seconds when nothing else
happens, and a client that does not take what is written within :data:`WRITE_TIMEOUT` seconds
is cut off.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog

from ..client import ControlError, RequestFailed
from .access import SECURITY_HEADERS, Access
from .assets import load_assets
from .monitor import ACTIONS, Monitor, Subscription, frame
from .protocol import HttpError, Limits, Request, read_request, response_head

__all__ = ["MAX_CONNECTIONS", "MAX_STREAMS", "PING_INTERVAL", "WRITE_TIMEOUT", "DashboardServer"]

log = structlog.get_logger("minions")

MAX_CONNECTIONS = 32
MAX_STREAMS = 8
PING_INTERVAL = 15.0
WRITE_TIMEOUT = 10.0
#: How soon a page's browser reconnects its event stream after losing it, in milliseconds.
RETRY_MS = 2000
_CLOSE_TIMEOUT = 1.0
_MAX_NAME = 200
#: The HTTP status of each kind of control error (``minions.ops.control``).
_STATUS_OF_KIND = {"bad_request": 400, "unknown_component": 404, "refused": 409}


class _Gone(Exception):
    """The client stopped taking what is written to it."""


class DashboardServer:
    """Serves one :class:`~.monitor.Monitor`'s dashboard; see the module docstring.

    ``port`` 0 picks a free port; :attr:`port` is the real one once :meth:`start` returned.
    ``limits`` bound what a client may send (:class:`~.protocol.Limits`).
    """

    def __init__(
        self, monitor: Monitor, access: Access, port: int = 0, *, limits: Limits | None = None
    ) -> None:
        self.access = access
        self.limits = limits or Limits()
        self._monitor = monitor
        self._requested_port = port
        self._assets = load_assets()
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._subscriptions: set[Subscription] = set()

    def __repr__(self) -> str:
        where = self.access.url if self._server is not None else "not serving"
        return f"<DashboardServer {where}>"

    @property
    def port(self) -> int:
        return self.access.port

    async def start(self) -> None:
        """Listen on ``127.0.0.1``; an :class:`OSError` if the port cannot be had."""
        self._server = await asyncio.start_server(
            self._connection, "127.0.0.1", self._requested_port, limit=self.limits.head_bytes
        )
        self.access.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and end every connection, streams included, at once."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Ended from the outside rather than cancelled: a cancelled connection task is logged
        # as an error by asyncio's stream server (Python 3.11).
        for subscription in list(self._subscriptions):
            subscription.put(None)
        for writer in self._connections.values():
            writer.transport.abort()
        if self._connections:
            _, pending = await asyncio.wait(list(self._connections), timeout=_CLOSE_TIMEOUT)
            for task in pending:
                task.cancel()  # only a connection stuck beyond reason
            await asyncio.gather(*pending, return_exceptions=True)
        await server.wait_closed()

    # -- connections ----------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or self._server is None or len(self._connections) >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._connections[task] = writer
        try:
            while True:
                try:
                    request = await read_request(reader, self.limits)
                except HttpError as exc:
                    await self._error(writer, exc.status, str(exc), keep_alive=False)
                    return
                if request is None or not await self._serve(request, writer):
                    return
        except (_Gone, ConnectionError):
            writer.transport.abort()
        except Exception as exc:  # a bug: say so in the log, drop this client, serve the others
            log.error(
                "dashboard.request_failed", reason=f"{type(exc).__name__}: {exc}", exc_info=exc
            )
            writer.transport.abort()
        finally:
            self._connections.pop(task, None)
            writer.close()
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await writer.wait_closed()
            except (TimeoutError, ConnectionError):
                writer.transport.abort()

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.drain()
        except TimeoutError:
            raise _Gone from None

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str,
        *,
        keep_alive: bool,
        headers: dict[str, str] | None = None,
    ) -> bool:
        head = {
            **SECURITY_HEADERS,
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            **(headers or {}),
        }
        if not keep_alive:
            head["Connection"] = "close"
        await self._write(writer, response_head(status, head) + body)
        return keep_alive

    async def _json(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        data: Any,
        *,
        keep_alive: bool,
        headers: dict[str, str] | None = None,
    ) -> bool:
        body = json.dumps(data, separators=(",", ":")).encode()
        return await self._send(
            writer, status, body, "application/json", keep_alive=keep_alive, headers=headers
        )

    async def _error(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        message: str,
        *,
        keep_alive: bool,
        kind: str = "http",
        headers: dict[str, str] | None = None,
    ) -> bool:
        error = {"ok": False, "error": {"kind": kind, "message": message}}
        return await self._json(writer, status, error, keep_alive=keep_alive, headers=headers)

    # -- routes ---------------------------------------------------------------------------------

    async def _serve(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the connection may carry another."""
        keep = request.keep_alive
        if not self.access.host_allowed(request.header("host")):
            return await self._error(
                writer,
                421,
                f"address this dashboard as 127.0.0.1:{self.port} or localhost:{self.port}",
                keep_alive=False,
            )
        path, method = request.path, request.method
        asset = self._assets.get(path)
        if asset is not None:
            if method != "GET":
                return await self._not_allowed(writer, "GET", keep)
            return await self._send(writer, 200, asset.body, asset.content_type, keep_alive=keep)
        routes = {"/api/events": "GET", "/api/state": "GET", "/api/actions": "POST"}
        if path not in routes:
            return await self._error(writer, 404, f"nothing at {path}", keep_alive=keep)
        if method != routes[path]:
            return await self._not_allowed(writer, routes[path], keep)
        query_token = request.query.get("token") if path == "/api/events" else None
        if not self.access.token_allowed(request.header("authorization"), query_token):
            return await self._error(
                writer,
                401,
                "this dashboard needs its access token: open the address printed by "
                "'minions dashboard' (or 'minions dashboard --url')",
                keep_alive=keep,
                kind="unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if path == "/api/events":
            await self._stream(writer)
            return False
        if path == "/api/state":
            return await self._json(writer, 200, self._monitor.snapshot(), keep_alive=keep)
        return await self._action(request, writer)

    async def _not_allowed(self, writer: asyncio.StreamWriter, allowed: str, keep: bool) -> bool:
        return await self._error(
            writer,
            405,
            f"use {allowed}",
            keep_alive=keep,
            headers={"Allow": allowed},
        )

    async def _action(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        keep = request.keep_alive
        if not self.access.origin_allowed(
            request.header("origin"), request.header("sec-fetch-site")
        ):
            return await self._error(
                writer, 403, "actions are taken from the dashboard's own page", keep_alive=keep
            )
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return await self._error(
                writer, 415, "send the action as application/json", keep_alive=keep
            )
        try:
            action = json.loads(request.body)
        except ValueError:
            action = None
        op = action.get("op") if isinstance(action, dict) else None
        component = action.get("component") if isinstance(action, dict) else None
        if (
            op not in ACTIONS
            or not isinstance(component, str)
            or not 0 < len(component) <= _MAX_NAME
        ):
            return await self._error(
                writer,
                400,
                f'send {{"op": one of {", ".join(ACTIONS)}, "component": its name}}',
                keep_alive=keep,
                kind="bad_request",
            )
        try:
            row = await self._monitor.act(op, component)
        except RequestFailed as exc:
            status = _STATUS_OF_KIND.get(exc.kind, 500)
            return await self._error(writer, status, str(exc), keep_alive=keep, kind=exc.kind)
        except ControlError as exc:
            return await self._error(writer, 503, str(exc), keep_alive=keep, kind="unreachable")
        except TimeoutError:
            return await self._error(
                writer,
                504,
                f"the system did not finish {op} {component} in time; see 'minions logs'",
                keep_alive=keep,
                kind="timeout",
            )
        return await self._json(writer, 200, {"ok": True, "result": row}, keep_alive=keep)

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        if len(self._subscriptions) >= MAX_STREAMS:
            await self._error(
                writer,
                503,
                f"{MAX_STREAMS} dashboard pages are open already; close one",
                keep_alive=False,
            )
            return
        subscription = self._monitor.subscribe()
        self._subscriptions.add(subscription)
        try:
            head = response_head(
                200,
                {
                    **SECURITY_HEADERS,
                    "Content-Type": "text/event-stream; charset=utf-8",
                    "Connection": "close",
                    "X-Accel-Buffering": "no",
                },
            )
            opening = f"retry: {RETRY_MS}\n\n".encode() + frame(
                "snapshot", self._monitor.snapshot()
            )
            await self._write(writer, head + opening)
            while True:
                try:
                    async with asyncio.timeout(PING_INTERVAL):
                        data = await subscription.next()
                except TimeoutError:
                    data = b": ping\n\n"
                if data is None:
                    return
                await self._write(writer, data)
        finally:
            self._subscriptions.discard(subscription)
            self._monitor.unsubscribe(subscription)
