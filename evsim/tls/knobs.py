"""Which TLS-model knob this engine enforces: the one table (:data:`KNOB_STATES`) validation and capabilities use.

A knob is in one of three states (``shared/design/tls-model.md``):

* ``enforced`` - the engine applies it; ``tests/test_tls_knobs.py`` shows a violating peer refused or the
  setting observed on the wire;
* ``partial`` - applied with the limit written in :data:`KNOB_NOTES`;
* ``declared`` - recorded and reported, not enforceable by pyOpenSSL on this OpenSSL. A profile that lists
  such a knob in ``enforce`` is refused at construction (:func:`check_enforce`), never silently ignored.

Two states depend on the binding (``_ossl``): ``groups`` is *enforced* when ``SSL_CTX_set1_groups_list``
is reachable (the whole ordered list), else *partial* (``set_tmp_ecdh``: only the first group, an EC
curve); ``signature_algorithms`` is *enforced* with ``SSL_CTX_set1_sigalgs_list``, else *declared*.

The tables of group and signature-scheme names the model accepts live here too (IANA "TLS Supported
Groups" and "TLS SignatureScheme" registries, spelled as OpenSSL spells them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

from evsim.errors import ConfigError
from evsim.tls import _ossl
from evsim.toml_table import choices_fix

KnobState: TypeAlias = Literal["enforced", "partial", "declared"]

GROUPS_STATE: Final[KnobState] = "enforced" if _ossl.HAVE_GROUPS_LIST else "partial"
SIGALGS_STATE: Final[KnobState] = "enforced" if _ossl.HAVE_SIGALGS_LIST else "declared"

KNOB_STATES: Mapping[str, KnobState] = MappingProxyType(
    {
        # TlsProfile
        "versions": "enforced",
        "versions.order": "partial",
        "cipher_suites": "enforced",
        "suite_preference": "enforced",
        "groups": GROUPS_STATE,
        "signature_algorithms": SIGALGS_STATE,
        "alpn": "enforced",
        "alpn_require": "enforced",
        "handshake_timeout_s": "enforced",
        "session.resumption": "enforced",
        "session.lifetime_s": "enforced",
        "session.cache_entries": "partial",
        "record.max_send_fragment": "enforced",
        "record.max_fragment_length": "declared",
        "record.record_size_limit": "declared",
        "record.recv_buffer": "declared",
        "keylog": "enforced",
        # TrustStore
        "trust.anchors": "enforced",
        "trust.hostname": "enforced",
        "trust.wildcards": "enforced",
        "trust.time_check": "enforced",
        "trust.max_depth": "enforced",
        "trust.revocation.crl": "enforced",
        "trust.revocation.ocsp": "enforced",
        "trust.revocation.on_unknown": "enforced",
        "trust.mode": "enforced",
        # Listener (evsim.tls.listener)
        "client_auth": "enforced",
        "listener.sni_identities": "enforced",
        "listener.sni_strict": "declared",
        # Peer trust (evsim.tls.peer.PeerPolicy: checked in the verify callback at depth 0)
        "pins.enforcement": "enforced",
        "pins.targets": "enforced",
        "pins.release": "enforced",
        "pairing": "enforced",
        "change.on_peer_key_change": "enforced",
        "change.on_peer_cert_change_same_key": "enforced",
    }
)
"""Knob (field path in the model) -> state. The single source for validation and ``evsim tls capabilities``."""

KNOB_NOTES: Mapping[str, str] = MappingProxyType(
    {
        "versions": (
            "the set: set_min/max_proto_version; a peer with no version in it is refused (downgrade_refused)"
        ),
        "versions.order": (
            "newest first only: OpenSSL always negotiates the newest version both sides enable, and "
            "pyOpenSSL exposes no ClientHello callback for a server to choose by its own order, so "
            "another order is refused when the profile loads"
        ),
        "groups": (
            "the whole ordered list (SSL_CTX_set1_groups_list)"
            if _ossl.HAVE_GROUPS_LIST
            else "only the first group, and only an EC curve (Context.set_tmp_ecdh)"
        ),
        "signature_algorithms": (
            "SSL_CTX_set1_sigalgs_list"
            if _ossl.HAVE_SIGALGS_LIST
            else "the binding lacks SSL_CTX_set1_sigalgs_list"
        ),
        "session.lifetime_s": (
            "the client store expires sessions at simulation time; OpenSSL's server cache and ticket "
            "lifetime use the machine's wall clock"
        ),
        "session.cache_entries": (
            "bounds the client session store; the server cache keeps OpenSSL's default size (20480, "
            "SSL_SESSION_CACHE_MAX_SIZE_DEFAULT): SSL_CTX_sess_set_cache_size is not in the binding"
        ),
        "trust.time_check": "enforce | off | skip_until_clock_synced (per connection: tls_connect(clock_synced=))",
        "record.max_send_fragment": "the stream writes plaintext in records of at most N bytes",
        "record.max_fragment_length": "RFC 6066 max_fragment_length is not negotiable through pyOpenSSL",
        "record.record_size_limit": "RFC 8449 record_size_limit is not negotiable through pyOpenSSL",
        "record.recv_buffer": "OpenSSL's read buffer size is not settable through pyOpenSSL",
        "trust.mode": "pki | pinned_peers (self-signed peers decided by pins or pairing) | tofu",
        "client_auth": "none | optional | required | pairing (SHIP: any self-signed client, decided by SKI)",
        "listener.sni_identities": (
            "a certificate per requested server name (servername callback + SSL_set_SSL_CTX); exact names, "
            "case-insensitive, no wildcards; no SNI or an unknown name gets the default identity"
        ),
        "listener.sni_strict": (
            "refusing unknown names with unrecognized_name: pyOpenSSL's servername callback can only fail "
            "by raising into sys.excepthook, so unknown names get the default identity (not a Listener field)"
        ),
        "pins.enforcement": "enforce refuses with pin_mismatch; report_only lets the peer in and reports it",
        "pins.targets": "leaf | intermediate | root | any, by SPKI SHA-256 (RFC 7469)",
        "pins.release": "operator release, expiry, promotion of a pending pin after a successful connection",
        "pairing": "SKI list with trusted | pending | denied, pairing window, auto_accept (SHIP 12.2)",
        "change.on_peer_key_change": "reject | warn | accept_and_repin (peer_key_changed)",
        "change.on_peer_cert_change_same_key": "info | warn (peer_cert_changed)",
    }
)
"""Why a knob is partial or declared (and what an enforced one compiles to, where that is not obvious)."""

GROUPS: tuple[str, ...] = (
    "X25519MLKEM768",
    "SecP256r1MLKEM768",
    "SecP384r1MLKEM1024",
    "X25519",
    "X448",
    "secp256r1",
    "secp384r1",
    "secp521r1",
    "brainpoolP256r1tls13",
    "brainpoolP384r1tls13",
    "brainpoolP512r1tls13",
    "ffdhe2048",
    "ffdhe3072",
    "ffdhe4096",
    "ffdhe6144",
    "ffdhe8192",
)
"""Key-exchange groups the model accepts (IANA TLS Supported Groups; RFC 8446 §4.2.7, RFC 7919, the hybrid
ML-KEM groups of draft-ietf-tls-ecdhe-mlkem), spelled as OpenSSL spells them."""

EC_GROUPS: frozenset[str] = frozenset({"secp256r1", "secp384r1", "secp521r1"})
"""Groups the ``set_tmp_ecdh`` fallback can apply (NIST curves; RFC 8422 §5.1.1)."""

DEFAULT_GROUPS: tuple[str, ...] = (
    "X25519MLKEM768",
    "SecP256r1MLKEM768",
    "curveSM2MLKEM768",
    "X25519",
    "secp256r1",
    "X448",
    "secp384r1",
    "secp521r1",
    "curveSM2",
    "ffdhe2048",
    "ffdhe3072",
)
"""What ``evsim tls capabilities`` reports when a profile leaves ``groups`` empty (nothing is set then): the
supported_groups of a default client ClientHello, measured on the wire with OpenSSL 4.0.3."""

SIGNATURE_SCHEMES: tuple[str, ...] = (
    "ecdsa_secp256r1_sha256",
    "ecdsa_secp384r1_sha384",
    "ecdsa_secp521r1_sha512",
    "ed25519",
    "ed448",
    "rsa_pss_rsae_sha256",
    "rsa_pss_rsae_sha384",
    "rsa_pss_rsae_sha512",
    "rsa_pss_pss_sha256",
    "rsa_pss_pss_sha384",
    "rsa_pss_pss_sha512",
    "rsa_pkcs1_sha256",
    "rsa_pkcs1_sha384",
    "rsa_pkcs1_sha512",
)
"""Signature schemes the model accepts (RFC 8446 §4.2.3; SHA-1 schemes left out on purpose)."""


def resolve_knob(name: str) -> str | None:
    """The :data:`KNOB_STATES` key for ``name`` (a full path, or its last part: ``record_size_limit``)."""
    if name in KNOB_STATES:
        return name
    tails = [k for k in KNOB_STATES if k.rpartition(".")[2] == name]
    return tails[0] if len(tails) == 1 else None


def check_enforce(names: Iterable[str], *, path: str = "enforce") -> tuple[str, ...]:
    """Check a profile's ``enforce`` list: every knob must exist and be enforceable by this engine.

    Args:
        names: knob names (full paths or last parts).
        path: the field path for errors.

    Returns:
        The knobs as :data:`KNOB_STATES` keys.

    Raises:
        ConfigError: an unknown knob (with a did-you-mean), or a ``declared`` / ``partial`` knob (the
            message says why the engine cannot enforce it).
    """
    out: list[str] = []
    for i, name in enumerate(names):
        knob = resolve_knob(name) if isinstance(name, str) else None
        if knob is None:
            raise ConfigError(
                "unknown knob", path=f"{path}[{i}]", value=name, fix=choices_fix(name, KNOB_STATES)
            )
        state = KNOB_STATES[knob]
        if state != "enforced":
            why = KNOB_NOTES.get(knob, "")
            raise ConfigError(
                f"this engine cannot enforce {knob} (it is {state}: {why})",
                path=f"{path}[{i}]",
                value=name,
                fix=f"remove {name!r} from enforce (the value is still recorded and reported), "
                "or run the scenario against an engine that negotiates it",
            )
        out.append(knob)
    return tuple(out)
