"""A station's configuration slots with the link layer's TLS endpoints.

:mod:`evsim.ocpp.netprofile` walks a station's configuration slots without knowing what a slot's own TLS
settings are: its :class:`~evsim.ocpp.netprofile.NetworkSlot` and
:class:`~evsim.ocpp.netprofile.NetworkProfiles` are generic in them and only check that they are for the
slot's URL and secure exactly when the URL is ``wss://``. Here those settings are an
:class:`~evsim.link.service.Endpoint` (TLS profile, trust store, client identity, SNI, peer policy), which the
station's connect step turns into a TLS client configuration and a server name. Nodes and scenarios use
these two names.
"""

from __future__ import annotations

from typing import TypeAlias

from evsim.link.service import Endpoint
from evsim.ocpp import netprofile

__all__ = ["NetworkProfiles", "NetworkSlot"]

NetworkSlot: TypeAlias = netprofile.NetworkSlot[Endpoint]
"""A configuration slot whose own TLS settings, if any, are an :class:`~evsim.link.service.Endpoint`."""

NetworkProfiles: TypeAlias = netprofile.NetworkProfiles[Endpoint]
"""The slot walk over such slots."""
