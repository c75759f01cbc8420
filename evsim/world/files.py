"""HTTPS file servers, file services and firmware / log operations in a world.

Theory of operation. :meth:`WorldFiles.start_file_server` starts a :class:`~evsim.nodes.fileserver.FileServer`
with a certificate of the run's PKI for its host and its own TLS settings (a :class:`~evsim.world.specs.Tls`:
profile, certificate, ``client_trust`` when it asks stations for their certificates). It serves signed test
images of the world's firmware releases under ``/firmware/<version>.bin`` (a *tampered* one with one byte
flipped, so its signature fails) and, with ``accept_uploads``, takes log uploads under ``/logs/``.

:meth:`WorldFiles.add_file_service` names the mirrors of a service as stations see them (:class:`FileRoute`:
the server, a priority, the endpoint's own TLS profile, trust store, pins and whether the station presents its
certificate). A station group started with ``files=("firmware", "logs")`` gets a
:class:`~evsim.nodes.filetransfer.FileTransferConfig` per station: those services (each endpoint with the
station's own certificate and pin policy), the group's trust for other URLs and the world's manufacturer root
(:attr:`WorldFiles.manufacturer_root`, made once per run) as ``ManufacturerRootCertificate``.

:meth:`WorldFiles.update_firmware` and :meth:`WorldFiles.get_log` go through the CSMS holding each station's
session (UpdateFirmware, L01; GetLog, N01), spread over a window like the certificate operations of
:mod:`evsim.world.lifecycle`; the URL a station gets names the service's first mirror, and the station walks
the service's mirrors from there. The CSMS records each answer (``file_request``, with the station, the action
and the status); a station that could not be reached is recorded as ``certificate_not_sent`` at the
``timeline`` node, as for the certificate operations.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from evsim.backoff import RetryBackOff
from evsim.errors import ConfigError
from evsim.link.service import Endpoint, Service
from evsim.nodes.csms import Csms
from evsim.nodes.fileserver import FileServer, FileServerConfig
from evsim.nodes.filetransfer import FileTransferConfig
from evsim.pki import CertificateAuthority, CertKey
from evsim.pki.firmware import build_test_image, issue_firmware_signer, sign_image
from evsim.tls import Identity, PeerPolicy, ServerTls, TlsProfile, TrustStore
from evsim.world.base import Selector
from evsim.world.lifecycle import WorldLifecycle
from evsim.world.nodes import NodeHandle, StationGroup
from evsim.world.specs import PinSetSpec, Tls, TrustSpec

__all__ = [
    "FileRoute",
    "FileServerNode",
    "FileSettings",
    "FirmwareRelease",
    "WorldFiles",
    "firmware_path",
    "tamper",
]

FIRMWARE_PREFIX = "/firmware"
"""Where a file server serves firmware images."""
DEFAULT_IMAGE_SIZE = 256 * 1024
"""Payload bytes of a release whose size is not given."""
LOG_PREFIX = "/logs"
"""Where a log server takes uploads."""


def firmware_path(version: str) -> str:
    """The path of a release's image on a file server."""
    return f"{FIRMWARE_PREFIX}/{version}.bin"


def tamper(image: bytes) -> bytes:
    """The image with one byte in its middle flipped: it still installs, but its signature fails."""
    changed = bytearray(image)
    changed[len(changed) // 2] ^= 0xFF
    return bytes(changed)


@attrs.frozen
class FirmwareRelease:
    """A signed test image of the world's manufacturer (:func:`~evsim.pki.firmware.build_test_image`).

    Attributes:
        version: what a station reports after installing it.
        size: the payload's bytes (the image adds a one-line header).
        image: the bytes.
        signature: base64 signature over the image (UpdateFirmware ``signature``).
        signing_certificate: PEM of the signing certificate (UpdateFirmware ``signingCertificate``).
    """

    version: str
    size: int
    image: bytes = attrs.field(repr=False)
    signature: str = attrs.field(repr=False)
    signing_certificate: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class FileRoute:
    """One mirror of a file service, as the stations see it.

    Attributes:
        server: the file server (its name).
        priority: lower is tried first.
        profile: the endpoint's own TLS profile; None: the group's.
        trust: the endpoint's own trust; None: the group's.
        pins: the endpoint's own pins; None: none.
        client_certificate: present the station's certificate (the server asks for one).
    """

    server: str
    priority: int = 0
    profile: TlsProfile | None = None
    trust: TrustSpec | TrustStore | None = None
    pins: PinSetSpec | None = None
    client_certificate: bool = False


class FileServerNode(NodeHandle):
    """A file server in the world (``node.server`` is the :class:`~evsim.nodes.fileserver.FileServer`)."""

    kind = "file_server"

    def __init__(self, server: FileServer, *, tls: Tls) -> None:
        super().__init__(server.name, server.config.host, server.serve)
        self.server = server
        self.tls = tls
        self.port = server.config.port


@attrs.frozen
class FileSettings:
    """How a group's stations transfer files: ``retries`` and ``retry_interval`` when a request names none,
    ``install`` seconds per image, the largest ``log_bytes`` uploaded."""

    retries: int = 2
    retry_interval: float = 60.0
    install: float = 30.0
    log_bytes: int = 64 * 1024


class WorldFiles(WorldLifecycle):
    """File servers, file services and firmware / log operations of a world (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.file_servers: dict[str, FileServerNode] = {}
        self.file_services: dict[str, tuple[FileRoute, ...]] = {}
        self.releases: dict[str, FirmwareRelease] = {}
        self._manufacturer: tuple[CertificateAuthority, CertKey] | None = None
        self._requests = 0

    # ------------------------------------------------------------------ firmware

    @property
    def manufacturer_root(self) -> CertificateAuthority:
        """The manufacturer root of the run (signs the firmware signing certificate), made on first use."""
        return self._signer()[0]

    def _signer(self) -> tuple[CertificateAuthority, CertKey]:
        if self._manufacturer is None:
            start = self.clock.start_utc - _dt.timedelta(days=1)
            root = CertificateAuthority.create_root(
                "evsim Manufacturer Root CA", self.pki.organization, now=start
            )
            self._manufacturer = (root, issue_firmware_signer(root, now=start))
        return self._manufacturer

    def release(self, version: str, size: int | None = None) -> FirmwareRelease:
        """The signed test image of ``version`` with a payload of ``size`` bytes (default 256 KiB; made once,
        later calls return it).

        Raises:
            ConfigError: ``version`` was made with another size.
        """
        made = self.releases.get(version)
        if made is not None:
            if size is not None and made.size != size:
                raise ConfigError("a release has one size", path="size", value=size, fix=f"use {made.size}")
            return made
        size = DEFAULT_IMAGE_SIZE if size is None else size
        signer = self._signer()[1]
        image = build_test_image(version, size)
        made = FirmwareRelease(version, size, image, sign_image(image, signer), signer.cert_pem().decode())
        self.releases[version] = made
        return made

    # ------------------------------------------------------------------ servers and services

    def select(self, selector: Selector) -> list[str]:
        """As :meth:`~evsim.world.base.WorldBase.select`, and a file server's name is its host."""
        if isinstance(selector, str) and selector in self.file_servers:
            return [self.file_servers[selector].host]
        return super().select(selector)

    async def start_file_server(
        self,
        name: str,
        *,
        host: str | None = None,
        port: int | None = None,
        tls: Tls | None = None,
        client_certificates: bool = False,
        firmware: Sequence[str] = (),
        tampered: Sequence[str] = (),
        files: Mapping[str, bytes] | None = None,
        accept_uploads: bool = False,
    ) -> FileServerNode:
        """Start an HTTPS file server; returns once it listens.

        Args:
            name: its name (events, selectors, :class:`FileRoute`).
            host: default ``<name>.evsim.test``.
            port: default 443 in memory, a free port on loopback TCP.
            tls: its profile and certificate; ``client_trust`` checks station certificates.
            client_certificates: require a client certificate (mutual TLS).
            firmware: versions of :meth:`release` it serves.
            tampered: versions it serves with one byte flipped (:func:`tamper`).
            files: more path -> content.
            accept_uploads: take log uploads (under ``/logs/``).
        """
        tls = tls or Tls()
        host = host or f"{name}.evsim.test"
        if name in self.file_servers:
            raise ConfigError(f"a node named {name!r} exists already", value=name, fix="give it another name")
        self._claim(name, host)
        served = dict(files or {})
        for version in firmware:
            served[firmware_path(version)] = self.release(version).image
        for version in tampered:
            served[firmware_path(version)] = tamper(self.release(version).image)
        identity = Identity.from_cert_key(self.pki.server_certificate(host, tls.certificate))
        if client_certificates:
            server_tls = ServerTls.build(
                tls.profile, identity, trust=self._client_trust(tls), client_auth="required"
            )
        else:
            server_tls = ServerTls.build(tls.profile, identity)
        server = FileServer(
            FileServerConfig(
                name=name,
                host=host,
                port=self._port(port),
                files=served,
                accept_uploads=accept_uploads,
                upload_prefix=LOG_PREFIX + "/",
            ),
            network=self.network,
            server_tls=server_tls,
            clock=self.clock,
            recorder=self.recorder,
        )
        node = FileServerNode(server, tls=tls)
        self.file_servers[name] = node
        await node.start_in(self.nursery)
        assert server.address is not None
        node.port = server.address[1]
        return node

    def add_file_service(self, name: str, routes: Sequence[FileRoute]) -> None:
        """Name a file service: its mirrors as stations see them (started later or already).

        Raises:
            ConfigError: no routes, or the name is taken.
        """
        if not routes:
            raise ConfigError("a file service needs at least one mirror", path=name, fix="add a FileRoute")
        if name in self.file_services:
            raise ConfigError(f"file service {name!r} exists already", value=name)
        self.file_services[name] = tuple(sorted(routes, key=lambda r: r.priority))

    def _url(self, route: FileRoute) -> str:
        node = self.file_servers.get(route.server)
        if node is None:
            raise ConfigError(
                f"file server {route.server!r} is not started",
                value=route.server,
                fix="start_file_server() first",
            )
        return f"https://{node.host}:{node.port}"

    def service_url(self, service: str) -> str:
        """The URL of a service's first mirror (without a path: firmware is under ``/firmware/``, logs go to
        ``/logs/``).

        Raises:
            ConfigError: no such service.
        """
        if service not in self.file_services:
            raise ConfigError(f"no file service {service!r}", value=service, fix="add_file_service() first")
        return self._url(self.file_services[service][0])

    def files_config(
        self, group: StationGroup, sid: str, services: Sequence[str], settings: FileSettings
    ) -> FileTransferConfig:
        """A station's file-transfer settings: ``services`` (each of its mirrors with the endpoint's TLS, the
        station's certificate where a route asks for it), the group's trust for other URLs, the manufacturer
        root."""
        built = []
        for name in services:
            if name not in self.file_services:
                raise ConfigError(f"no file service {name!r}", value=name, fix="add_file_service() first")
            endpoints = []
            for route in self.file_services[name]:
                peer: PeerPolicy | None = None
                if route.pins is not None:
                    peer = self._station_peer_policy(
                        sid, attrs.evolve(group.tls, pins=route.pins), f"{sid}:{route.server}"
                    )
                endpoints.append(
                    Endpoint(
                        route.server,
                        self._url(route) + "/",
                        priority=route.priority,
                        profile=route.profile or group.tls.profile,
                        trust=self.trust_store(
                            route.trust or group.tls.trust, None if route.trust else group.roots
                        ),
                        identity=self._station_identity(group, sid) if route.client_certificate else None,
                        peer=peer,
                    )
                )
            built.append(
                Service(
                    name,
                    tuple(endpoints),
                    backoff=RetryBackOff(wait_minimum=5, random_range=5, repeat_times=2),
                )
            )
        return FileTransferConfig(
            services=tuple(built),
            default_trust=self.trust_store(group.tls.trust, group.roots),
            default_profile=group.tls.profile,
            manufacturer_roots=(self.manufacturer_root.cert,),
            retries=settings.retries,
            retry_interval_s=settings.retry_interval,
            install_s=settings.install,
            log_bytes=settings.log_bytes,
        )

    # ------------------------------------------------------------------ operations over OCPP

    def _file_fan_out(self, action: str, target: Selector, spread: float, send: Any) -> None:
        """Like the certificate operations' fan-out, recording each answer as ``file_request``."""

        async def one(csms: Csms, sid: str) -> object:
            response: dict[str, Any] = await send(csms, sid)
            self.recorder.emit(
                csms.config.name,
                "file_request",
                station=sid,
                action=action,
                status=str(response.get("status")),
            )
            return response

        self._fan_out(action, target, spread, one)

    def update_firmware(
        self,
        target: Selector,
        version: str,
        *,
        service: str,
        spread: float = 0.0,
        retries: int | None = None,
        retry_interval: int | None = None,
    ) -> None:
        """UpdateFirmware (L01) for release ``version`` from ``service`` to each station of ``target``, spread
        over ``spread`` seconds; returns at once."""
        release = self.release(version)
        location = self.service_url(service) + firmware_path(version)
        self._requests += 1
        request_id = self._requests

        async def send(csms: Csms, sid: str) -> dict[str, Any]:
            return await csms.update_firmware(
                sid,
                request_id=request_id,
                location=location,
                signing_certificate=release.signing_certificate,
                signature=release.signature,
                retries=retries,
                retry_interval=retry_interval,
            )

        self._file_fan_out("UpdateFirmware", target, spread, send)

    def get_log(
        self,
        target: Selector,
        *,
        service: str,
        spread: float = 0.0,
        log_type: str = "DiagnosticsLog",
        retries: int | None = None,
        retry_interval: int | None = None,
    ) -> None:
        """GetLog (N01) to each station of ``target``, uploading to ``service``, spread over ``spread`` seconds;
        returns at once."""
        location = self.service_url(service) + LOG_PREFIX
        self._requests += 1
        request_id = self._requests

        async def send(csms: Csms, sid: str) -> dict[str, Any]:
            return await csms.get_log(
                sid,
                request_id=request_id,
                remote_location=f"{location}/{sid}",
                log_type=log_type,
                retries=retries,
                retry_interval=retry_interval,
            )

        self._file_fan_out("GetLog", target, spread, send)
