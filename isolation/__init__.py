"""Isolation: run components in child processes and reach them through proxies.

Calls, streams and lifecycle messages move between processes as msgpack over ZeroMQ; this
package moves them and reports a child's death, the runtime decides what to do about it.
"""

from ._errors import ChildStartError as ChildStartError
from ._errors import ComponentCrashed as ComponentCrashed
from ._errors import IsolationError as IsolationError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteError as RemoteError
from ._errors import SandboxUnavailable as SandboxUnavailable
from ._errors import SerializationError as SerializationError
from ._exit import ChildExit as ChildExit
from ._interface import RemoteMethod as RemoteMethod
from ._interface import check_remote_interface as check_remote_interface
from ._interface import remote_interface as remote_interface
from ._limits import SANDBOX_PARTS as SANDBOX_PARTS
from ._limits import Isolation as Isolation
from ._limits import Sandbox as Sandbox
from ._platform import unsupported_reason as unsupported_reason
from ._process import ChildProcess as ChildProcess
from ._process import ChildState as ChildState
from ._process import spawn as spawn
from ._protocol import DEFAULT_MAX_FRAME_BYTES as DEFAULT_MAX_FRAME_BYTES
from ._protocol import unpack_untrusted as unpack_untrusted
from ._remote import RemoteChild as RemoteChild
from ._remote import remote_config as remote_config
from ._remote_child import serve_remote as serve_remote
from ._router import Router as Router
from ._router import RouterStatistics as RouterStatistics
from ._router import check_route_by as check_route_by
from ._rpc import Peer as Peer
from ._rpc import PeerState as PeerState
from ._rpc import PeerStatistics as PeerStatistics
from ._secure import SecureChannel as SecureChannel
from ._secure import SecureChannels as SecureChannels
from ._spec import ChildSpec as ChildSpec
from ._spec import reference as reference
from ._spec import resolve as resolve
from ._stream import DEFAULT_STREAM_CREDIT as DEFAULT_STREAM_CREDIT
from ._zygote import Zygote as Zygote

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_STREAM_CREDIT",
    "SANDBOX_PARTS",
    "ChildExit",
    "ChildProcess",
    "ChildSpec",
    "ChildStartError",
    "ChildState",
    "ComponentCrashed",
    "Isolation",
    "IsolationError",
    "Peer",
    "PeerState",
    "PeerStatistics",
    "ProtocolError",
    "RemoteChild",
    "RemoteError",
    "RemoteMethod",
    "Router",
    "RouterStatistics",
    "Sandbox",
    "SandboxUnavailable",
    "SecureChannel",
    "SecureChannels",
    "SerializationError",
    "Zygote",
    "check_remote_interface",
    "check_route_by",
    "reference",
    "remote_config",
    "remote_interface",
    "resolve",
    "serve_remote",
    "spawn",
    "unpack_untrusted",
    "unsupported_reason",
]
