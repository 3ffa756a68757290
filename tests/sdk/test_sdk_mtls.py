"""sdk.mtls: the certificates of automatic mutual TLS, and real TLS handshakes with them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sdk import mtls
from sdk.health import HealthServicer
from tests.grpc_status import failure


def test_certificate_is_a_self_signed_localhost_ca_for_both_roles() -> None:
    made = mtls.generate_certificate()
    cert = x509.load_pem_x509_certificate(made.cert_pem)
    assert cert == x509.load_der_x509_certificate(made.cert_der)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_cert_sign
    extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(extended) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    now = datetime.now(UTC)
    assert cert.not_valid_before_utc < now < cert.not_valid_before_utc + timedelta(minutes=5)
    assert cert.not_valid_after_utc > now + timedelta(days=365 * 10)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    cert.verify_directly_issued_by(cert)
    assert mtls.generate_certificate().cert_der != made.cert_der  # fresh each time
    assert mtls.der_to_pem(made.cert_der) == made.cert_pem


async def health_check(server_cert: mtls.Certificate, client_cert: mtls.Certificate) -> None:
    """A Health.Check over TCP with mutual TLS made of these two certificates."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    port = server.add_secure_port(
        "127.0.0.1:0", mtls.server_credentials(server_cert, client_cert.cert_pem)
    )
    await server.start()
    try:
        credentials = mtls.channel_credentials(client_cert, server_cert.cert_pem)
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{port}", credentials, options=mtls.CHANNEL_OPTIONS
        ) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
    finally:
        await server.stop(None)


def test_mutual_tls_handshake_succeeds_with_p384_and_p256() -> None:
    for curve in (None, ec.SECP256R1()):
        asyncio.run(health_check(mtls.generate_certificate(curve), mtls.generate_certificate()))


def test_p521_is_refused_by_grpc_tls() -> None:
    # Pins the reason the default is not go-plugin's P-521: BoringSSL, under gRPC, offers no
    # ecdsa_secp521r1_sha512 signature algorithm (grpc/grpc#41089). When this test fails, gRPC
    # has gained P-521 and the SDK can follow go-plugin exactly.
    p521 = mtls.generate_certificate(ec.SECP521R1())
    caught = asyncio.run(failure(health_check(p521, mtls.generate_certificate())))
    assert caught.code == grpc.StatusCode.UNAVAILABLE


def test_check_pem_certificate() -> None:
    mtls.check_pem_certificate(mtls.generate_certificate().cert_pem, "X")
    with pytest.raises(ValueError, match="X is not a PEM certificate"):
        mtls.check_pem_certificate(b"garbage", "X")
