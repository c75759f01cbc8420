"""Secured links to servers: network + TLS + WebSocket, and failover between a server's endpoints.

:mod:`evsim.link.service` holds a :class:`~evsim.link.service.Service` (endpoints, failover policy, back-off),
its sans-IO :class:`~evsim.link.service.EndpointPlanner` and :func:`~evsim.link.service.connect_service`;
:mod:`evsim.link.slots` gives the OCPP network-profile walk its TLS endpoints. Everything here sits above
``net``, ``tls``, ``ws`` and ``ocpp`` and below the nodes.
"""
