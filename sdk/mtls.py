"""Automatic mutual TLS between the host and an adaptor, as go-plugin does it.

Each side makes a fresh self-signed certificate at start: the host passes its certificate (PEM)
in ``PLUGIN_CLIENT_CERT``; the adaptor answers with its own (DER, unpadded base64) in the CERT
field of the handshake line. Each side trusts exactly the other's certificate, both present
one, and the server name is "localhost" whatever the address.

The curve: go-plugin uses ECDSA P-521, but gRPC's TLS stack (BoringSSL) does not offer the
``ecdsa_secp521r1_sha512`` signature algorithm, so a gRPC Python (or C++) peer cannot complete a
handshake with a P-521 key at all (grpc/grpc#41089; go-plugin PR #281 adds a curve option for the
same reason). The default here is therefore P-384, the strongest curve gRPC speaks on both
sides; ``generate_certificate(curve=...)`` takes another one.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The name both certificates carry and both sides check, whatever the address.
SERVER_NAME: Final = "localhost"
#: Tolerates clocks of host and adaptor that differ a little.
BACKDATE: Final = timedelta(seconds=30)
#: Long enough that a running adaptor never sees its certificate expire.
VALIDITY: Final = timedelta(days=30 * 365)


def _hash_for(curve: ec.EllipticCurve) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    """The digest that matches the curve's strength, as TLS signature algorithms pair them."""
    if curve.key_size <= 256:
        return hashes.SHA256()
    if curve.key_size <= 384:
        return hashes.SHA384()
    return hashes.SHA512()


class Certificate(NamedTuple):
    """A certificate with its private key: PEM forms for gRPC, DER for the handshake line."""

    cert_pem: bytes
    key_pem: bytes
    cert_der: bytes


def generate_certificate(curve: ec.EllipticCurve | None = None) -> Certificate:
    """A fresh self-signed ECDSA certificate for "localhost", usable as server and as client.

    It is its own CA (the peer trusts exactly this certificate as a root), valid from a little
    before now for thirty years.
    """
    curve = curve or ec.SECP384R1()
    key = ec.generate_private_key(curve)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .sign(key, _hash_for(curve))
    )
    return Certificate(
        cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert_der=certificate.public_bytes(serialization.Encoding.DER),
    )


def der_to_pem(der: bytes) -> bytes:
    """The PEM form of a DER certificate (the handshake line carries DER, gRPC wants PEM)."""
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def check_pem_certificate(pem: bytes, what: str) -> None:
    """Raise ValueError naming ``what`` unless ``pem`` holds exactly one X.509 certificate."""
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ValueError(f"{what} is not a PEM certificate: {exc}") from exc
    if len(certificates) != 1:
        raise ValueError(f"{what} must hold one certificate, found {len(certificates)}")


def server_credentials(own: Certificate, client_cert_pem: bytes) -> grpc.ServerCredentials:
    """Adaptor side: present ``own``, require a client certificate, trust only the host's."""
    return grpc.ssl_server_credentials(
        [(own.key_pem, own.cert_pem)],
        root_certificates=client_cert_pem,
        require_client_auth=True,
    )


def channel_credentials(own: Certificate, server_cert_pem: bytes) -> grpc.ChannelCredentials:
    """Host side: trust only the adaptor's certificate and present ``own``.

    Use it with the channel option in ``CHANNEL_OPTIONS`` so that the name checked is
    "localhost" whatever the address.
    """
    return grpc.ssl_channel_credentials(
        root_certificates=server_cert_pem,
        private_key=own.key_pem,
        certificate_chain=own.cert_pem,
    )


#: Channel options a client needs with ``channel_credentials``.
CHANNEL_OPTIONS: Final[tuple[tuple[str, str], ...]] = (
    ("grpc.ssl_target_name_override", SERVER_NAME),
)


def ssl_client_context(own: Certificate | None, server_cert_pem: bytes) -> ssl.SSLContext:
    """A client-side ``ssl`` (OpenSSL) context for automatic mutual TLS: trust exactly the
    adaptor's certificate, present ``own`` (none if None), server name "localhost", ALPN h2.

    OpenSSL verifies every curve go-plugin uses, P-521 included, which gRPC's own TLS stack
    cannot (see the module docstring): the host carries its channel to such an adaptor over
    this context (host/supervisor/tls_bridge.py), and the conformance suite probes with it.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=server_cert_pem.decode())
    context.set_alpn_protocols(["h2"])
    if own is not None:
        # ssl loads a key only from a file: a private one, removed at once.
        with tempfile.TemporaryDirectory(prefix="ilpkey") as directory:
            path = os.path.join(directory, "client.pem")
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(own.cert_pem + own.key_pem)
            context.load_cert_chain(path)
    return context


def curve_of(cert_pem: bytes) -> str:
    """The name of the EC curve of the certificate's key (e.g. "secp521r1"), or "" if its key
    is not an EC key."""
    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    return key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else ""
