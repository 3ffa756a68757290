"""The credentials of a gRPC listener on TCP: a TLS certificate and key, and a bearer token.

Every TCP listener of the host (the admin API, the Connector API) takes the same three files;
:func:`read_server_tls` reads and checks them before anything listens, so that a mistake is a
configuration error naming the key, not gRPC's bare "failed to bind". Files that hold a secret
(the private key, the token) must not be readable by other users: a key or token with group or
other permission bits is refused, with the file, its mode and the ``chmod`` that fixes it. A
secret that other local users could read authenticates nobody.

:func:`client_credentials` is the other side: the channel credentials of a client that trusts
the listener's certificate and presents the token (the engine of a split host).
"""

from __future__ import annotations

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
    for path, name in ((key, f"{prefix}tls_key"), (token_file, f"{prefix}token_file")):
        check_private(path, name)
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
    try:
        token = read_token(token_file)
    except ValueError as exc:
        raise CredentialsError(f"{prefix}token_file: {exc}") from exc
    return ServerTls(cert_chain, private_key, token)


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
