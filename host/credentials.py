"""The credentials of a listener on TCP: a TLS certificate and key, and a bearer token.

Every gRPC listener of the host on TCP (the admin API, the Connector API) takes the same three
files: :func:`read_server_tls` reads and checks them before anything listens, so that a mistake
is a configuration error naming the key, not gRPC's bare "failed to bind". The ILP-over-HTTP
server takes the certificate and key (:func:`https_server_context`; each peer's token is in its
``[[peer]]``), checked alike. Files that hold a secret
(the private key, the token) must not be readable by other users: a key or token with group or
other permission bits is refused, with the file, its mode and the ``chmod`` that fixes it. A
secret that other local users could read authenticates nobody.

:func:`client_credentials` is the other side: the channel credentials of a client that trusts
the listener's certificate and presents the token (the engine of a split host).
"""

from __future__ import annotations

import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace ignored); ValueError if unusable."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the token file {path}: {exc}") from exc
    if not token:
        raise ValueError(f"the token file {path} is empty")
    if any(ch.isspace() for ch in token) or not token.isprintable():
        raise ValueError(f"the token in {path} must be one word of printable characters")
    return token


class CredentialsError(ValueError):
    """A credentials file the host refuses; the message names the key and the file."""


@dataclass(frozen=True)
class ServerTls:
    """What a TCP listener needs: its certificate chain and private key (PEM), and the token
    callers must present."""

    cert_chain: bytes
    private_key: bytes = b""
    token: str = ""

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.private_key, self.cert_chain)])


def check_private(path: Path, key: str) -> None:
    """CredentialsError if ``path`` (a secret) has group or other permission bits."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise CredentialsError(f"{key}: cannot read {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise CredentialsError(
            f"{key}: {path} has mode {mode:04o}: other users can read this secret; chmod 600 {path}"
        )


def read_server_tls(cert: Path, key: Path, token_file: Path, *, prefix: str) -> ServerTls:
    """Read and check a listener's files; ``prefix`` names the keys (``admin.``,
    ``connector.api_``) in errors. CredentialsError if any is unusable."""
    cert_chain, private_key = read_key_pair(cert, key, prefix=prefix)
    check_private(token_file, f"{prefix}token_file")
    try:
        token = read_token(token_file)
    except ValueError as exc:
        raise CredentialsError(f"{prefix}token_file: {exc}") from exc
    return ServerTls(cert_chain, private_key, token)


def read_key_pair(cert: Path, key: Path, *, prefix: str) -> tuple[bytes, bytes]:
    """A listener's certificate chain and private key (PEM), checked: the key private (no
    group or other permission bits), both parseable. CredentialsError naming
    ``{prefix}tls_cert`` or ``{prefix}tls_key`` otherwise."""
    check_private(key, f"{prefix}tls_key")
    try:
        cert_chain = cert.read_bytes()
        private_key = key.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"{prefix}tls: cannot read {exc.filename}: {exc.strerror}") from exc
    try:
        x509.load_pem_x509_certificates(cert_chain)
    except ValueError as exc:
        raise CredentialsError(f"{prefix}tls_cert: {cert} is not a PEM certificate") from exc
    try:
        serialization.load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError) as exc:
        raise CredentialsError(
            f"{prefix}tls_key: {key} is not an unencrypted PEM private key"
        ) from exc
    return cert_chain, private_key


def https_server_context(cert: Path, key: Path, *, prefix: str) -> ssl.SSLContext:
    """The TLS context of an HTTPS listener (TLS 1.2 at least, HTTP/1.1) from checked files."""
    read_key_pair(cert, key, prefix=prefix)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        # E.g. a key that is not the certificate's.
        raise CredentialsError(
            f"{prefix}tls_key: {key} does not go with the certificate {cert}: {exc}"
        ) from exc
    return context


def https_client_context(ca_file: Path, *, key: str) -> ssl.SSLContext:
    """The TLS context of an HTTPS client that trusts only the CAs (PEM) in ``ca_file``."""
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CredentialsError(
            f"{key}: cannot use {ca_file} as the CA certificates (PEM): {reason}"
        ) from exc


def read_client_tls(cert: Path, token_file: Path, *, prefix: str) -> ServerTls:
    """What a client of the listener needs: the certificate to trust and the token."""
    check_private(token_file, f"{prefix}token_file")
    try:
        cert_chain = cert.read_bytes()
        token = read_token(token_file)
    except OSError as exc:
        raise CredentialsError(f"{prefix}tls_cert: cannot read {cert}: {exc.strerror}") from exc
    except ValueError as exc:
        raise CredentialsError(f"{prefix}token_file: {exc}") from exc
    return ServerTls(cert_chain, token=token)


def client_credentials(tls: ServerTls) -> grpc.ChannelCredentials:
    """Channel credentials that trust ``tls.cert_chain`` and send ``tls.token``."""
    return grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=tls.cert_chain),
        grpc.access_token_call_credentials(tls.token),
    )
