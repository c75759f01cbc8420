"""Network Time Security (RFC 8915), sans-IO: NTS-KE records, NTPv4 with NTS extension fields, cookies.

No trio, no OpenSSL: the TLS session, sockets and timers belong to the nodes (:mod:`evsim.nodes.nts`), which
feed these cores bytes and times.

* :mod:`evsim.nts.records`: NTS-KE messages (records, :class:`~evsim.nts.records.RecordReader`, request and
  response checks, the exporter label and context).
* :mod:`evsim.nts.ntp`: NTPv4 header, timestamps, extension fields, offset and delay.
* :mod:`evsim.nts.cookies`: the server's master keys (rotation) and cookie format.
* :mod:`evsim.nts.exchange`: the client association (:class:`~evsim.nts.exchange.NtsAssociation`) and the
  stateless server (:class:`~evsim.nts.exchange.NtsServerCore`).
"""

from evsim.nts.cookies import CookieContent, MasterKeys
from evsim.nts.errors import KeProtocolError, NtpRejected, NtsError
from evsim.nts.exchange import KissOfDeath, NtpSample, NtsAssociation, NtsServerCore, ServerReply
from evsim.nts.records import KeRequest, KeResponse, RecordReader

__all__ = [
    "CookieContent",
    "KeProtocolError",
    "KeRequest",
    "KeResponse",
    "KissOfDeath",
    "MasterKeys",
    "NtpRejected",
    "NtpSample",
    "NtsAssociation",
    "NtsError",
    "NtsServerCore",
    "RecordReader",
    "ServerReply",
]
