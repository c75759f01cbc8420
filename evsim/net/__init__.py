"""Network backends: :class:`VirtualNetwork` (in memory, with faults) and :class:`TcpNetwork` (loopback), streams
and datagrams (``bind_datagram``)."""

from evsim.net.base import (
    MAX_DATAGRAM,
    DatagramNetwork,
    DatagramSocket,
    DatagramStatistics,
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
from evsim.net.udp import UdpSocket
from evsim.net.virtual import (
    LinkPolicy,
    VirtualDatagramSocket,
    VirtualListener,
    VirtualNetwork,
    VirtualStream,
    memory_pipe_pair,
)

__all__ = [
    "MAX_DATAGRAM",
    "DatagramNetwork",
    "DatagramSocket",
    "DatagramStatistics",
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
    "UdpSocket",
    "VirtualDatagramSocket",
    "VirtualListener",
    "VirtualNetwork",
    "VirtualStream",
    "is_loopback",
    "memory_pipe_pair",
]
