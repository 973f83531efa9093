"""The control socket itself, in this process: an embedded runtime with a ``ControlServer``,
requests that are not what the protocol expects, and what is left behind afterwards.

The client calls block, so they run in a worker thread while the runtime's loop answers.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import anyio
import msgpack  # type: ignore[import-untyped]
import pytest
import zmq

from minions import Minion, Resource, Runtime
from minions.ops.client import ControlClient, NoSystemError, RequestFailed
from minions.ops.control import ControlServer

pytestmark = pytest.mark.anyio

LIMIT = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Store(Resource):
    async def get(self) -> int:
        return 1


class Worker(Minion):
    def __init__(self, store: Store) -> None:
        self._store = store

    async def run(self) -> None:
        await asyncio.Event().wait()


def raw_request(path: Path, body: bytes) -> Any:
    """Send ``body`` as it is and decode the answer (the protocol's own client would refuse)."""
    context = zmq.Context()
    try:
        sock = context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"ipc://{path}")
        sock.send(body)
        assert sock.poll(int(LIMIT * 1000)), "no answer"
        answer = msgpack.unpackb(sock.recv())
        sock.close()
        return answer
    finally:
        context.term()


async def test_an_embedded_runtime_is_operated_and_stopped_over_its_socket(
    tmp_path: Path, open_fds: None
) -> None:
    """A Runtime given a ControlServer answers status and restart; ``stop`` without ``run()``
    stops the runtime itself, and is answered once it has; nothing stays open."""
    server = ControlServer()
    client = ControlClient(tmp_path, timeout=LIMIT)
    with anyio.fail_after(LIMIT):
        runtime = Runtime(project_dir=tmp_path, extensions=[server])
        await runtime.start(Worker)
        assert server.path == tmp_path / ".minions" / "run" / "control.sock"
        status = await asyncio.to_thread(client.request, "status")
        assert [c["name"] for c in status["components"]] == ["Store", "Worker"]
        row = await asyncio.to_thread(client.request, "restart", "Store")
        assert row["restarts"] == 1 and row["state"] == "running"
        assert runtime.status()["Worker"].restarts == 1  # restarted after its dependency
        assert await asyncio.to_thread(client.request, "stop") == {"stopped": True}
        await runtime.wait()
    assert all(s.state.value == "stopped" for s in runtime.status().values())
    assert server.path is None and not (tmp_path / ".minions" / "run" / "control.sock").exists()
    with pytest.raises(NoSystemError):
        client.request("status")


async def test_requests_outside_the_protocol_are_answered_and_served_on(tmp_path: Path) -> None:
    """Garbage, another version, an unknown operation, a missing or overlong name: each gets a
    ``bad_request`` answer saying what is wrong, and the server keeps serving."""
    server = ControlServer()
    async with Runtime(project_dir=tmp_path, extensions=[server]) as runtime:
        await runtime.start(Worker)
        assert server.path is not None
        path = server.path
        token = (tmp_path / ".minions" / "run" / "control.token").read_text().strip()
        cases = {
            b"\xc1 not msgpack": "not msgpack",
            msgpack.packb({"v": 99, "op": "status"}): "protocol version 1",
            msgpack.packb([1, 2]): "expected a map",
            msgpack.packb({"v": 1, "op": "explode", "token": token}): "unknown operation",
            msgpack.packb({"v": 1, "op": "restart", "token": token}): "restart needs a component",
            msgpack.packb({"v": 1, "op": "stop", "name": 3, "token": token}): "must be a string",
            msgpack.packb({"v": 1, "op": "workflow", "name": "f" * 201, "token": token}): (
                "at most 200"
            ),
        }
        with anyio.fail_after(LIMIT):
            for body, message in cases.items():
                answer = await asyncio.to_thread(raw_request, path, body)
                assert answer["ok"] is False
                assert answer["error"]["kind"] == "bad_request"
                assert message in answer["error"]["message"]
            client = ControlClient(tmp_path, timeout=LIMIT)
            with pytest.raises(RequestFailed) as refused:
                await asyncio.to_thread(client.request, "redeploy", "Worker")
            assert refused.value.kind == "refused"
            assert (await asyncio.to_thread(client.request, "ping"))["pid"] > 0


async def test_requests_without_the_credential_are_refused(tmp_path: Path) -> None:
    """A request without the system's credential, or with another one, is refused as
    ``unauthorized`` before its operation is even read; the file holding the credential is
    owner-only and gone once the system stops."""
    server = ControlServer()
    token_file = tmp_path / ".minions" / "run" / "control.token"
    async with Runtime(project_dir=tmp_path, extensions=[server]) as runtime:
        await runtime.start(Worker)
        assert server.path is not None
        assert token_file.stat().st_mode & 0o777 == 0o600
        forged = "0" * 64
        with anyio.fail_after(LIMIT):
            for request in (
                {"v": 1, "op": "stop"},
                {"v": 1, "op": "stop", "token": forged},
                {"v": 1, "op": "stop", "token": 12},
            ):
                answer = await asyncio.to_thread(raw_request, server.path, msgpack.packb(request))
                assert answer["error"]["kind"] == "unauthorized"
                assert "credential" in answer["error"]["message"]
        assert runtime.status()["Worker"].state.value == "running"
    assert not token_file.exists()


async def test_a_second_system_in_the_same_folder_runs_without_a_socket(tmp_path: Path) -> None:
    """The socket belongs to the first system; a second one logs why it has none and runs."""
    first, second = ControlServer(), ControlServer()
    with anyio.fail_after(LIMIT):
        async with (
            Runtime(project_dir=tmp_path, extensions=[first]) as a,
            Runtime(project_dir=tmp_path, extensions=[second]) as b,
        ):
            await a.start(Worker)
            await b.start(Store)
            assert first.path is not None and second.path is None
            client = ControlClient(tmp_path, timeout=LIMIT)
            status = await asyncio.to_thread(client.request, "status")
            assert [c["name"] for c in status["components"]] == ["Store", "Worker"]
    assert not (tmp_path / ".minions" / "run" / "control.sock").exists()


class Answers(Resource):
    """Keeps what the isolated child below was answered."""

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        self.got = asyncio.Event()

    async def record(self, answer: dict[str, Any]) -> None:
        self.answers.append(answer)
        self.got.set()


class Intruder(Minion, isolated=True):
    """An isolated child that reads the credential (it runs as the same user) and asks the
    system to stop."""

    def __init__(self, answers: Answers) -> None:
        self._answers = answers

    async def run(self) -> None:
        project = Path(os.environ["INTRUDER_PROJECT"])
        run_dir = project / ".minions" / "run"
        token = (run_dir / "control.token").read_text().strip()
        request = msgpack.packb({"v": 1, "op": "stop", "token": token})
        answer = await asyncio.to_thread(raw_request, run_dir / "control.sock", request)
        await self._answers.record(answer)
        await asyncio.Event().wait()


async def test_an_isolated_child_holding_the_credential_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that is not sandboxed can read the credential's file, but the socket sees (by
    SO_PEERCRED) that the request comes from an isolated child, and refuses it."""
    monkeypatch.setenv("INTRUDER_PROJECT", str(tmp_path))
    server = ControlServer()
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path, extensions=[server]) as runtime:
            await runtime.start(Intruder)
            answers = runtime.instances()["Answers"]
            assert isinstance(answers, Answers)
            await answers.got.wait()
            assert runtime.status()["Intruder"].state.value == "running"
    (answer,) = answers.answers
    assert answer["error"]["kind"] == "unauthorized"
    assert "is an isolated child of this system" in answer["error"]["message"]
