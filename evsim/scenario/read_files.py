"""Reading ``[firmware.<name>]``, ``[file_servers.<name>]``, ``[file_services.<name>]`` and ``[file_transfers]``
(:mod:`evsim.scenario.files`).

They are read after the station groups (a service lists the groups that use it) and before links and the
timeline (which name file servers, services and releases), every reference checked against names already read.
"""

from __future__ import annotations

from collections.abc import Mapping

from evsim.scenario.files import (
    FileRouteSpec,
    FileServerSpec,
    FileServiceSpec,
    FileTransfersSpec,
    FirmwareSpec,
)
from evsim.scenario.model import TlsProfileSpec, TrustSpec
from evsim.scenario.read_tls import TlsReader
from evsim.scenario.reader import ScenarioTable
from evsim.scenario.vocabulary import (
    FILE_ROUTE_KEYS,
    FILE_SERVER_KEYS,
    FILE_SERVICE_KEYS,
    FILE_TRANSFERS_KEYS,
    FIRMWARE_KEYS,
    MAX_FIRMWARE_BYTES,
)

_VERSION_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.+_-")


class FileReader(TlsReader):
    """The file sections of a scenario (see the module doc)."""

    def firmware_releases(self, root: ScenarioTable) -> dict[str, FirmwareSpec]:
        out: dict[str, FirmwareSpec] = {}
        for name, value in root.named_tables("firmware", "signed test images, e.g. [firmware.v2]"):
            t = ScenarioTable(
                self.ctx, root.at("firmware", name), value, FIRMWARE_KEYS, what=f"[firmware.{name}]"
            )
            t.require("version", 'add version = "2.0.0" (what a station reports after installing it)')
            version = t.string("version", "", max_len=50)
            if not set(version) <= _VERSION_CHARS:
                raise t.error(
                    "version",
                    "a version is letters, digits and . + _ -",
                    value=version,
                    fix='use e.g. "2.0.0"',
                )
            if any(f.version == version for f in out.values()):
                raise t.error(
                    "version", "two releases with one version", value=version, fix="use another version"
                )
            out[name] = FirmwareSpec(name, version, t.integer("size", 256 * 1024, 1, MAX_FIRMWARE_BYTES))
        self.nodes.firmware = {name: spec.version for name, spec in out.items()}
        return out

    def file_servers(
        self,
        root: ScenarioTable,
        profiles: Mapping[str, TlsProfileSpec],
        firmware: Mapping[str, FirmwareSpec],
    ) -> dict[str, FileServerSpec]:
        out: dict[str, FileServerSpec] = {}
        taken = set(self.nodes.names(("csms", "controller", "group"))) | set(self.nodes.station_group)
        for name, value in root.named_tables(
            "file_servers", "HTTPS file servers, e.g. [file_servers.mirror-a]"
        ):
            path = root.at("file_servers", name)
            t = ScenarioTable(self.ctx, path, value, FILE_SERVER_KEYS, what=f"[file_servers.{name}]")
            if name in taken:
                raise t.error_at(
                    path, f"{name!r} names another node already", value=name, fix="rename the server"
                )
            releases = tuple(firmware)
            example = f'["{releases[0]}"]' if releases else '["v2"]'
            out[name] = FileServerSpec(
                name=name,
                host=t.string("host", f"{name}.evsim.test", max_len=253),
                port=t.integer("port", 443, 1, 65535),
                tls_profile=t.reference(
                    "tls_profile", "default", profiles, "TLS profile", "[tls.profiles.<name>]"
                ),
                client_certificates=t.boolean("client_certificates", False),
                firmware=t.string_list("firmware", (), allowed=releases, nonempty=False, example=example),
                tampered=t.string_list("tampered", (), allowed=releases, nonempty=False, example=example),
                accept_uploads=t.boolean("accept_uploads", False),
                line=self.ctx.line(path),
            )
            both = set(out[name].firmware) & set(out[name].tampered)
            if both:
                raise t.error("tampered", "a release is served either whole or tampered", value=sorted(both))
        self.nodes.file_servers = dict(out)
        return out

    def file_services(
        self,
        root: ScenarioTable,
        profiles: Mapping[str, TlsProfileSpec],
        trust: Mapping[str, TrustSpec],
        servers: Mapping[str, FileServerSpec],
    ) -> dict[str, FileServiceSpec]:
        out: dict[str, FileServiceSpec] = {}
        example = '[{ server = "mirror-a", priority = 0 }, { server = "mirror-b", priority = 1 }]'
        for name, value in root.named_tables("file_services", "mirrors by priority, e.g. [file_services.fw]"):
            path = root.at("file_services", name)
            t = ScenarioTable(self.ctx, path, value, FILE_SERVICE_KEYS, what=f"[file_services.{name}]")
            t.require("mirrors", f"add mirrors = {example}")
            items = t._typed(
                "mirrors", lambda v: isinstance(v, list) and bool(v), "a non-empty array", example
            )
            assert isinstance(items, list)
            mirrors: list[FileRouteSpec] = []
            for i, item in enumerate(items):
                m = ScenarioTable(self.ctx, t.at("mirrors", i), item, FILE_ROUTE_KEYS, what=f"mirrors[{i}]")
                m.require("server", 'add server = "<name>" (a [file_servers.<name>])')
                server = m.reference("server", "", servers, "file server", "[file_servers.<name>]")
                priority = m.integer("priority", i, 0, 1000)
                if any(r.server == server or r.priority == priority for r in mirrors):
                    raise m.error("server", "each mirror once, each with its own priority", value=server)
                mirrors.append(
                    FileRouteSpec(
                        server=server,
                        priority=priority,
                        tls_profile=m.reference(
                            "tls_profile", "", profiles, "TLS profile", "[tls.profiles.<name>]"
                        )
                        if m.has("tls_profile")
                        else None,
                        trust=m.reference("trust", "", trust, "trust store", "[tls.trust.<name>]")
                        if m.has("trust")
                        else None,
                        pins=m.reference("pins", "", self._pin_sets, "pin set", "[tls.pins.<name>]")
                        if m.has("pins")
                        else None,
                        client_certificate=m.boolean("client_certificate", False),
                    )
                )
            groups = tuple(self.nodes.groups)
            stations = t.string_list(
                "stations", (), allowed=groups, nonempty=False, example=f'["{groups[0]}"]' if groups else ""
            )
            out[name] = FileServiceSpec(name, tuple(sorted(mirrors, key=lambda r: r.priority)), stations)
        self.nodes.file_services = dict(out)
        return out

    def file_transfers(self, root: ScenarioTable) -> FileTransfersSpec:
        t = root.sub_table("file_transfers", FILE_TRANSFERS_KEYS, "[file_transfers]")
        if t is None:
            return FileTransfersSpec()
        d = FileTransfersSpec()
        return FileTransfersSpec(
            retries=t.integer("retries", d.retries, 0, 10),
            retry_interval=t.duration("retry_interval", d.retry_interval, whole_seconds=True),
            install=t.duration("install", d.install),
            log_bytes=t.integer("log_bytes", d.log_bytes, 1, 16 * 1024 * 1024),
        )
