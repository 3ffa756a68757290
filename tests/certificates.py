"""A certificate authority of the tests' own, and server certificates it issues.

What an operator's private CA does for a peering: the CA's certificate is what the peers trust
(``[connector] peer_ca``, ``NODE_EXTRA_CA_CERTS`` for Node.js), each host serves a certificate
the CA signed for its names. Nothing here is trusted by the system.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Valid a little before now (clock differences) and for a day: long enough for any test.
_BACKDATE = timedelta(minutes=5)
_VALIDITY = timedelta(days=1)


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class TestCa:
    """A CA: its certificate (PEM) and key."""

    __test__ = False  # not a test class, for pytest

    cert_pem: bytes
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def make(cls, name: str = "ilp-host tests CA") -> TestCa:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), key)

    def issue(self, *names: str) -> tuple[bytes, bytes]:
        """A server certificate for ``names`` (DNS names or IP addresses) and its key, PEM."""
        ca = x509.load_pem_x509_certificate(self.cert_pem)
        key = ec.generate_private_key(ec.SECP256R1())
        alternatives: list[x509.GeneralName] = []
        for name in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _pem(key)

    def write(self, directory: Path, name: str, *names: str) -> tuple[Path, Path]:
        """Issue a certificate for ``names`` into ``directory``/``name``.crt and ``.key``
        (the key 0600, as the host requires); the two paths."""
        cert_pem, key_pem = self.issue(*names)
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_bytes(cert_pem)
        key.touch(mode=0o600)
        key.chmod(0o600)
        key.write_bytes(key_pem)
        return cert, key
