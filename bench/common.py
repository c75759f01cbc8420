"""Shared pieces of the benchmark: the result record, a throwaway PKI and process probes.

Everything here is benchmark scaffolding, not simulator code: the PKI is a minimal root CA plus one
ECDSA P-256 server certificate for ``localhost`` / ``127.0.0.1``, written to a directory the caller
owns (normally a temporary one).
"""

from __future__ import annotations

import datetime
import ipaddress
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "LOADED_WALL_OVER_CPU",
    "Result",
    "cpu_s",
    "load_note",
    "make_bench_pki",
    "raise_nofile",
    "rss_kib",
]


@dataclass
class Result:
    """One benchmark row; the field names are the JSON keys a peer prints."""

    name: str
    boot_storm_s: float
    rtt_per_s: float
    cpu_us_per_rtt: float
    kib_per_station: float
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        return cls(
            name=str(data["name"]),
            boot_storm_s=float(data["boot_storm_s"]),
            rtt_per_s=float(data["rtt_per_s"]),
            cpu_us_per_rtt=float(data["cpu_us_per_rtt"]),
            kib_per_station=float(data["kib_per_station"]),
            notes=str(data.get("notes", "")),
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evsim bench"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_bench_pki(directory: Path | str) -> dict[str, Path]:
    """Create a throwaway root CA and a ``localhost`` server certificate (ECDSA P-256) in ``directory``.

    Returns paths keyed ``ca`` (root certificate), ``ca_key``, ``cert`` (server leaf) and ``key``
    (server private key), all PEM.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("evsim bench root CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    paths = {
        "ca": out / "bench-root-ca.pem",
        "ca_key": out / "bench-root-ca.key",
        "cert": out / "bench-server.pem",
        "key": out / "bench-server.key",
    }
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths["ca_key"], ca_key)
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths["key"], key)
    return paths


def rss_kib() -> int:
    """Resident set size of this process in KiB (``VmRSS`` from ``/proc/self/status``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def cpu_s() -> float:
    """CPU time (user + system, all threads) consumed by this process, in seconds."""
    return time.process_time()


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit.

    A 1000-station run in one process holds 2000 sockets (both ends) plus the listener.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        target = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    else:
        target = hard
    if soft != target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
    return target


LOADED_WALL_OVER_CPU = 1.3
"""A single-threaded, CPU-bound benchmark whose wall time exceeds its CPU time by more than this factor was
sharing its core (30 %: above the few per cent that page faults and timer ticks explain on an idle machine)."""


def load_note(wall_s: float, cpu_seconds: float) -> str | None:
    """A note for the output when a single-threaded, CPU-bound run was slowed by other processes.

    Returns None when ``wall_s <= LOADED_WALL_OVER_CPU * cpu_seconds`` (the machine looked idle enough).
    """
    if cpu_seconds <= 0 or wall_s <= LOADED_WALL_OVER_CPU * cpu_seconds:
        return None
    return (
        f"taken on a loaded machine: wall {wall_s:.1f} s vs CPU {cpu_seconds:.1f} s "
        f"({wall_s / cpu_seconds:.1f}x); CPU figures are the ones to read"
    )
