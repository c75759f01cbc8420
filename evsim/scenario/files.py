"""Scenario values of HTTPS file servers: firmware releases, file servers, file services and transfer settings.

``[firmware.<name>]`` is a signed test image (its ``version`` and payload ``size``), ``[file_servers.<name>]`` an
HTTPS server with its own TLS profile and certificate serving some releases (``firmware``; ``tampered`` ones
with one byte flipped) and taking log uploads (``accept_uploads``), ``[file_services.<name>]`` the mirrors of a
service by priority as the ``stations`` it lists see them (each mirror with its own TLS profile, trust store,
pins and client certificate), and ``[file_transfers]`` the stations' retries, install time and log size.
"""

from __future__ import annotations

import attrs

__all__ = ["FileRouteSpec", "FileServerSpec", "FileServiceSpec", "FileTransfersSpec", "FirmwareSpec"]


@attrs.frozen
class FirmwareSpec:
    """A ``[firmware.<name>]`` release: ``version`` (what a station reports) and ``size`` (payload bytes)."""

    name: str
    version: str
    size: int = 256 * 1024


@attrs.frozen
class FileServerSpec:
    """A ``[file_servers.<name>]`` table.

    Attributes:
        name: node name.
        host: network host (its certificate's name).
        port: listening port.
        tls_profile: its TLS profile's name.
        client_certificates: require a station certificate (mutual TLS).
        firmware: releases (names) it serves.
        tampered: releases it serves with one byte flipped.
        accept_uploads: takes log uploads.
        line: line of the table in the file.
    """

    name: str
    host: str
    port: int = 443
    tls_profile: str = "default"
    client_certificates: bool = False
    firmware: tuple[str, ...] = ()
    tampered: tuple[str, ...] = ()
    accept_uploads: bool = False
    line: int | None = attrs.field(default=None, eq=False)


@attrs.frozen
class FileRouteSpec:
    """One mirror of a file service: the server, its priority (lower first) and the endpoint's own TLS settings
    (None: the station group's)."""

    server: str
    priority: int = 0
    tls_profile: str | None = None
    trust: str | None = None
    pins: str | None = None
    client_certificate: bool = False


@attrs.frozen
class FileServiceSpec:
    """A ``[file_services.<name>]`` table: its mirrors by priority and the station groups that use it."""

    name: str
    mirrors: tuple[FileRouteSpec, ...]
    stations: tuple[str, ...] = ()


@attrs.frozen
class FileTransfersSpec:
    """``[file_transfers]``: retries and their interval when a request names none, install time, log size."""

    retries: int = 2
    retry_interval: float = 60.0
    install: float = 30.0
    log_bytes: int = 64 * 1024
