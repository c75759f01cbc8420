"""Network backends: :class:`VirtualNetwork` (in memory, with faults) and :class:`TcpNetwork` (loopback)."""

from evsim.net.base import (
    NetListener,
    Network,
    NetworkStatistics,
    NowaitSend,
    StreamBroken,
    StreamClosed,
    StreamStatistics,
    is_loopback,
)
from evsim.net.tcp import TcpListener, TcpNetwork, TcpStream
from evsim.net.virtual import LinkPolicy, VirtualListener, VirtualNetwork, VirtualStream, memory_pipe_pair

__all__ = [
    "LinkPolicy",
    "NetListener",
    "Network",
    "NetworkStatistics",
    "NowaitSend",
    "StreamBroken",
    "StreamClosed",
    "StreamStatistics",
    "TcpListener",
    "TcpNetwork",
    "TcpStream",
    "VirtualListener",
    "VirtualNetwork",
    "VirtualStream",
    "is_loopback",
    "memory_pipe_pair",
]
