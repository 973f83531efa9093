"""CurveZMQ over TCP: the channel of a child that another system runs, maybe on another host.

A child forked from the zygote talks to the parent over an ``ipc://`` socket in a private
directory. A child placed by a cluster scheduler (a Ray actor) may run on another machine, so
its channel is TCP — and a TCP port is never left open to whoever finds it:

* the parent's end is a CurveZMQ **server**: every byte on the wire is encrypted and
  authenticated with a key pair made for this parent;
* it accepts exactly the clients it issued a key pair to: a ZAP handler on the parent's ZeroMQ
  context (:class:`SecureChannels`) checks each connecting client's public key against the
  keys of the channels currently open, and refuses any other;
* each channel has its own client key pair, made here and handed to its child (through the
  scheduler's own authenticated transport, with the rest of the child's start-up data); it is
  revoked when the channel closes.

The child end (:func:`connect_secure`) sets its key pair and the server's public key before it
connects; the handshake token of the child protocol is checked on top, as for a local child.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from ._channel import CONTROL_SOCKET_TYPE

__all__ = ["SecureChannel", "SecureChannels", "connect_secure"]

#: The ZAP domain of the channels; the handler answers only for it.
_DOMAIN = "minions"


@dataclass(frozen=True)
class SecureChannel:
    """The parent's end of one secure channel: its bound socket, where the child connects, and
    the keys the child needs (``child_keys``, plain data for its start-up message)."""

    socket: zmq.asyncio.Socket
    endpoint: str
    server_public: str
    client_public: str
    client_secret: str

    def child_keys(self) -> dict[str, str]:
        return {
            "server_public": self.server_public,
            "client_public": self.client_public,
            "client_secret": self.client_secret,
        }


class _Allowed:
    """The ZAP credentials check: only the client keys of open channels pass."""

    def __init__(self) -> None:
        self.keys: set[bytes] = set()  # z85 public keys, as the ZAP handler passes them

    def callback(self, domain: str, key: bytes) -> bool:
        return domain == _DOMAIN and key in self.keys


class SecureChannels:
    """Opens CurveZMQ-secured TCP channels on ``host`` for children placed elsewhere.

    One per ZeroMQ context (the ZAP handler is the context's); create it inside the event loop
    that serves the channels, and ``close()`` it once every channel is closed.
    """

    def __init__(self, context: zmq.asyncio.Context, host: str) -> None:
        if not zmq.has("curve"):
            raise RuntimeError(
                "this libzmq has no CURVE security, so no TCP channel can be secured; install "
                "pyzmq's wheels (they bundle a libzmq with CURVE)"
            )
        self._context = context
        self._host = host
        self._allowed = _Allowed()
        self._server_public, self._server_secret = zmq.curve_keypair()
        self._auth = AsyncioAuthenticator(context)
        self._auth.start()
        self._auth.configure_curve_callback(_DOMAIN, self._allowed)
        self._open: dict[zmq.asyncio.Socket, bytes] = {}

    def __repr__(self) -> str:
        return f"<SecureChannels on {self._host}: {len(self._open)} open>"

    def open(self) -> SecureChannel:
        """Bind a new channel's socket on a free port of the host; only its child may connect."""
        client_public, client_secret = zmq.curve_keypair()
        socket = self._context.socket(CONTROL_SOCKET_TYPE)
        socket.setsockopt(zmq.LINGER, 0)
        socket.curve_server = True
        socket.curve_publickey = self._server_public
        socket.curve_secretkey = self._server_secret
        socket.zap_domain = _DOMAIN.encode()
        try:
            port = socket.bind_to_random_port(f"tcp://{self._host}")
        except zmq.ZMQError:
            socket.close()
            raise
        self._allowed.keys.add(client_public)
        self._open[socket] = client_public
        return SecureChannel(
            socket=socket,
            endpoint=f"tcp://{self._host}:{port}",
            server_public=self._server_public.decode("ascii"),
            client_public=client_public.decode("ascii"),
            client_secret=client_secret.decode("ascii"),
        )

    def close_channel(self, socket: zmq.asyncio.Socket) -> None:
        """Revoke the channel's client key and close its socket."""
        key = self._open.pop(socket, None)
        if key is not None:
            self._allowed.keys.discard(key)
        socket.close(linger=0)

    def close(self) -> None:
        for socket in list(self._open):
            self.close_channel(socket)
        with contextlib.suppress(Exception):
            self._auth.stop()


def connect_secure(context: zmq.asyncio.Context, keys: Mapping[str, Any]) -> zmq.asyncio.Socket:
    """The child's end of a secure channel, keyed but not yet connected (the child session
    connects it); ``keys`` are :meth:`SecureChannel.child_keys`."""
    socket = context.socket(CONTROL_SOCKET_TYPE)
    socket.curve_serverkey = str(keys["server_public"]).encode("ascii")
    socket.curve_publickey = str(keys["client_public"]).encode("ascii")
    socket.curve_secretkey = str(keys["client_secret"]).encode("ascii")
    return socket
