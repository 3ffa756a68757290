"""The Ethereum adaptor's configuration, from its environment (see README.md for the table).

The private key is read here and kept only inside an ``eth_signer.Signer``: it is never part
of a message, a log line or a repr.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

from eth_chain import address_of
from eth_signer import Signer

import sdk
from sdk.contract import ACCOUNT_ID

ENV_RPC_URL: Final = "ILP_ETHEREUM_RPC_URL"
ENV_WS_URL: Final = "ILP_ETHEREUM_WS_URL"
ENV_KEY_FILE: Final = "ILP_ETHEREUM_KEY_FILE"
ENV_PRIVATE_KEY: Final = "ILP_ETHEREUM_PRIVATE_KEY"
ENV_TOKEN: Final = "ILP_ETHEREUM_TOKEN"
ENV_CONFIRMATIONS: Final = "ILP_ETHEREUM_CONFIRMATIONS"
ENV_CHAIN_ID: Final = "ILP_ETHEREUM_CHAIN_ID"
ENV_START_BLOCK: Final = "ILP_ETHEREUM_START_BLOCK"
ENV_POLL_INTERVAL: Final = "ILP_ETHEREUM_POLL_INTERVAL"
ENV_BUMP_AFTER: Final = "ILP_ETHEREUM_BUMP_AFTER"
ENV_MAX_FEE: Final = "ILP_ETHEREUM_MAX_FEE_GWEI"
ENV_SEND_WAIT: Final = "ILP_ETHEREUM_SEND_WAIT"
ENV_PEERS: Final = "ILP_ETHEREUM_PEERS"
ENV_STATE_DB: Final = "ILP_ADAPTOR_STATE_DB"

#: ``ILP_ETHEREUM_CONFIRMATIONS=finalized``: wait for the chain's finalized block instead.
FINALIZED: Final = "finalized"
GWEI: Final = 10**9
_T = TypeVar("_T")


class ConfigError(sdk.LaunchError):
    """The environment does not describe a usable adaptor; the message says what to set."""


@dataclass(frozen=True)
class Config:
    """Everything the adaptor is told at start."""

    rpc_url: str
    signer: Signer = field(repr=False)
    state_db: str
    #: The node's WebSocket endpoint: new blocks are announced there instead of polled.
    ws_url: str | None = None
    #: The ERC-20 contract settled in; None: the chain's native currency (ETH).
    token: str | None = None
    #: Blocks a transaction needs on it (itself included) to count; 0 means "finalized".
    confirmations: int = 12
    chain_id: int | None = None
    start_block: int | None = None
    poll_interval: float = 1.0
    bump_after: float = 60.0
    max_fee: int | None = None
    send_wait: float = 5.0
    #: Peer addresses pinned by the operator: the exchange must agree with them.
    pinned_peers: Mapping[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """The adaptor's own address (the key's)."""
        return self.signer.address

    @property
    def finalized(self) -> bool:
        return self.confirmations == 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        """Read the configuration; ConfigError naming every problem."""
        missing = [n for n in (ENV_RPC_URL, ENV_STATE_DB) if not environ.get(n)]
        if not environ.get(ENV_KEY_FILE) and not environ.get(ENV_PRIVATE_KEY):
            missing.append(f"{ENV_KEY_FILE} or {ENV_PRIVATE_KEY}")
        if missing:
            raise ConfigError(
                f"the ethereum adaptor needs the environment variable(s) {', '.join(missing)}"
            )
        url = environ[ENV_RPC_URL]
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{ENV_RPC_URL} must be an http:// or https:// URL, got {url!r}")
        return cls(
            rpc_url=url,
            signer=_signer(environ),
            state_db=environ[ENV_STATE_DB],
            ws_url=_optional(environ, ENV_WS_URL, _ws_url),
            token=_optional(environ, ENV_TOKEN, _token),
            confirmations=_confirmations(environ.get(ENV_CONFIRMATIONS, "12")),
            chain_id=_optional(environ, ENV_CHAIN_ID, lambda v: _integer(ENV_CHAIN_ID, v, 1)),
            start_block=_optional(
                environ, ENV_START_BLOCK, lambda v: _integer(ENV_START_BLOCK, v, 0)
            ),
            poll_interval=_seconds(environ, ENV_POLL_INTERVAL, 1.0),
            bump_after=_seconds(environ, ENV_BUMP_AFTER, 60.0),
            max_fee=_optional(environ, ENV_MAX_FEE, lambda v: _integer(ENV_MAX_FEE, v, 1) * GWEI),
            send_wait=_seconds(environ, ENV_SEND_WAIT, 5.0),
            pinned_peers=_peers(environ.get(ENV_PEERS, "")),
        )


def _optional(environ: Mapping[str, str], name: str, parse: Callable[[str], _T]) -> _T | None:
    value = environ.get(name, "")
    return parse(value) if value else None


def _ws_url(value: str) -> str:
    if not value.startswith(("ws://", "wss://")):
        raise ConfigError(f"{ENV_WS_URL} must be a ws:// or wss:// URL, got {value!r}")
    return value


def _token(value: str) -> str:
    try:
        return address_of(value, ENV_TOKEN)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _integer(name: str, value: str, minimum: int) -> int:
    if not value.isdigit() or int(value) < minimum:
        raise ConfigError(f"{name} must be an integer of at least {minimum}, got {value[:40]!r}")
    return int(value)


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    value = environ.get(name, "")
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise ConfigError(f"{name} must be seconds in (0, 3600], got {value[:40]!r}")
    return seconds


def _confirmations(value: str) -> int:
    if value == FINALIZED:
        return 0
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise ConfigError(
            f"{ENV_CONFIRMATIONS} must be 1 to 1000 or {FINALIZED!r}, got {value[:40]!r}"
        )
    return int(value)


def _peers(value: str) -> dict[str, str]:
    """``account=0xaddress,...`` into a mapping."""
    peers: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        account, _, address = item.partition("=")
        if not ACCOUNT_ID.fullmatch(account):
            raise ConfigError(f"{ENV_PEERS}: {account[:40]!r} is not an account id")
        try:
            peers[account] = address_of(address, f"{ENV_PEERS} address of {account}")
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    return peers


def _signer(environ: Mapping[str, str]) -> Signer:
    path, inline = environ.get(ENV_KEY_FILE, ""), environ.get(ENV_PRIVATE_KEY, "")
    if path and inline:
        raise ConfigError(f"set {ENV_KEY_FILE} or {ENV_PRIVATE_KEY}, not both")
    if path:
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise ConfigError(f"{ENV_KEY_FILE}={path!r}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{ENV_KEY_FILE}={path!r} has mode {stat.S_IMODE(mode):04o}: a private key must "
                f"be readable by its owner only (chmod 600 {path})"
            )
        with open(path, encoding="ascii", errors="replace") as file:
            text, source = file.read().strip(), f"{ENV_KEY_FILE}={path!r}"
    else:
        text, source = inline.strip(), ENV_PRIVATE_KEY
    digits = text.removeprefix("0x")
    if len(digits) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        # Never echo the text: it may be a key with a typo.
        raise ConfigError(f"{source} must hold a private key: 64 hex digits, optionally 0x")
    try:
        return Signer(bytes.fromhex(digits))
    except ValueError:
        raise ConfigError(f"{source} is not a valid secp256k1 private key") from None
