"""The secure TCP channel of remote children: CurveZMQ, and only the client it was made for.

A real server socket on 127.0.0.1, real clients: one with the channel's keys, one with a key
pair of its own (knowing the server's public key), one without encryption. The socket monitor
reports each refused handshake; the only message the server ever receives is the right client's.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from isolation import SecureChannels
from isolation._secure import connect_secure

pytestmark = pytest.mark.anyio

LIMIT = 10.0
_REFUSED = {zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL}


async def _refusal(monitor: zmq.asyncio.Socket) -> int:
    while True:
        event: dict[str, Any] = await recv_monitor_message(monitor)
        if event["event"] in _REFUSED or event["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            return int(event["event"])


async def test_a_secure_channel_takes_only_the_client_it_was_made_for(open_fds: None) -> None:
    """A client with another key pair, and one without encryption, are refused at the handshake
    (nothing they send arrives); the client holding the channel's keys is heard."""
    context = zmq.asyncio.Context()
    channels = SecureChannels(context, "127.0.0.1")
    channel = channels.open()
    monitor = channel.socket.get_monitor_socket()
    intruder = context.socket(zmq.PAIR)
    plain = context.socket(zmq.PAIR)
    child = connect_secure(context, channel.child_keys())
    try:
        with anyio.fail_after(LIMIT):
            public, secret = zmq.curve_keypair()
            intruder.curve_serverkey = channel.server_public.encode()
            intruder.curve_publickey, intruder.curve_secretkey = public, secret
            intruder.connect(channel.endpoint)
            await intruder.send(b"let me in")
            assert await _refusal(monitor) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
            plain.connect(channel.endpoint)
            await plain.send(b"no keys at all")
            assert await _refusal(monitor) in _REFUSED | {zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL}
            child.connect(channel.endpoint)
            await child.send(b"hello")
            assert await channel.socket.recv() == b"hello"
            await channel.socket.send(b"welcome")
            assert await child.recv() == b"welcome"
    finally:
        for socket in (intruder, plain, child):
            socket.close(linger=0)
        channel.socket.disable_monitor()
        monitor.close(linger=0)
        channels.close()
        context.destroy(linger=0)
    assert channel.endpoint.startswith("tcp://127.0.0.1:")
