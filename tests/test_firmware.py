"""Secure firmware update (L01) and log upload (N01): signing (sans-IO), then a CSMS, stations and HTTPS mirrors
on the in-memory network in virtual time."""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from evsim.backoff import RetryBackOff
from evsim.errors import PkiError
from evsim.link.service import Endpoint, Service
from evsim.nodes.fileserver import FileServer, FileServerConfig
from evsim.nodes.filetransfer import FileTransferConfig
from evsim.nodes.logupload import log_status_for
from evsim.nodes.station import Station
from evsim.pki import CertificateAuthority, CertKey, spki_sha256
from evsim.pki.firmware import (
    FirmwareRefused,
    build_test_image,
    check_signing_certificate,
    image_version,
    issue_firmware_signer,
    sign_image,
    verify_image,
)
from evsim.tls import Identity, PeerPolicy, ServerTls, TlsProfile
from evsim.tls.pins import Pin, PinSet
from tests.e2e_harness import Harness, harness
from tests.pki_fixtures import TEST_NOW, make_test_pki

PKI = make_test_pki(TEST_NOW)
MFR = CertificateAuthority.create_root("evsim Manufacturer Root CA", "evsim", now=TEST_NOW)
SIGNER = issue_firmware_signer(MFR, now=TEST_NOW)
OTHER_MFR = CertificateAuthority.create_root("Other Manufacturer Root CA", "other", now=TEST_NOW)
IMAGE = build_test_image("1.2.0", 200_000)
SIGNATURE = sign_image(IMAGE, SIGNER)
FAST = RetryBackOff(wait_minimum=1, random_range=0, repeat_times=0)


# ---------------------------------------------------------------- sans-IO: signing


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_a_signed_image_verifies_and_a_changed_one_does_not(key_type: str) -> None:
    signer = issue_firmware_signer(MFR, now=TEST_NOW, key_type=key_type)  # type: ignore[arg-type]
    cert = check_signing_certificate(signer.cert_pem().decode(), (MFR.cert,), now=TEST_NOW)
    signature = sign_image(IMAGE, signer)
    verify_image(IMAGE, signature, cert)
    tampered = bytearray(IMAGE)
    tampered[-1] ^= 1
    with pytest.raises(FirmwareRefused) as caught:
        verify_image(bytes(tampered), signature, cert)
    assert caught.value.reason == "signature_mismatch"


@pytest.mark.parametrize(
    ("pem", "reason"),
    [
        (lambda: issue_firmware_signer(OTHER_MFR, now=TEST_NOW).cert_pem().decode(), "cert_unknown_issuer"),
        (lambda: "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", "cert_unparsable"),
        (lambda: "", "cert_unparsable"),
        (lambda: "x" * 6000, "cert_unparsable"),
        (
            lambda: MFR.cert.public_bytes(serialization.Encoding.PEM).decode(),
            "cert_is_ca",
        ),
        (lambda: _forged_signer(), "cert_bad_signature"),
    ],
    ids=["other-root", "garbage", "empty", "too-long", "the-root-itself", "forged"],
)
def test_signing_certificates_are_checked_against_the_manufacturer_root(pem: object, reason: str) -> None:
    with pytest.raises(FirmwareRefused) as caught:
        check_signing_certificate(pem(), (MFR.cert,), now=TEST_NOW)  # type: ignore[operator]
    assert caught.value.reason == reason


def _forged_signer() -> str:
    """A certificate naming the manufacturer root as issuer, signed by another key."""
    impostor = CertificateAuthority(
        OTHER_MFR.cert, OTHER_MFR.key
    )  # same key, but we present a certificate whose issuer is MFR's subject
    cert = (
        x509.CertificateBuilder()
        .subject_name(SIGNER.cert.subject)
        .issuer_name(MFR.cert.subject)
        .public_key(SIGNER.key.public_key())
        .serial_number(7)
        .not_valid_before(TEST_NOW - dt.timedelta(hours=1))
        .not_valid_after(TEST_NOW + dt.timedelta(days=30))
        .sign(impostor.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_signing_certificate_validity_is_checked_at_the_simulation_time() -> None:
    pem = SIGNER.cert_pem().decode()
    with pytest.raises(FirmwareRefused, match="expired"):
        check_signing_certificate(pem, (MFR.cert,), now=TEST_NOW + dt.timedelta(days=3000))
    with pytest.raises(FirmwareRefused, match="valid from"):
        check_signing_certificate(pem, (MFR.cert,), now=TEST_NOW - dt.timedelta(days=2))


@pytest.mark.parametrize("signature", [None, "", "not base64!", "A" * 900])
def test_missing_or_malformed_signatures_are_refused(signature: str | None) -> None:
    with pytest.raises(FirmwareRefused):
        verify_image(IMAGE, signature, SIGNER.cert)


def test_test_images_carry_their_version_and_others_do_not_install() -> None:
    assert image_version(IMAGE) == "1.2.0"
    assert build_test_image("1.2.0", 200_000) == IMAGE  # deterministic
    for bad in (b"", b"MZ\x90\x00" * 100, IMAGE[:-1], b"EVSIM-FW/1 1.0 5\nabc"):
        with pytest.raises(FirmwareRefused) as caught:
            image_version(bad)
        assert caught.value.reason == "install_verification"
    with pytest.raises(PkiError):
        build_test_image("bad version with spaces")


# ---------------------------------------------------------------- in memory: CSMS, station, mirrors


def mirror_cert(host: str) -> CertKey:
    return _mirror_certs.setdefault(host, PKI.root.issue_server(host, now=TEST_NOW))


_mirror_certs: dict[str, CertKey] = {}


async def start_mirror(
    h: Harness,
    host: str,
    files: dict[str, bytes] | None = None,
    *,
    accept_uploads: bool = False,
    server_tls: ServerTls | None = None,
) -> FileServer:
    tls = server_tls or ServerTls.build(TlsProfile(), Identity.from_cert_key(mirror_cert(host)))
    node = FileServer(
        FileServerConfig(
            name=host,
            host=host,
            port=443,
            files=files if files is not None else {"/images/fw-1.2.0.bin": IMAGE},
            accept_uploads=accept_uploads,
        ),
        network=h.net,
        server_tls=tls,
        clock=h.clock,
        recorder=h.recorder,
    )
    await h.nursery.start(node.serve)
    return node


def firmware_service(*hosts: str, peer: dict[str, PeerPolicy] | None = None) -> Service:
    return Service(
        "firmware",
        tuple(
            Endpoint(
                f"m{i}",
                f"https://{host}/images",
                priority=i,
                trust=PKI.csms_trust(),
                peer=(peer or {}).get(host),
            )
            for i, host in enumerate(hosts)
        ),
        backoff=FAST,
    )


def files_config(*services: Service, **kw: object) -> FileTransferConfig:
    return FileTransferConfig(
        services=services,
        default_trust=PKI.csms_trust(),
        manufacturer_roots=(MFR.cert,),
        install_s=10.0,
        retry_interval_s=30.0,
        **kw,  # type: ignore[arg-type]
    )


async def online_station(h: Harness, files: FileTransferConfig, sessions: int = 0) -> Station:
    await h.start_csms()
    station = h.start_station("CS1", sessions=sessions, files=files)
    await station.wait_online()
    return station


async def until(predicate: object, limit: float = 3600) -> None:
    with trio.fail_after(limit):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110 - the recorder has no event to wait on
            await trio.sleep(1)


def statuses(h: Harness, kind: str = "firmware_status_received") -> list[str]:
    return [e.data["status"] for e in h.events(kind, "csms")]


async def test_a_signed_update_downloads_from_the_next_mirror_installs_and_reboots_to_the_new_version(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with harness() as h:
            await start_mirror(h, "fw-b.evsim.test")  # fw-a.evsim.test is down: nobody listens there
            station = await online_station(
                h, files_config(firmware_service("fw-a.evsim.test", "fw-b.evsim.test"))
            )
            response = await h.csms.update_firmware(
                "CS1",
                request_id=7,
                location="https://fw-a.evsim.test/images/fw-1.2.0.bin",
                signing_certificate=SIGNER.cert_pem().decode(),
                signature=SIGNATURE,
            )
            assert response["status"] == "Accepted"
            await until(lambda: "Installed" in statuses(h))
            assert statuses(h) == [
                "Downloading",
                "Downloaded",
                "SignatureVerified",
                "Installing",
                "InstallRebooting",
                "Installed",
            ]
            assert station.firmware.version == "1.2.0" and station.firmware.served_by == "m1"
            [downloaded] = [e for e in h.events("firmware_status", "CS1") if e.data["status"] == "Downloaded"]
            assert downloaded.data["endpoint"] == "m1" and downloaded.data["bytes"] == len(IMAGE)
            assert [e.data["reason"] for e in h.events("booted", "csms")] == ["PowerUp", "FirmwareUpdate"]
            assert [e.data["reason"] for e in h.events("connection_lost", "CS1")] == ["reboot"]
            assert "FirmwareUpdated" in [e.data["type"] for e in h.events("security_event_received", "csms")]
            assert h.csms.stations["CS1"].firmware_status == "Installed"
            [failed] = h.events("transfer_attempt_failed", "CS1")
            assert (failed.data["endpoint"], failed.data["reason"]) == ("m0", "refused")


async def test_a_signing_certificate_from_another_root_is_refused_before_any_download(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with harness() as h:
            mirror = await start_mirror(h, "fw-a.evsim.test")
            await online_station(h, files_config(firmware_service("fw-a.evsim.test")))
            other = issue_firmware_signer(OTHER_MFR, now=TEST_NOW)
            response = await h.csms.update_firmware(
                "CS1",
                request_id=1,
                location="https://fw-a.evsim.test/images/fw-1.2.0.bin",
                signing_certificate=other.cert_pem().decode(),
                signature=sign_image(IMAGE, other),
            )
            assert response["status"] == "InvalidCertificate"
            await until(lambda: h.events("security_event_received", "csms"))
            [event] = h.events("security_event_received", "csms")
            assert event.data["type"] == "InvalidFirmwareSigningCertificate"
            [refused] = h.events("firmware_refused", "CS1")
            assert refused.data["reason"] == "cert_unknown_issuer"
            assert mirror.statistics().requests == {} and statuses(h) == []


async def test_a_tampered_image_is_refused_and_the_station_keeps_its_version(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with harness() as h:
            tampered = bytearray(IMAGE)
            tampered[1000] ^= 0xFF
            await start_mirror(h, "fw-a.evsim.test", {"/images/fw-1.2.0.bin": bytes(tampered)})
            station = await online_station(h, files_config(firmware_service("fw-a.evsim.test")))
            await h.csms.update_firmware(
                "CS1",
                request_id=2,
                location="https://fw-a.evsim.test/images/fw-1.2.0.bin",
                signing_certificate=SIGNER.cert_pem().decode(),
                signature=SIGNATURE,
            )
            await until(lambda: "InvalidSignature" in statuses(h))
            await until(lambda: h.events("security_event_received", "csms"))
            assert statuses(h) == ["Downloading", "Downloaded", "InvalidSignature"]
            assert [e.data["type"] for e in h.events("security_event_received", "csms")] == [
                "InvalidFirmwareSignature"
            ]
            assert station.firmware.version == "0.1.0" and len(h.events("booted", "csms")) == 1


async def test_download_failed_after_the_requested_retries_at_the_requested_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with harness() as h:
            await start_mirror(h, "fw-a.evsim.test", {})  # every GET is a 404
            await online_station(h, files_config(firmware_service("fw-a.evsim.test")))
            start = trio.current_time()
            await h.csms.update_firmware(
                "CS1",
                request_id=3,
                location="https://fw-a.evsim.test/images/fw-1.2.0.bin",
                signing_certificate=SIGNER.cert_pem().decode(),
                signature=SIGNATURE,
                retries=2,
                retry_interval=120,
            )
            await until(lambda: "DownloadFailed" in statuses(h))
            assert statuses(h) == ["Downloading", "DownloadFailed"]
            failures = h.events("transfer_attempt_failed", "CS1")
            assert [e.data["reason"] for e in failures] == ["http_404"] * 3
            assert failures[-1].t - failures[0].t >= 240 and trio.current_time() - start >= 240


async def test_an_image_that_does_not_install_ends_in_install_verification_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with harness() as h:
            junk = b"\x7fELF" + bytes(5000)
            await start_mirror(h, "fw-a.evsim.test", {"/images/junk.bin": junk})
            station = await online_station(h, files_config(firmware_service("fw-a.evsim.test")))
            await h.csms.update_firmware(
                "CS1",
                request_id=4,
                location="https://fw-a.evsim.test/images/junk.bin",
                signing_certificate=SIGNER.cert_pem().decode(),
                signature=sign_image(junk, SIGNER),
            )
            await until(lambda: "InstallVerificationFailed" in statuses(h))
            assert statuses(h)[-2:] == ["Installing", "InstallVerificationFailed"]
            assert station.firmware.version == "0.1.0"


async def test_install_waits_for_the_charging_session_and_a_second_request_cancels_the_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with harness() as h:
            await start_mirror(h, "fw-a.evsim.test")
            station = await online_station(h, files_config(firmware_service("fw-a.evsim.test")), sessions=1)
            first = await h.csms.update_firmware(
                "CS1",
                request_id=5,
                location="https://fw-a.evsim.test/images/fw-1.2.0.bin",
                signing_certificate=SIGNER.cert_pem().decode(),
                signature=SIGNATURE,
                retrieve_in_s=3000,
            )
            assert first["status"] == "Accepted"
            await until(lambda: "DownloadScheduled" in statuses(h))
            await until(lambda: station.connector_status != "Available")
            second = await h.csms.update_firmware(
                "CS1",
                request_id=6,
                location="https://fw-a.evsim.test/images/fw-1.2.0.bin",
                signing_certificate=SIGNER.cert_pem().decode(),
                signature=SIGNATURE,
            )
            assert second["status"] == "AcceptedCanceled"
            await until(lambda: "Installed" in statuses(h))
            by_request = [
                (e.data["request"], e.data["status"]) for e in h.events("firmware_status_received", "csms")
            ]
            assert by_request[0] == (5, "DownloadScheduled")
            assert (6, "InstallScheduled") in by_request  # the session was still running
            assert all(request == 6 for request, _ in by_request[1:])
            installing = next(
                e for e in h.events("firmware_status", "CS1") if e.data["status"] == "Installing"
            )
            ended = h.events("tx_ended", "csms") or h.events("tx_ended")
            assert ended and ended[0].t <= installing.t


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"location": "ftp://fw-a.evsim.test/images/fw-1.2.0.bin"}, "Rejected"),
        ({"location": "http://fw-a.evsim.test/images/fw-1.2.0.bin"}, "Rejected"),
        ({"location": "https://user:pw@fw-a.evsim.test/images/fw-1.2.0.bin"}, "Rejected"),
        ({"retrieveDateTime": "9999-01-01T00:00:00Z"}, "Rejected"),
        ({"signingCertificate": ""}, "InvalidCertificate"),
    ],
    ids=["ftp", "plain-http", "credentials", "far-future", "no-certificate"],
)
async def test_requests_the_station_cannot_honour_are_answered_at_once(
    change: dict[str, str], status: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(3600):
        async with harness() as h:
            await online_station(h, files_config(firmware_service("fw-a.evsim.test")))
            firmware = {
                "location": "https://fw-a.evsim.test/images/fw-1.2.0.bin",
                "retrieveDateTime": "2030-06-01T12:00:00Z",
                "signingCertificate": SIGNER.cert_pem().decode(),
                "signature": SIGNATURE,
                **change,
            }
            response = await h.csms.call("CS1", "UpdateFirmware", {"requestId": 9, "firmware": firmware})
            assert response["status"] == status
            assert len(h.events("firmware_refused", "CS1")) == 1


async def test_out_of_range_retries_are_refused_and_replaced(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(3600):
        async with harness() as h:
            await start_mirror(h, "fw-a.evsim.test", {})
            await online_station(h, files_config(firmware_service("fw-a.evsim.test"), retries=1))
            await h.csms.update_firmware(
                "CS1",
                request_id=10,
                location="https://fw-a.evsim.test/images/fw-1.2.0.bin",
                signing_certificate=SIGNER.cert_pem().decode(),
                signature=SIGNATURE,
                retries=1_000_000,
                retry_interval=-5,
            )
            await until(lambda: "DownloadFailed" in statuses(h))
            refused = {e.data["field"] for e in h.events("value_refused", "CS1")}
            assert refused == {"retries", "retryInterval"}
            assert len(h.events("transfer_attempt_failed", "CS1")) == 2  # the station's default: 1 retry


# ---------------------------------------------------------------- GetLog


async def start_log_server(h: Harness, host: str, *, uploads: bool = True) -> FileServer:
    ident = Identity.from_cert_key(mirror_cert(host))
    mtls = ServerTls.build(TlsProfile(), ident, trust=PKI.station_trust(), client_auth="required")
    return await start_mirror(h, host, {}, accept_uploads=uploads, server_tls=mtls)


def log_service(*hosts: str, peer: dict[str, PeerPolicy] | None = None) -> Service:
    return Service(
        "logs",
        tuple(
            Endpoint(
                f"l{i}",
                f"https://{host}/upload",
                priority=i,
                trust=PKI.csms_trust(),
                identity=PKI.station_identity("CS1"),
                peer=(peer or {}).get(host),
            )
            for i, host in enumerate(hosts)
        ),
        backoff=FAST,
    )


async def test_get_log_uploads_the_station_log_over_mutual_tls_failing_over_a_mirror_with_a_wrong_pin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with harness() as h:
            await start_log_server(h, "logs-a.evsim.test")
            b = await start_log_server(h, "logs-b.evsim.test")
            wrong = PeerPolicy(
                side="client", pins=PinSet("enforce", (Pin("leaf", spki_sha256(PKI.server.cert), "active"),))
            )
            await online_station(
                h,
                files_config(
                    log_service("logs-a.evsim.test", "logs-b.evsim.test", peer={"logs-a.evsim.test": wrong})
                ),
            )
            response = await h.csms.get_log(
                "CS1", request_id=11, remote_location="https://logs-a.evsim.test/upload/"
            )
            assert response == {"status": "Accepted", "filename": "CS1-DiagnosticsLog-11.log"}
            await until(lambda: "Uploaded" in statuses(h, "log_status_received"))
            assert statuses(h, "log_status_received") == ["Uploading", "Uploaded"]
            stored = b.uploaded("/upload/CS1-DiagnosticsLog-11.log")
            assert (
                stored is not None
                and stored.client == "CS1"
                and stored.filename == "CS1-DiagnosticsLog-11.log"
            )
            assert b'"kind": "booted"' in stored.body
            [tls] = h.events("handshake_failed", "CS1")
            assert (tls.data["endpoint"], tls.data["reason"]) == ("l0", "pin_mismatch")
            [uploaded] = [e for e in h.events("log_status", "CS1") if e.data["status"] == "Uploaded"]
            assert uploaded.data["endpoint"] == "l1"
            assert h.csms.stations["CS1"].log_status == "Uploaded"


async def test_get_log_to_a_server_that_refuses_uploads_ends_in_not_supported_after_the_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with harness() as h:
            await start_log_server(h, "logs-a.evsim.test", uploads=False)
            await online_station(h, files_config(log_service("logs-a.evsim.test")))
            await h.csms.get_log(
                "CS1",
                request_id=12,
                remote_location="https://logs-a.evsim.test/upload/",
                retries=1,
                retry_interval=10,
            )
            await until(lambda: len(statuses(h, "log_status_received")) == 2)
            assert statuses(h, "log_status_received") == ["Uploading", "NotSupportedOperation"]
            assert len(h.events("transfer_attempt_failed", "CS1")) == 2
            response = await h.csms.get_log("CS1", request_id=13, remote_location="ftp://logs-a.evsim.test/x")
            assert response["status"] == "Rejected"


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("http_403", "PermissionDenied"),
        ("http_401", "PermissionDenied"),
        ("http_405", "NotSupportedOperation"),
        ("http_413", "BadMessage"),
        ("bad_http_response", "BadMessage"),
        ("http_500", "UploadFailure"),
        ("cert_invalid:unknown_ca", "UploadFailure"),
        ("refused", "UploadFailure"),
    ],
)
def test_log_status_for_failure_reasons(reason: str, status: str) -> None:
    assert log_status_for(reason) == status


# ---------------------------------------------------------------- evsim firmware sign, checked by openssl


def test_firmware_sign_builds_an_image_openssl_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from evsim.cli import main

    assert main(["certs", "init", "--dir", str(tmp_path / "pki")]) == 0
    out = tmp_path / "fw"
    assert (
        main(
            [
                "firmware",
                "sign",
                "--pki",
                str(tmp_path / "pki"),
                "--version",
                "2.0.1",
                "--size",
                "5000",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    image = (out / "evsim-fw-2.0.1.bin").read_bytes()
    signature = (out / "evsim-fw-2.0.1.bin.sig").read_text().strip()
    signer_pem = (out / "firmware-signer.crt").read_text()
    mfr = x509.load_pem_x509_certificate((tmp_path / "pki" / "manufacturer-root.crt").read_bytes())
    cert = check_signing_certificate(signer_pem, (mfr,), now=dt.datetime.now(dt.UTC))
    verify_image(image, signature, cert)
    assert image_version(image) == "2.0.1"
    # a second image from the same PKI has the same signer
    assert (
        main(
            [
                "firmware",
                "sign",
                "--pki",
                str(tmp_path / "pki"),
                "--image",
                str(out / "evsim-fw-2.0.1.bin"),
                "--out",
                str(tmp_path / "again"),
            ]
        )
        == 0
    )
    assert (tmp_path / "again" / "firmware-signer.crt").read_text() == signer_pem
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (.ci/run installs it)")
    pub = tmp_path / "pub.pem"
    pub.write_bytes(
        cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp_path / "sig.der").write_bytes(base64.b64decode(signature))
    for command in (
        [
            "openssl",
            "dgst",
            "-sha256",
            "-verify",
            str(pub),
            "-signature",
            str(tmp_path / "sig.der"),
            str(out / "evsim-fw-2.0.1.bin"),
        ],
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "pki" / "manufacturer-root.crt"),
            str(out / "firmware-signer.crt"),
        ],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
