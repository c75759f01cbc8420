"""The development PKI on disk (``evsim certs init --dir certs``).

Layout (all PEM; keys unencrypted, mode 0600; see ``certs/README.md``)::

    ca.crt, ca.key                              CSMS root CA (OCPP CSMSRootCertificate)
    server.crt, server.key                      CSMS server certificate, issued by the root: CN = host,
                                                SAN = host (+ 127.0.0.1 and ::1 for localhost), EKU
                                                serverAuth (so it never passes as a station); leaf only
    station-ca.crt, station-ca.key              Charging Station sub-CA, issued by the root
    manufacturer-root.crt, manufacturer-root.key  Manufacturer root CA (firmware signing, later)
    stations/<id>.crt, stations/<id>.key        station certificates on demand: CN = id, O = org, EKU
                                                clientAuth; the .crt holds the leaf followed by station-ca.crt

Nothing here reads the clock: ``now`` is passed in.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import itertools
import os
import re
from collections.abc import Iterable
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from evsim.errors import PkiError
from evsim.pki.ca import CLIENT_EKU, SERVER_EKU, CertificateAuthority, CertKey, common_name, organization
from evsim.pki.keys import (
    KeyType,
    check_key_strength,
    key_matches_cert,
    load_cert_file,
    load_key_file,
    write_cert_file,
    write_key_file,
)

CA_CRT, CA_KEY = "ca.crt", "ca.key"
SERVER_CRT, SERVER_KEY = "server.crt", "server.key"
STATION_CA_CRT, STATION_CA_KEY = "station-ca.crt", "station-ca.key"
MFR_CRT, MFR_KEY = "manufacturer-root.crt", "manufacturer-root.key"
STATIONS_DIR = "stations"

ALL_FILES = (CA_CRT, CA_KEY, SERVER_CRT, SERVER_KEY, STATION_CA_CRT, STATION_CA_KEY, MFR_CRT, MFR_KEY)

# OCPP identifierString (a-z A-Z 0-9 * - _ = : + | @ .), max 48, without ':' (J21 §3.1.1); we also refuse a
# leading '.' so an id can never name a hidden file or a parent directory.
_STATION_ID = re.compile(r"[A-Za-z0-9*\-_=+|@][A-Za-z0-9*\-_=+|@.]{0,47}")

# Validity in days. Roots/sub-CAs: long enough never to expire during a simulation; server: 397 days (the
# CA/Browser Forum maximum for TLS server certificates); stations: two years.
ROOT_DAYS, SUB_CA_DAYS, SERVER_DAYS, STATION_DAYS = 7300, 3650, 397, 730


def default_station_id(index: int) -> str:
    """The id ``init_dev_pki(stations=N)`` gives to station ``index`` (1-based): ``CS00001``..."""
    return f"CS{index:05d}"


def _fix(directory: Path) -> str:
    return f"run `evsim certs init --pki {directory}` (add --force to replace an existing PKI)"


def _check_station_id(station_id: str) -> None:
    if not _STATION_ID.fullmatch(station_id):
        raise PkiError(
            f"station id {station_id!r} is not a valid OCPP identity (1..48 of a-z A-Z 0-9 * - _ = + | @ ., "
            "no ':' and no leading '.')"
        )


def _server_names(host: str) -> tuple[list[str], list[str]]:
    """(dNSNames, IPs) for the CSMS certificate of ``host``."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [], [host]
    if host == "localhost":
        return [host], ["127.0.0.1", "::1"]
    return [host], []


@attrs.frozen
class DevPki:
    """A development PKI loaded from (or just written to) ``dir``.

    Attributes:
        dir: the directory.
        root: the CSMS root CA.
        server: the CSMS server certificate and key (issued by ``root``).
        station_ca: the Charging Station sub-CA (issued by ``root``).
        manufacturer_root: the manufacturer root CA.
    """

    dir: Path
    root: CertificateAuthority
    server: CertKey
    station_ca: CertificateAuthority
    manufacturer_root: CertificateAuthority

    @property
    def org(self) -> str:
        """The organization (O) of the root CA."""
        return organization(self.root.cert) or ""

    @property
    def host(self) -> str:
        """The CN of the server certificate."""
        return common_name(self.server.cert) or ""

    def path(self, name: str) -> Path:
        """Absolute path of one of the PKI's files."""
        return self.dir / name

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> DevPki:
        """Load a PKI written by :func:`init_dev_pki`.

        Args:
            directory: the PKI directory.

        Returns:
            The loaded PKI.

        Raises:
            PkiError: a file is missing or corrupt, or a key does not match its certificate; the message
                names the file and says how to regenerate.
        """
        d = Path(directory)
        fix = _fix(d)

        def ca(crt: str, key: str, parents: tuple[CertificateAuthority, ...] = ()) -> CertificateAuthority:
            cert = load_cert_file(d / crt, fix=fix)[0]
            k = load_key_file(d / key, fix=fix)
            if not key_matches_cert(k, cert):
                raise PkiError(f"{d / key}: key does not match {d / crt}; fix: {fix}")
            return CertificateAuthority(cert, k, tuple(p for a in parents for p in a.chain_to_root))

        root = ca(CA_CRT, CA_KEY)
        station_ca = ca(STATION_CA_CRT, STATION_CA_KEY, (root,))
        mfr = ca(MFR_CRT, MFR_KEY)
        server_cert = load_cert_file(d / SERVER_CRT, fix=fix)[0]
        server_key = load_key_file(d / SERVER_KEY, fix=fix)
        if not key_matches_cert(server_key, server_cert):
            raise PkiError(f"{d / SERVER_KEY}: key does not match {d / SERVER_CRT}; fix: {fix}")
        return cls(d, root, CertKey(server_cert, server_key), station_ca, mfr)

    def station(
        self,
        station_id: str,
        *,
        now: _dt.datetime,
        days: int = STATION_DAYS,
        key_type: KeyType = "ec",
        key_size: int | None = None,
    ) -> CertKey:
        """Load ``stations/<id>.crt|.key``, creating them (CN = id, O = org) if they do not exist.

        Args:
            station_id: the OCPP identity (also the certificate CN).
            now: simulation time, used only when a certificate is created.
            days: validity of a created certificate.
            key_type: key type of a created certificate.
            key_size: its key size in bits (None: the type's default).

        Returns:
            The station certificate (with the station sub-CA as intermediate) and key.

        Raises:
            PkiError: invalid id, or corrupt existing files (the message names the file).
        """
        _check_station_id(station_id)
        crt = self.dir / STATIONS_DIR / f"{station_id}.crt"
        key = self.dir / STATIONS_DIR / f"{station_id}.key"
        if crt.exists() or key.exists():
            fix = f"delete {crt} and {key} to have them re-issued"
            certs = load_cert_file(crt, fix=fix)
            k = load_key_file(key, fix=fix)
            if not key_matches_cert(k, certs[0]):
                raise PkiError(f"{key}: key does not match {crt}; fix: {fix}")
            return CertKey(certs[0], k, tuple(certs[1:]))
        issued = self.station_ca.issue_client(
            station_id,
            self.org,
            now=now,
            days=days,
            key_type=key_type,
            key_size=key_size,
            extended_key_usage=CLIENT_EKU,
        )
        write_key_file(key, issued.key)
        write_cert_file(crt, *issued.chain)
        return issued


@attrs.frozen
class CsmsPki:
    """What a CSMS needs from a PKI directory: its server certificate and key, the CA, and optionally the
    Charging Station sub-CA it signs station CSRs with.

    Only three files are required (a bring-your-own layout, e.g. made with openssl)::

        ca.crt          the CA (one or more certificates): trusted for station client certificates
        server.crt      the CSMS certificate (leaf first; intermediates may follow), issued under ca.crt
        server.key      its private key (EC, or RSA of 2048 bits or more)

    ``station-ca.crt`` with ``station-ca.key`` (as ``evsim certs init`` writes them) add the sub-CA the CSMS
    signs CSRs with (A02); without them it has no CA to sign with.

    Attributes:
        dir: the directory.
        anchors: the certificates of ``ca.crt``.
        server: the server certificate (with its intermediates) and key.
        station_ca: the station sub-CA, or None.
    """

    dir: Path
    anchors: tuple[x509.Certificate, ...]
    server: CertKey
    station_ca: CertificateAuthority | None = None

    @property
    def root_cert(self) -> x509.Certificate:
        """The first certificate of ``ca.crt``."""
        return self.anchors[0]

    @property
    def host(self) -> str:
        """The CN of the server certificate."""
        return common_name(self.server.cert) or ""

    @property
    def org(self) -> str:
        """The organization (O) of the server certificate, else of the CA, else ""."""
        return organization(self.server.cert) or organization(self.root_cert) or ""

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> CsmsPki:
        """Load ``ca.crt``, ``server.crt``, ``server.key`` and, if both exist, ``station-ca.crt|.key``.

        Raises:
            PkiError: a required file is missing or corrupt, a key does not match its certificate, or the
                server certificate is not issued under ``ca.crt`` (the message names the file).
        """
        d = Path(directory)
        fix = f"put ca.crt, server.crt and server.key in {d}, or run `evsim certs init --pki {d}`"
        anchors = tuple(load_cert_file(d / CA_CRT, fix=fix))
        chain = load_cert_file(d / SERVER_CRT, fix=fix)
        key = load_key_file(d / SERVER_KEY, fix=fix)
        if not key_matches_cert(key, chain[0]):
            raise PkiError(f"{d / SERVER_KEY}: key does not match {d / SERVER_CRT}; fix: {fix}")
        try:
            check_key_strength(key, what=f"{d / SERVER_KEY}")
        except PkiError as exc:
            raise PkiError(f"{exc}; fix: {fix}") from exc
        if not _chains_to(chain, anchors):
            raise PkiError(
                f"{d / SERVER_CRT}: not issued under {d / CA_CRT} (its issuer is "
                f"{chain[-1].issuer.rfc4514_string()!r}); fix: {fix}"
            )
        station_ca: CertificateAuthority | None = None
        if (d / STATION_CA_CRT).exists() and (d / STATION_CA_KEY).exists():
            ca_cert = load_cert_file(d / STATION_CA_CRT, fix=fix)[0]
            ca_key = load_key_file(d / STATION_CA_KEY, fix=fix)
            if not key_matches_cert(ca_key, ca_cert):
                raise PkiError(f"{d / STATION_CA_KEY}: key does not match {d / STATION_CA_CRT}; fix: {fix}")
            parents = tuple(a for a in anchors if _signed_by(ca_cert, a))
            station_ca = CertificateAuthority(ca_cert, ca_key, parents[:1])
        return cls(d, anchors, CertKey(chain[0], key, tuple(chain[1:])), station_ca)


def _signed_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _chains_to(chain: list[x509.Certificate], anchors: tuple[x509.Certificate, ...]) -> bool:
    """True when ``chain`` (leaf first) is linked by signatures and its last certificate is, or is issued by,
    one of ``anchors``."""
    for child, parent in itertools.pairwise(chain):
        if not _signed_by(child, parent):
            return False
    top = chain[-1]
    return any(top == a or _signed_by(top, a) for a in anchors)


def init_dev_pki(
    directory: str | os.PathLike[str],
    *,
    host: str = "localhost",
    org: str = "evsim",
    key_type: KeyType = "ec",
    key_size: int | None = None,
    now: _dt.datetime,
    force: bool = False,
    stations: int | Iterable[str] = 0,
    leaf_days: int | None = None,
) -> DevPki:
    """Create a development PKI in ``directory`` (see the module docstring for the layout).

    Args:
        directory: where to write (created if needed).
        host: the CSMS FQDN (server certificate CN and SAN).
        org: organization (O) of every certificate.
        key_type: ``"ec"`` (P-256) or ``"rsa"`` (2048) for all keys.
        key_size: their size in bits (None: the type's default; RSA 2048..8192, EC 256/384/521).
        now: simulation time of issuance.
        force: overwrite an existing PKI (and delete its station certificates, which the new station
            sub-CA did not issue).
        stations: a number N of station certificates to pre-create (ids ``CS00001``..), or the ids.
        leaf_days: validity of the CSMS server certificate and those station certificates, days (None:
            ``SERVER_DAYS`` and ``STATION_DAYS``).

    Returns:
        The new PKI.

    Raises:
        PkiError: files exist and ``force`` is False, bad host/ids, or a file cannot be written.
    """
    d = Path(directory)
    if not host:
        raise PkiError("host must not be empty (it is the CSMS certificate CN)")
    existing = [d / f for f in ALL_FILES if (d / f).exists()]
    if existing and not force:
        raise PkiError(
            f"{existing[0]} already exists; fix: pass force=True to replace the PKI, "
            f"or load it with DevPki.load({str(d)!r})"
        )
    ids = (
        [default_station_id(i) for i in range(1, stations + 1)]
        if isinstance(stations, int)
        else list(stations)
    )
    for sid in ids:
        _check_station_id(sid)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PkiError(f"{d}: cannot create directory ({exc})") from exc
    if force:
        sdir = d / STATIONS_DIR
        if sdir.is_dir():
            for f in sdir.iterdir():
                if f.suffix in (".crt", ".key"):
                    f.unlink()

    root = CertificateAuthority.create_root(
        f"{org} CSMS Root CA",
        org,
        now=now,
        days=ROOT_DAYS,
        key_type=key_type,
        key_size=key_size,
        path_length=1,
    )
    dns, ips = _server_names(host)
    server = root.issue_server(
        host,
        sans=dns,
        ips=ips,
        cn_in_san=bool(dns),
        org=org,
        now=now,
        days=leaf_days or SERVER_DAYS,
        key_type=key_type,
        key_size=key_size,
        extended_key_usage=SERVER_EKU,
    )
    station_ca = root.create_sub_ca(
        f"{org} Charging Station Sub-CA", org, now=now, days=SUB_CA_DAYS, key_type=key_type, key_size=key_size
    )
    mfr = CertificateAuthority.create_root(
        f"{org} Manufacturer Root CA",
        org,
        now=now,
        days=ROOT_DAYS,
        key_type=key_type,
        key_size=key_size,
        path_length=1,
    )
    for crt, key, cert, k in (
        (CA_CRT, CA_KEY, root.cert, root.key),
        (SERVER_CRT, SERVER_KEY, server.cert, server.key),
        (STATION_CA_CRT, STATION_CA_KEY, station_ca.cert, station_ca.key),
        (MFR_CRT, MFR_KEY, mfr.cert, mfr.key),
    ):
        write_key_file(d / key, k)
        write_cert_file(d / crt, cert)
    pki = DevPki(d, root, server, station_ca, mfr)
    for sid in ids:
        pki.station(sid, now=now, days=leaf_days or STATION_DAYS, key_type=key_type, key_size=key_size)
    return pki
