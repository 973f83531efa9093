"""Peer: calls and streams both ways over real ZeroMQ ipc:// sockets, cancellation, flow
control, typed remote errors, control messages, failure of pending work, and garbage on the
wire; across a real child process where the behaviour crosses processes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import zmq
import zmq.asyncio

from isolation import (
    ComponentCrashed,
    Peer,
    PeerState,
    ProtocolError,
    RemoteError,
    SerializationError,
)
from isolation._protocol import Kind, build_frames, decode_frame, pack

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


# -- what the tests serve -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pair:
    base: str
    quote: str


@dataclasses.dataclass(frozen=True)
class Quote:
    pair: Pair
    price: float
    source_pid: int


class Rejected(Exception):
    """A user-defined error raised by a served method."""


class Prices:
    """A resource the tests serve; events let tests see what happens inside its methods."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.closed = asyncio.Event()
        self.produced = 0
        self.arrived = 0
        self.all_arrived = asyncio.Event()
        self.expected = 0

    async def get_price(self, pair: Pair) -> float:
        if pair.base == "NONE":
            raise ValueError(f"no market for {pair.base}/{pair.quote}")
        return 100.0 + len(pair.base)

    async def echo(self, value: Any) -> Any:
        return value

    async def ping(self) -> None:
        return None

    async def pid(self) -> int:
        return os.getpid()

    async def reject(self, why: str) -> None:
        raise Rejected(why)

    async def missing(self, key: str) -> None:
        raise KeyError(key)

    async def gather_all(self, index: int) -> int:
        """Answers only once ``expected`` calls are in flight at the same time."""
        self.arrived += 1
        if self.arrived == self.expected:
            self.all_arrived.set()
        await self.all_arrived.wait()
        return index * 2

    async def block(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def with_anyio(self, value: int) -> int:
        """Suspends inside an anyio cancel scope and task group, as runtime code does."""
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.lowlevel.checkpoint)
                await anyio.lowlevel.checkpoint()
        assert asyncio.current_task() is not None
        return value + 1

    async def large(self, size: int) -> bytes:
        return b"x" * size

    async def wrong_result(self) -> int:
        return "not a number"  # type: ignore[return-value]

    async def ticks(self, pair: Pair, count: int) -> AsyncIterator[Quote]:
        for index in range(count):
            yield Quote(pair, float(index), os.getpid())

    async def flood(self) -> AsyncIterator[int]:
        try:
            while True:
                self.produced += 1
                yield self.produced
        finally:
            self.closed.set()

    async def waits_forever(self) -> AsyncIterator[int]:
        try:
            yield 1
            self.started.set()
            await asyncio.Event().wait()
            yield 2
        finally:
            self.closed.set()

    async def breaks_after(self, count: int) -> AsyncIterator[int]:
        for index in range(count):
            yield index
        raise Rejected(f"gave up after {count}")

    async def bad_items(self) -> AsyncIterator[int]:
        yield 1
        yield "two"  # type: ignore[misc]

    def reset(self) -> None:
        """A sync method: not reachable remotely."""

    async def _internal(self) -> None:
        """A private method: not reachable remotely."""


class LyingPrices:
    """What a caller with a stale or wrong copy of the interface sends."""

    async def get_price(self, pair: str) -> float:
        return 0.0

    async def reset(self) -> None: ...

    async def ping(self) -> str:
        return ""

    async def flood(self) -> int:
        return 0


# -- links between two peers --------------------------------------------------------------------


@dataclasses.dataclass
class Link:
    server: Peer
    client: Peer
    prices: Prices
    proxy: Any
    controls: dict[str, list[tuple[str, Any]]]
    runs: list[asyncio.Task[None]]


def ipc_dir(tmp_path: Path) -> Path:
    path = tmp_path / "ipc"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@contextlib.asynccontextmanager
async def zmq_pair(
    tmp_path: Path, socket_type: int = zmq.PAIR
) -> AsyncIterator[tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]]:
    context = zmq.asyncio.Context()
    bound, connected = context.socket(socket_type), context.socket(socket_type)
    try:
        endpoint = f"ipc://{ipc_dir(tmp_path)}/link"
        bound.bind(endpoint)
        connected.connect(endpoint)
        yield bound, connected
    finally:
        bound.close(linger=0)
        connected.close(linger=0)
        context.term()


@contextlib.asynccontextmanager
async def make_link(
    tmp_path: Path, socket_type: int = zmq.PAIR, **client_options: Any
) -> AsyncIterator[Link]:
    controls: dict[str, list[tuple[str, Any]]] = {"server": [], "client": []}
    async with zmq_pair(tmp_path, socket_type) as (server_socket, client_socket):
        server = Peer(
            server_socket,
            component="server",
            on_control=lambda kind, body: controls["server"].append((kind, body)),
        )
        client = Peer(
            client_socket,
            component="client",
            on_control=lambda kind, body: controls["client"].append((kind, body)),
            **client_options,
        )
        prices = Prices()
        server.serve("prices", prices, Prices)
        runs = [asyncio.create_task(server.run()), asyncio.create_task(client.run())]
        try:
            yield Link(server, client, prices, client.proxy("prices", Prices), controls, runs)
        finally:
            with anyio.fail_after(10):
                await client.aclose()
                await server.aclose()
                for run in runs:
                    run.cancel()
                await asyncio.gather(*runs, return_exceptions=True)


@pytest.fixture
async def link(tmp_path: Path) -> AsyncIterator[Link]:
    async with make_link(tmp_path) as link:
        yield link


@contextlib.asynccontextmanager
async def raw_link(
    tmp_path: Path, **options: Any
) -> AsyncIterator[tuple[Peer, zmq.asyncio.Socket]]:
    """A Peer serving Prices, talked to by a bare socket that sends whatever a test wants."""
    async with zmq_pair(tmp_path) as (peer_socket, raw):
        peer = Peer(peer_socket, component="raw", **options)
        peer.serve("prices", Prices(), Prices)
        run = asyncio.create_task(peer.run())
        try:
            yield peer, raw
        finally:
            await peer.aclose()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)


def frame(*messages: bytes) -> bytes:
    (single,) = build_frames(list(messages), 1 << 24)
    return single


# -- calls --------------------------------------------------------------------------------------


async def test_proxy_calls_return_typed_results(open_fds: None, tmp_path: Path) -> None:
    """A proxied call validates and rebuilds its argument and result types."""
    async with make_link(tmp_path) as link:
        with anyio.fail_after(10):
            assert await link.proxy.get_price(Pair("ETH", "USD")) == 103.0
            assert await link.proxy.echo({"nested": [1, (2, 3)], "b": b"\x00"}) == {
                "nested": [1, [2, 3]],
                "b": b"\x00",
            }
            quotes = [quote async for quote in link.proxy.ticks(Pair("BTC", "EUR"), 3)]
            assert quotes == [Quote(Pair("BTC", "EUR"), float(i), os.getpid()) for i in range(3)]


async def test_dealer_sockets_carry_a_link_too(tmp_path: Path) -> None:
    """DEALER to DEALER works like PAIR: calls, streams and control messages."""
    async with make_link(tmp_path, zmq.DEALER) as link:
        with anyio.fail_after(10):
            assert await link.proxy.get_price(Pair("ETH", "USD")) == 103.0
            assert [q.price async for q in link.proxy.ticks(Pair("A", "B"), 100)] == [
                float(i) for i in range(100)
            ]
            link.client.send_control("hello", [1, 2])
            await link.proxy.ping()
        assert link.controls["server"] == [("hello", [1, 2])]


async def test_many_calls_are_in_flight_at_once(link: Link) -> None:
    """200 calls are all running on the serving side at the same time (none answers before
    the last arrives), and each caller gets its own answer."""
    link.prices.expected = 200
    with anyio.fail_after(10):
        results = await asyncio.gather(*(link.proxy.gather_all(i) for i in range(200)))
    assert results == [i * 2 for i in range(200)]
    assert link.client.statistics().calls_pending == 0
    assert link.server.statistics().serving == 0


async def test_calls_made_in_one_loop_pass_leave_in_one_frame(tmp_path: Path) -> None:
    """64 calls started in the same pass are coalesced into one ZeroMQ message, and the 64
    answers sent back in one message complete them all."""
    async with zmq_pair(tmp_path) as (peer_socket, raw):
        peer = Peer(peer_socket, component="raw")
        run = asyncio.create_task(peer.run())
        proxy = peer.proxy("prices", Prices)
        try:
            with anyio.fail_after(10):
                calls = [asyncio.ensure_future(proxy.echo(i)) for i in range(64)]
                messages = decode_frame(await raw.recv())
                assert [m[1] for m in messages] == [Kind.CALL] * 64
                assert [m[5] for m in messages] == [[i] for i in range(64)]
                assert await raw.poll(0) == 0  # type: ignore[comparison-overlap]
                answers = [pack(Kind.RESULT, m[2], m[5][0] * 10) for m in messages]
                await raw.send(frame(*answers))
                assert await asyncio.gather(*calls) == [i * 10 for i in range(64)]
        finally:
            await peer.aclose()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)


async def test_both_sides_call_each_other_at_once(link: Link) -> None:
    """The channel is symmetric: the serving side calls back while answering a call."""

    class Relay:
        def __init__(self, back: Any) -> None:
            self.back = back

        async def relay(self, pair: Pair) -> float:
            price: float = await self.back.get_price(pair)
            return price * 2

    link.client.serve("client-prices", link.prices, Prices)
    link.server.serve("relay", Relay(link.server.proxy("client-prices", Prices)), Relay)
    relay = link.client.proxy("relay", Relay)
    with anyio.fail_after(10):
        assert await asyncio.gather(*(relay.relay(Pair("A" * n, "B")) for n in range(5))) == [
            (100.0 + n) * 2 for n in range(5)
        ]


async def test_served_methods_run_in_their_own_task_with_anyio(link: Link) -> None:
    """Served methods may use anyio cancel scopes and task groups across suspensions."""
    with anyio.fail_after(10):
        assert await asyncio.gather(*(link.proxy.with_anyio(i) for i in range(20))) == [
            i + 1 for i in range(20)
        ]


async def test_proxy_offers_the_real_signatures(link: Link) -> None:
    assert inspect.signature(link.proxy.get_price) == inspect.signature(Prices().get_price)
    assert inspect.iscoroutinefunction(link.proxy.get_price)
    assert inspect.isasyncgenfunction(link.proxy.ticks)
    assert link.proxy.get_price.__doc__ == Prices.get_price.__doc__
    assert "Prices proxy for 'prices'" in repr(link.proxy)


# -- remote errors ------------------------------------------------------------------------------


async def test_remote_builtin_error_keeps_its_type(link: Link) -> None:
    with anyio.fail_after(10), pytest.raises(ValueError, match="no market for NONE/USD") as caught:
        await link.proxy.get_price(Pair("NONE", "USD"))
    error = caught.value
    assert isinstance(error, RemoteError)
    assert (error.remote_type, error.component, error.method) == (
        "ValueError",
        "Prices",
        "get_price",
    )
    assert error.remote_message == "no market for NONE/USD"
    assert 'raise ValueError(f"no market for' in error.remote_traceback
    assert str(error) == "Prices.get_price raised ValueError: no market for NONE/USD"


async def test_remote_key_error_reads_like_one(link: Link) -> None:
    with anyio.fail_after(10), pytest.raises(KeyError) as caught:
        await link.proxy.missing("ETH")
    assert str(caught.value) == "Prices.missing raised KeyError: 'ETH'"


async def test_remote_custom_error_is_a_remote_error_with_its_traceback(link: Link) -> None:
    with anyio.fail_after(10), pytest.raises(RemoteError) as caught:
        await link.proxy.reject("limits exceeded")
    error = caught.value
    assert not isinstance(error, Rejected)
    assert error.remote_type == f"{__name__}.Rejected"
    assert error.remote_message == "limits exceeded"
    assert "in reject" in error.remote_traceback
    assert "raise Rejected(why)" in error.remote_traceback
    assert any("Remote traceback (Prices.reject)" in note for note in error.__notes__)


# -- what is not reachable ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("reset", "Prices.reset is not async"),
        ("_internal", "Prices._internal is private"),
        ("nowhere", "Prices has no attribute 'nowhere'"),
        ("started", "Prices has no attribute 'started'"),  # instance attributes are not offered
    ],
)
async def test_proxy_refuses_names_outside_the_interface(link: Link, name: str, why: str) -> None:
    with pytest.raises(AttributeError, match=f"{why}; only public async methods"):
        getattr(link.proxy, name)


async def test_serving_side_refuses_sync_and_unknown_methods(link: Link) -> None:
    """A caller with a different idea of the interface gets a clear error, never getattr."""
    liar = link.client.proxy("prices", LyingPrices)
    with anyio.fail_after(10):
        with pytest.raises(AttributeError, match=r"Prices\.reset is not async"):
            await liar.reset()
        with pytest.raises(AttributeError, match=r"Prices\.flood is an async generator"):
            await liar.flood()
        with pytest.raises(LookupError, match="nothing is served as 'elsewhere'"):
            await link.client.proxy("elsewhere", Prices).ping()


@pytest.mark.parametrize("name", ["_internal", "__init__", "__class__", "reset", "started"])
async def test_serving_side_refuses_raw_calls_to_anything_else(tmp_path: Path, name: str) -> None:
    async with raw_link(tmp_path) as (_peer, raw):
        with anyio.fail_after(10):
            await raw.send(frame(pack(Kind.CALL, 1, "prices", name, [], {})))
            (reply,) = decode_frame(await raw.recv())
    assert reply[1] == Kind.ERROR
    assert reply[3] == "AttributeError"
    assert "only public async methods cross the isolation boundary" in reply[4]


# -- values that cannot cross -------------------------------------------------------------------


async def test_unserialisable_argument_fails_in_the_caller(link: Link) -> None:
    with anyio.fail_after(10):
        with pytest.raises(SerializationError, match=r"Prices\.get_price\(pair=\.\.\.\)"):
            await link.proxy.get_price(object())
        with pytest.raises(SerializationError, match=r"Prices\.echo\(value=\.\.\.\).*Event"):
            await link.proxy.echo(asyncio.Event())
        assert link.client.statistics().calls_pending == 0
        assert await link.proxy.ping() is None  # the channel is unharmed


async def test_argument_failing_validation_on_arrival(link: Link) -> None:
    liar = link.client.proxy("prices", LyingPrices)
    with (
        anyio.fail_after(10),
        pytest.raises(
            SerializationError,
            match=r"Prices\.get_price\(pair=\.\.\.\): received data that is not a valid Pair",
        ),
    ):
        await liar.get_price("ETH/USD")


async def test_result_failing_validation_on_arrival(link: Link) -> None:
    liar = link.client.proxy("prices", LyingPrices)
    with (
        anyio.fail_after(10),
        pytest.raises(SerializationError, match=r"LyingPrices\.ping return value: .*valid string"),
    ):
        await liar.ping()
    with (
        anyio.fail_after(10),
        pytest.raises(SerializationError, match=r"Prices\.wrong_result return value: .*str as int"),
    ):
        await link.proxy.wrong_result()


async def test_messages_over_the_frame_limit_are_refused(tmp_path: Path) -> None:
    limit = 64 * 1024
    async with make_link(tmp_path, max_frame_bytes=limit) as link:
        with anyio.fail_after(10):
            with pytest.raises(SerializationError, match=r"Prices\.echo: the message is \d+ bytes"):
                await link.proxy.echo(b"x" * limit)
            # The server was built with the default limit: its large answer is refused here.
            with pytest.raises(ComponentCrashed) as caught:
                await link.proxy.large(limit * 2)
            assert isinstance(caught.value.__cause__, ProtocolError)
            assert "over the 65536-byte limit" in str(caught.value.__cause__)


# -- cancellation -------------------------------------------------------------------------------


async def test_cancelling_a_call_cancels_the_served_method(link: Link) -> None:
    with anyio.fail_after(10):
        call = asyncio.ensure_future(link.proxy.block())
        await link.prices.started.wait()
        assert link.server.statistics().serving == 1
        call.cancel()
        await link.prices.cancelled.wait()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert link.client.statistics().calls_pending == 0
        await link.proxy.ping()
        assert link.server.statistics().serving == 0


async def test_breaking_out_of_a_stream_closes_the_remote_generator(link: Link) -> None:
    with anyio.fail_after(10):
        async for value in link.proxy.flood():
            if value == 3:
                break
        await link.prices.closed.wait()
        await link.proxy.ping()
        assert link.server.statistics().serving == 0
        assert link.client.statistics().streams_open == 0


async def test_cancelling_a_stream_consumer_closes_the_remote_generator(link: Link) -> None:
    async def consume() -> None:
        async for _ in link.proxy.waits_forever():
            pass

    with anyio.fail_after(10):
        consumer = asyncio.ensure_future(consume())
        await link.prices.started.wait()
        consumer.cancel()
        await link.prices.closed.wait()
        with pytest.raises(asyncio.CancelledError):
            await consumer


# -- streams ------------------------------------------------------------------------------------


async def test_stream_error_arrives_after_the_items_before_it(link: Link) -> None:
    received: list[int] = []
    with anyio.fail_after(10), pytest.raises(RemoteError, match="gave up after 5") as caught:
        async for value in link.proxy.breaks_after(5):
            received.append(value)
    assert received == [0, 1, 2, 3, 4]
    assert caught.value.method == "breaks_after"


async def test_stream_item_that_cannot_be_sent_ends_the_stream(link: Link) -> None:
    received: list[int] = []
    with anyio.fail_after(10), pytest.raises(SerializationError, match=r"Prices\.bad_items"):
        async for value in link.proxy.bad_items():
            received.append(value)
    assert received == [1]


async def test_many_streams_interleave(link: Link) -> None:
    async def collect(count: int) -> list[float]:
        return [quote.price async for quote in link.proxy.ticks(Pair("X", "Y"), count)]

    with anyio.fail_after(20):
        results = await asyncio.gather(*(collect(300 + n) for n in range(10)))
    assert results == [[float(i) for i in range(300 + n)] for n in range(10)]


@pytest.mark.parametrize("window", [1, 8, 64])
async def test_slow_consumer_bounds_the_producer(tmp_path: Path, window: int) -> None:
    """The producer never runs more than the credit window ahead of the consumer, and does run
    that far ahead while the consumer is slow (so the bound is reached, not merely respected)."""
    async with make_link(tmp_path, stream_credit=window) as link:
        with anyio.fail_after(20):
            consumed = 0
            ahead: list[int] = []
            async for _ in link.proxy.flood():
                consumed += 1
                ahead.append(link.prices.produced - consumed)
                if consumed % 5 == 0:
                    # A slow consumer: give the producer every chance to run ahead.
                    await link.proxy.ping()
                    await link.proxy.ping()
                    ahead.append(link.prices.produced - consumed)
                if consumed == 400:
                    break
            assert max(ahead) == window
            assert min(ahead) >= 0
            await link.prices.closed.wait()


async def test_a_producer_sending_beyond_its_credit_breaks_the_channel(tmp_path: Path) -> None:
    async with zmq_pair(tmp_path) as (peer_socket, raw):
        peer = Peer(peer_socket, component="raw", stream_credit=2)
        run = asyncio.create_task(peer.run())
        try:
            with anyio.fail_after(10):
                items = peer.proxy("prices", Prices).flood()
                first = asyncio.ensure_future(items.__anext__())
                (opened,) = decode_frame(await raw.recv())
                assert (opened[1], opened[7]) == (Kind.STREAM_OPEN, 2)
                await raw.send(frame(*(pack(Kind.STREAM_ITEM, opened[2], n) for n in range(3))))
                with pytest.raises(ProtocolError, match="beyond the credit it was granted"):
                    await run
                # Items that arrived within the credit are delivered, then the failure.
                assert await first == 0
                assert await items.__anext__() == 1
                with pytest.raises(ComponentCrashed, match=r"Prices\.flood failed"):
                    await items.__anext__()
        finally:
            await peer.aclose()


# -- control messages ---------------------------------------------------------------------------


async def test_control_messages_flow_both_ways_in_order(link: Link) -> None:
    for n in range(50):
        link.client.send_control("log", {"n": n})
    link.server.send_control("stop")
    with anyio.fail_after(10):
        # The call leaves after the logs and its answer after "stop": when it returns, both
        # sides have received the control messages sent before it.
        await link.proxy.ping()
    assert link.controls["server"] == [("log", {"n": n}) for n in range(50)]
    assert link.controls["client"] == [("stop", None)]


async def test_control_body_must_be_plain_data(link: Link) -> None:
    with pytest.raises(SerializationError, match="control message 'log': cannot send its body"):
        link.client.send_control("log", object())


async def test_on_control_rejecting_a_message_breaks_the_channel(tmp_path: Path) -> None:
    def strict(kind: str, body: Any) -> None:
        raise ProtocolError(f"unexpected {kind!r} message")

    async with zmq_pair(tmp_path) as (a_socket, b_socket):
        a = Peer(a_socket, component="a", on_control=strict)
        b = Peer(b_socket, component="b")
        a.serve("prices", Prices(), Prices)
        runs = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        try:
            with anyio.fail_after(10):
                b.send_control("surprise")
                with pytest.raises(ProtocolError, match="unexpected 'surprise' message"):
                    await runs[0]
                assert a.state is PeerState.BROKEN
        finally:
            await a.aclose()
            await b.aclose()
            runs[1].cancel()
            await asyncio.gather(*runs, return_exceptions=True)


async def test_messages_wait_for_a_peer_that_has_not_connected_yet(tmp_path: Path) -> None:
    """A bound socket with nobody connected refuses sends; the Peer keeps the frames and sends
    them, in order, once the other end connects."""
    context = zmq.asyncio.Context()
    bound, late = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    endpoint = f"ipc://{ipc_dir(tmp_path)}/late"
    try:
        bound.bind(endpoint)
        peer = Peer(bound, component="early")
        peer.send_control("hello", 1)
        await asyncio.sleep(0)  # one loop pass: the flush scheduled by send_control runs first
        assert peer.statistics().frames_queued == 1
        with anyio.fail_after(10):
            peer.send_control("hello", 2)
            late.connect(endpoint)
            first = decode_frame(await late.recv())
            second = [] if len(first) == 2 else decode_frame(await late.recv())
        assert [m[4] for m in first + second] == [1, 2]
        await peer.aclose()
    finally:
        bound.close(linger=0)
        late.close(linger=0)
        context.term()


# -- failure of pending work --------------------------------------------------------------------


async def test_fail_pending_fails_every_waiting_call_and_stream(link: Link) -> None:
    with anyio.fail_after(10):
        blocked = asyncio.ensure_future(link.proxy.block())
        await link.prices.started.wait()
        stream = link.proxy.waits_forever()
        assert await stream.__anext__() == 1
        waiting_item = asyncio.ensure_future(stream.__anext__())
        cause = ComponentCrashed("server exited with signal 9")
        link.client.fail_pending(cause)

        with pytest.raises(ComponentCrashed) as call_error:
            await blocked
        assert str(call_error.value) == "Prices.block failed: server exited with signal 9"
        assert (call_error.value.component, call_error.value.method) == ("Prices", "block")
        assert call_error.value.__cause__ is cause
        with pytest.raises(ComponentCrashed, match=r"Prices\.waits_forever failed: server exited"):
            await waiting_item
        # Later calls fail at once, without waiting for an answer that cannot come.
        with pytest.raises(ComponentCrashed, match=r"Prices\.ping failed: server exited"):
            await link.proxy.ping()
        assert link.client.state is PeerState.BROKEN
        link.client.send_control("still", "possible")


async def test_aclose_fails_callers_and_cancels_served_work(link: Link) -> None:
    with anyio.fail_after(10):
        blocked = asyncio.ensure_future(link.proxy.block())
        await link.prices.started.wait()
        await link.client.aclose()
        with pytest.raises(ComponentCrashed, match="channel to client was closed"):
            await blocked
        await link.runs[1]  # run() returns once its Peer is closed
        await link.server.aclose()
        await link.prices.cancelled.wait()
        assert link.server.statistics().serving == 0
        with pytest.raises(ComponentCrashed, match="closed"):
            link.client.send_control("late")
        await link.client.aclose()  # idempotent


# -- what the other end may cost ----------------------------------------------------------------


class LoopLag:
    """Measures how late the event loop runs a callback scheduled every millisecond."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, loop.time() - due)
            self.ticks += 1

    def __enter__(self) -> LoopLag:
        self._task = asyncio.ensure_future(self._probe())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_a_frame_of_a_million_messages_is_handled_in_slices(tmp_path: Path) -> None:
    """One frame packed with a million small messages (a legal flood) is handled over many
    passes of the event loop: no pass stalls it for long, and what follows still gets done."""
    flood = [pack(Kind.CANCEL, i + 1) for i in range(1_000_000)]
    async with raw_link(tmp_path) as (_peer, raw):
        with anyio.fail_after(30), LoopLag() as lag:
            await raw.send(frame(*flood, pack(Kind.CALL, 7, "prices", "pid", [], {})))
            (reply,) = decode_frame(await raw.recv())
    assert (reply[1], reply[2], reply[3]) == (Kind.RESULT, 7, os.getpid())
    assert lag.ticks > 10  # the loop kept running while the frame was handled
    assert lag.worst < 0.05, f"the event loop stalled {lag.worst * 1000:.0f} ms"


async def test_calls_beyond_the_bound_are_refused_at_once(tmp_path: Path) -> None:
    """With max_calls_in_flight, the other end's calls beyond the bound get an error saying
    so; the ones running are unharmed, and room made by one ending is used again."""
    async with raw_link(tmp_path, max_calls_in_flight=3) as (peer, raw):
        with anyio.fail_after(10):
            await raw.send(
                frame(*(pack(Kind.CALL, i, "prices", "block", [], {}) for i in range(1, 6)))
            )
            refused: list[list[Any]] = []
            while len(refused) < 2:
                refused.extend(decode_frame(await raw.recv()))
            assert peer.statistics().serving == 3
            await raw.send(
                frame(pack(Kind.CANCEL, 1), pack(Kind.CALL, 9, "prices", "ping", [], {}))
            )
            (answer,) = decode_frame(await raw.recv())
    assert [(r[1], r[2], r[3]) for r in refused] == [
        (Kind.ERROR, 4, "RuntimeError"),
        (Kind.ERROR, 5, "RuntimeError"),
    ]
    assert "raw has 3 calls in flight here, the most it may have at once" in refused[0][4]
    assert (answer[1], answer[2]) == (Kind.RESULT, 9)


async def test_an_id_still_in_use_breaks_the_channel(tmp_path: Path) -> None:
    """A call or stream reusing the id of one still running would make the serving side lose
    track of a task: it is a protocol error, never a second task under the same id."""
    async with raw_link(tmp_path) as (peer, raw):
        with anyio.fail_after(10):
            pending = asyncio.ensure_future(peer.proxy("prices", Prices).ping())
            await raw.recv()  # the peer's own call went out: it fails once the channel breaks
            await raw.send(
                frame(
                    pack(Kind.CALL, 5, "prices", "block", [], {}),
                    pack(Kind.STREAM_OPEN, 5, "prices", "flood", [], {}, 0),
                )
            )
            with pytest.raises(ComponentCrashed) as caught:
                await pending
        assert isinstance(caught.value.__cause__, ProtocolError)
        assert "id 5, which a call or stream still running here" in str(caught.value.__cause__)
        assert peer.state is PeerState.BROKEN


async def test_streams_beyond_the_bound_are_refused_at_once(tmp_path: Path) -> None:
    """Streams opened without credit hold nothing beyond max_streams_open: the rest are
    refused with a STREAM_ERROR."""
    opens = [pack(Kind.STREAM_OPEN, i, "prices", "flood", [], {}, 0) for i in range(1, 101)]
    async with raw_link(tmp_path, max_streams_open=2) as (peer, raw):
        with anyio.fail_after(10):
            await raw.send(frame(*opens))
            refused: list[list[Any]] = []
            while len(refused) < 98:
                refused.extend(decode_frame(await raw.recv()))
            assert peer.statistics().serving == 2
    assert {r[1] for r in refused} == {Kind.STREAM_ERROR}
    assert sorted(r[2] for r in refused) == list(range(3, 101))
    assert "2 streams open here" in refused[0][4]


# -- garbage on the wire ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("garbage", "complaint"),
    [
        (b"\xc1\xc1\xc1", "not valid msgpack"),
        (b"\x93\x01", "not valid msgpack"),
        (b"\x05", "expected a non-empty array"),
        (b"\x91\x93\x63\x04\x01", "version 99"),
    ],
)
async def test_garbage_makes_run_raise_protocol_error(
    tmp_path: Path, garbage: bytes, complaint: str
) -> None:
    async with raw_link(tmp_path) as (peer, raw):
        proxy = peer.proxy("prices", Prices)
        with anyio.fail_after(10):
            pending = asyncio.ensure_future(proxy.ping())
            await raw.recv()  # the call went out; now answer it with garbage
            await raw.send(garbage)
            with pytest.raises(ComponentCrashed) as caught:
                await pending
        assert isinstance(caught.value.__cause__, ProtocolError)
        assert complaint in str(caught.value.__cause__)
        assert peer.state is PeerState.BROKEN
        with pytest.raises(ProtocolError, match=complaint):
            await peer.run()


# -- across a real child process ----------------------------------------------------------------


class Worker:
    """Served by the child process; calls back into the parent's Prices."""

    def __init__(self, peer: Peer, prices: Any) -> None:
        self.peer = peer
        self.prices = prices

    async def quote(self, pair: Pair) -> Quote:
        return Quote(pair, await self.prices.get_price(pair) * 2, os.getpid())

    async def hang(self) -> None:
        self.peer.send_control("hanging")
        await asyncio.Event().wait()

    async def count(self, n: int) -> AsyncIterator[int]:
        for index in range(n):
            yield index

    async def send_garbage(self) -> None:
        zmq.Socket.send(self.peer._socket, b"\xc1 definitely not msgpack")


async def child_main(endpoint: str) -> None:
    """The child process: serve a Worker to the parent until told to stop."""
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.PAIR)
    socket.connect(endpoint)
    stop = asyncio.Event()

    def on_control(kind: str, body: Any) -> None:
        if kind == "stop":
            stop.set()

    peer = Peer(socket, component="parent", on_control=on_control)
    peer.serve("worker", Worker(peer, peer.proxy("prices", Prices)), Worker)
    run = asyncio.create_task(peer.run())
    peer.send_control("ready", os.getpid())
    await stop.wait()
    await peer.aclose()
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    socket.close(linger=0)
    context.term()


CHILD = (
    "import asyncio, sys; from tests.isolation.test_rpc import child_main; "
    "asyncio.run(child_main(sys.argv[1]))"
)


@dataclasses.dataclass
class Child:
    peer: Peer
    process: asyncio.subprocess.Process
    worker: Any
    controls: list[tuple[str, Any]]
    run: asyncio.Task[None]
    event: Callable[[str], asyncio.Event]


@contextlib.asynccontextmanager
async def child_process(tmp_path: Path) -> AsyncIterator[Child]:
    controls: list[tuple[str, Any]] = []
    events: dict[str, asyncio.Event] = {}

    def event(kind: str) -> asyncio.Event:
        return events.setdefault(kind, asyncio.Event())

    def on_control(kind: str, body: Any) -> None:
        controls.append((kind, body))
        event(kind).set()

    context = zmq.asyncio.Context()
    socket = context.socket(zmq.PAIR)
    endpoint = f"ipc://{ipc_dir(tmp_path)}/child"
    try:
        socket.bind(endpoint)
        peer = Peer(socket, component="worker-child", on_control=on_control)
        peer.serve("prices", Prices(), Prices)
        run = asyncio.create_task(peer.run())
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, endpoint, cwd=ROOT, env=env
        )
        try:
            with anyio.fail_after(30):
                await event("ready").wait()
            yield Child(peer, process, peer.proxy("worker", Worker), controls, run, event)
        finally:
            if process.returncode is None:
                with contextlib.suppress(Exception):
                    peer.send_control("stop")
                try:
                    with anyio.fail_after(10):
                        await process.wait()
                except TimeoutError:
                    process.kill()
            await process.wait()
            await peer.aclose()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    finally:
        socket.close(linger=0)
        context.term()


async def test_calls_and_streams_cross_a_real_process(open_fds: None, tmp_path: Path) -> None:
    """The parent calls the child, which calls back into the parent while answering; streams
    and remote errors (a ValueError two hops away stays a ValueError) cross too."""
    async with child_process(tmp_path) as child:
        with anyio.fail_after(20):
            quote = await child.worker.quote(Pair("ETH", "USD"))
            assert quote == Quote(Pair("ETH", "USD"), 206.0, child.process.pid)
            quotes = await asyncio.gather(
                *(child.worker.quote(Pair("X" * n, "Y")) for n in range(1, 50))
            )
            assert [q.price for q in quotes] == [(100.0 + n) * 2 for n in range(1, 50)]
            assert [n async for n in child.worker.count(500)] == list(range(500))
            with pytest.raises(ValueError, match="no market for NONE/USD") as caught:
                await child.worker.quote(Pair("NONE", "USD"))
            assert caught.value.remote_type == "ValueError"  # type: ignore[attr-defined]
        assert child.process.pid != os.getpid()


async def test_child_death_fails_pending_calls_promptly(tmp_path: Path) -> None:
    async with child_process(tmp_path) as child:
        with anyio.fail_after(20):
            hanging = asyncio.ensure_future(child.worker.hang())
            await child.event("hanging").wait()
            child.process.send_signal(signal.SIGKILL)
            await child.process.wait()
            child.peer.fail_pending(ComponentCrashed("worker-child was killed by SIGKILL"))
            with pytest.raises(ComponentCrashed) as caught:
                await hanging
        assert str(caught.value) == "Worker.hang failed: worker-child was killed by SIGKILL"
        assert (caught.value.component, caught.value.method) == ("Worker", "hang")


async def test_garbage_from_a_child_raises_protocol_error_and_the_parent_lives_on(
    tmp_path: Path,
) -> None:
    async with child_process(tmp_path) as child:
        with anyio.fail_after(20):
            with contextlib.suppress(ComponentCrashed):
                await child.worker.send_garbage()
            with pytest.raises(ProtocolError, match="not valid msgpack"):
                await child.run
            with pytest.raises(ComponentCrashed, match=r"Worker\.quote failed"):
                await child.worker.quote(Pair("A", "B"))
        assert child.peer.state is PeerState.BROKEN
