"""The dashboard's server without a browser: what it serves, to whom, and what it refuses.

An embedded runtime serves its own dashboard (``ControlServer`` + ``Dashboard``); requests are
written byte for byte (``webclient``), so each check sends exactly what an attacker could: a
foreign Host (DNS rebinding), no or a wrong token, an action from another origin, paths outside
the allow-list, oversized or malformed requests, a client that stalls.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from minions import ControlServer, Dashboard, Minion, Resource, Runtime, RuntimeStateError
from minions.ops.dashboard.access import Access
from minions.ops.dashboard.channel import LocalChannel
from minions.ops.dashboard.monitor import Monitor
from minions.ops.dashboard.protocol import Limits
from minions.ops.dashboard.server import MAX_CONNECTIONS, MAX_STREAMS, DashboardServer

from .conftest import cli
from .webclient import LIMIT, EventStream, action_headers, exchange, raw, request

pytestmark = pytest.mark.anyio

#: The test's own event (an asyncio.Event belongs to the loop of the test that made it).
switch: dict[str, asyncio.Event] = {}


class Store(Resource):
    async def run(self) -> None:
        await switch["fail"].wait()
        switch["fail"].clear()
        raise ConnectionError("store lost its disk")


class Worker(Minion):
    def __init__(self, store: Store) -> None:
        self._store = store

    async def run(self) -> None:
        await asyncio.Event().wait()


async def closed_unanswered(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection (or reset it) without answering."""
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


class Served:
    def __init__(self, runtime: Runtime, dashboard: Dashboard) -> None:
        self.runtime = runtime
        self.dashboard = dashboard
        url = dashboard.private_url
        assert url is not None
        found = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/#token=([\w-]+)", url)
        assert found, url
        self.port, self.token = int(found.group(1)), found.group(2)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    switch["fail"] = asyncio.Event()
    control = ControlServer()
    dashboard = Dashboard(control, port=0)
    async with asyncio.timeout(LIMIT):
        runtime = Runtime(project_dir=tmp_path, extensions=[control, dashboard])
        await runtime.start(Worker)
    try:
        yield Served(runtime, dashboard)
    finally:
        async with asyncio.timeout(LIMIT):
            await runtime.stop()


async def test_the_page_is_served_under_a_strict_policy_and_fetches_nothing_else(
    served: Served,
) -> None:
    """The page and its files need no token (they hold no data); every response forbids
    loading anything from elsewhere, framing and sniffing, and the page names only its own
    files."""
    page = await request(served.port, "GET", "/")
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert policy.startswith("default-src 'self'")
    assert "frame-ancestors 'none'" in policy and "unsafe" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    referenced = re.findall(rb'(?:src|href)="([^"]+)"', page.body)
    assert referenced and all(r.startswith(b"/static/") or r == b"data:," for r in referenced)
    for path in referenced:
        if path.startswith(b"/static/"):
            asset = await request(served.port, "GET", path.decode())
            assert asset.status == 200, path
            assert "content-security-policy" in asset.headers


async def test_the_data_needs_the_token(served: Served) -> None:
    """No token or a wrong one: 401. The query-string token is taken by the event stream only
    (an EventSource cannot send headers), never by the other routes."""
    port, token = served.port, served.token
    assert (await request(port, "GET", "/api/state")).status == 401
    assert (await request(port, "GET", "/api/state", token="x" * len(token))).status == 401
    assert (await request(port, "GET", f"/api/state?token={token}")).status == 401
    wrong = await request(port, "GET", "/api/events?token=nope")
    assert wrong.status == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert "minions dashboard" in wrong.json()["error"]["message"]
    state = await request(port, "GET", "/api/state", token=token)
    assert state.status == 200
    assert set(state.json()) == {"reachable", "problem", "tick", "history", "timeline"}

    stream = await EventStream.open(port, token)
    try:
        snapshot = await stream.until("snapshot")
        assert set(snapshot) == {"reachable", "problem", "tick", "history", "timeline"}
        tick = await stream.until("tick")
        rows = {c["name"]: c for c in tick["components"]}
        assert rows["Worker"]["dependencies"] == ["Store"]
        assert rows["Worker"]["state"] == "running"
    finally:
        await stream.close()


async def test_only_the_loopback_names_of_the_dashboard_are_answered(served: Served) -> None:
    """A request whose Host is another name (a rebinding site), another port, or missing is
    refused (421) before anything else is looked at."""
    port, token = served.port, served.token
    for host in (f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1", f"[::1]:{port}"):
        answer = await request(port, "GET", "/api/state", token=token, host=host)
        assert answer.status == 421, host
    no_host = await exchange(port, b"GET / HTTP/1.1\r\n\r\n")
    assert no_host.status == 421
    assert (await request(port, "GET", "/", host=f"localhost:{port}")).status == 200
    assert (await request(port, "GET", "/", host=f"LOCALHOST:{port}")).status == 200


async def test_actions_come_from_the_page_with_the_token_and_do_what_the_cli_does(
    served: Served,
) -> None:
    """An action needs the token and the page's own origin; it is the control operation
    itself: a restart restarts (dependents after it), an in-process redeploy is refused, an
    unknown component is a 404 with the runtime's message."""
    port, token = served.port, served.token
    good = action_headers(port, token)
    restart = json.dumps({"op": "restart", "component": "Store"}).encode()

    async def act(headers: dict[str, str], body: bytes = restart) -> tuple[int, dict[str, str]]:
        answer = await request(port, "POST", "/api/actions", headers=headers, body=body)
        return answer.status, answer.json()

    assert (await act({**good, "Authorization": "Bearer nope"}))[0] == 401
    no_origin = {k: v for k, v in good.items() if k != "Origin"}
    assert (await act(no_origin))[0] == 403
    assert (await act({**good, "Origin": "http://evil.example"}))[0] == 403
    assert (await act({**good, "Origin": f"http://127.0.0.1:{port + 1}"}))[0] == 403
    assert (await act({**good, "Sec-Fetch-Site": "cross-site"}))[0] == 403
    assert (await act({**good, "Content-Type": "text/plain"}))[0] == 415
    assert (await act(good, b"not json"))[0] == 400
    assert (await act(good, b'{"op": "delete", "component": "Store"}'))[0] == 400
    assert (await request(port, "GET", "/api/actions", token=token)).status == 405
    assert served.runtime.status()["Store"].restarts == 0  # none of the above did anything

    status, answer = await act(good)
    assert status == 200 and answer["ok"] is True
    assert answer["result"]["name"] == "Store" and answer["result"]["state"] == "running"
    assert {n: s.restarts for n, s in served.runtime.status().items()} == {"Store": 1, "Worker": 1}

    status, answer = await act(good, b'{"op": "redeploy", "component": "Store"}')
    assert status == 409 and answer["error"]["kind"] == "refused"
    assert "only isolated components can be redeployed" in answer["error"]["message"]
    status, answer = await act(good, b'{"op": "stop", "component": "Nope"}')
    assert status == 404 and answer["error"]["kind"] == "unknown_component"
    assert "it runs: Store, Worker" in answer["error"]["message"]
    status, answer = await act(good, b'{"op": "stop", "component": "Worker"}')
    assert status == 200 and answer["result"]["state"] == "stopped"


async def test_nothing_outside_the_allow_list_is_served(served: Served) -> None:
    """Paths are looked up, never joined to a folder: traversal, encoded traversal, files next
    to the assets, the package's own modules are all 404."""
    for path in (
        "/static/../access.py",
        "/static/%2e%2e/access.py",
        "/static/..%2faccess.py",
        "/static/vendor/uPlot.LICENSE",
        "/static/",
        "/static",
        "/access.py",
        "//etc/passwd",
        "/index.html",
    ):
        assert (await request(served.port, "GET", path)).status == 404, path
    assert (await request(served.port, "POST", "/", body=b"x")).status == 405


async def test_oversized_and_malformed_requests_are_refused_and_the_server_serves_on(
    served: Served,
) -> None:
    """Too long a head, too many headers, too large or chunked a body, a header that decides a
    check given twice, a bad request line or version: each gets its status and the connection
    is closed; the next client is served as usual."""
    port = served.port
    huge = await exchange(port, raw("GET", "/", port, headers={"X-Filler": "a" * 20_000}))
    assert huge.status == 431
    many = await exchange(port, raw("GET", "/", port, headers={f"X-{i}": "1" for i in range(60)}))
    assert many.status == 431
    large = await exchange(port, raw("POST", "/api/actions", port, body=b"x" * 20_000))
    assert large.status == 413
    chunked = await exchange(
        port, raw("POST", "/api/actions", port, headers={"Transfer-Encoding": "chunked"})
    )
    assert chunked.status == 501
    twice = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nHost: evil.example\r\n\r\n" % port
    assert (await exchange(port, twice)).status == 400
    assert (await exchange(port, b"GET /\r\n\r\n")).status == 400
    assert (await exchange(port, b"GET / HTTP/2.0\r\n\r\n")).status == 505
    assert (await exchange(port, b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n")).status == 400
    for answer in (huge, many, large, chunked):
        assert answer.headers["connection"] == "close"
    assert (await request(port, "GET", "/")).status == 200


async def test_a_stalling_client_is_cut_off_and_connections_are_capped(tmp_path: Path) -> None:
    """A client that starts a request and stops sending is disconnected when the head timeout
    passes; past the connection cap, a new connection is closed at once; past the stream cap, a
    new event stream is refused with a 503."""
    switch["fail"] = asyncio.Event()
    control = ControlServer()
    async with asyncio.timeout(LIMIT), Runtime(project_dir=tmp_path, extensions=[control]) as rt:
        await rt.start(Worker)
        monitor = Monitor(LocalChannel(control))
        access = Access()
        server = DashboardServer(monitor, access, limits=Limits(head_timeout=0.5))
        await server.start()
        monitor.start()
        opened: list[asyncio.StreamWriter] = []
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            opened.append(writer)
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0")  # ... and nothing more
            await writer.drain()
            assert await closed_unanswered(reader)

            streams = [
                await EventStream.open(server.port, access.token) for _ in range(MAX_STREAMS)
            ]
            opened.extend(s.writer for s in streams)
            refused = await request(server.port, "GET", f"/api/events?token={access.token}")
            assert refused.status == 503
            assert f"{MAX_STREAMS} dashboard pages are open" in refused.json()["error"]["message"]

            idle = []
            for _ in range(MAX_CONNECTIONS - MAX_STREAMS):
                idle.append(await asyncio.open_connection("127.0.0.1", server.port))
                opened.append(idle[-1][1])
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            opened.append(writer)
            writer.write(raw("GET", "/", server.port))
            assert await closed_unanswered(reader)  # over the cap
        finally:
            for writer in opened:
                writer.close()
            await server.close()
            await monitor.close()


async def test_a_crash_reaches_the_page_as_it_happens_and_the_stop_is_prompt(
    served: Served,
) -> None:
    """The stream carries the crash as a lifecycle event with its cause, then a tick with the
    new state; stopping the runtime ends open streams and idle connections at once and frees
    the port."""
    stream = await EventStream.open(served.port, served.token)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        await stream.until("tick")
        switch["fail"].set()
        crash = await stream.until("lifecycle", lambda e: e["kind"] == "crashed")
        assert crash["component"] == "Store" and crash["cause"] == "raised"
        assert crash["reason"] == "run() raised ConnectionError: store lost its disk"
        await stream.until(
            "tick",
            lambda t: any(c["name"] == "Store" and c["crashes"] == 1 for c in t["components"]),
        )
        loop = asyncio.get_running_loop()
        began = loop.time()
        await served.runtime.stop()
        assert loop.time() - began < 5.0  # no client keeps the stop waiting
        async with asyncio.timeout(LIMIT):
            with pytest.raises((EOFError, ConnectionError)):
                while True:
                    await stream.next()
            assert await idle_reader.read() == b""
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", served.port)
    finally:
        await stream.close()
        idle_writer.close()


async def test_the_address_is_left_for_its_owner_only(served: Served) -> None:
    """``.minions/run/dashboard.json`` (0600, in the 0700 run folder) holds the address and
    token, which ``minions dashboard --url`` prints; the log holds the address only; after the
    stop the file is gone and ``--url`` says no dashboard is served."""
    project = served.runtime.project_dir
    path = project / ".minions" / "run" / "dashboard.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    result = await asyncio.to_thread(cli, "dashboard", "--url", "--project", str(project))
    assert result.code == 0, result.err
    assert result.out == f"{served.dashboard.private_url}\n"
    await served.runtime.stop()
    assert not path.exists()
    result = await asyncio.to_thread(cli, "dashboard", "--url", "--project", str(project))
    assert result.code == 1
    assert result.err.startswith(f"minions: no system in {project} serves a dashboard")


async def test_a_busy_port_leaves_the_system_running_and_a_misplaced_dashboard_is_refused(
    tmp_path: Path,
) -> None:
    """A port that cannot be had is logged (``dashboard.unavailable``) and the system runs on
    without a dashboard; a Dashboard attached without its ControlServer is a programming error,
    said before anything starts."""
    switch["fail"] = asyncio.Event()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        control = ControlServer()
        dashboard = Dashboard(control, port=port)
        with capture_logs() as logs:
            async with asyncio.timeout(LIMIT):
                async with Runtime(project_dir=tmp_path, extensions=[control, dashboard]) as rt:
                    await rt.start(Worker)
                    assert dashboard.url is None
                    assert rt.status()["Worker"].state.value == "running"
        unavailable = [e for e in logs if e["event"] == "dashboard.unavailable"]
        assert len(unavailable) == 1 and f"127.0.0.1:{port}" in unavailable[0]["reason"]
    assert not (tmp_path / ".minions" / "run" / "dashboard.json").exists()

    alone = Runtime(project_dir=tmp_path, extensions=[Dashboard(ControlServer())])
    with pytest.raises(RuntimeStateError, match="attach that first"):
        await alone.start(Worker)
    await alone.stop()
