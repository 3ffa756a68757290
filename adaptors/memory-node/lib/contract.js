'use strict';
// The process contract of docs/protocol.md as pure functions: the magic cookie, contract version
// negotiation, the handshake line, and the adaptor's configuration read from its environment.
// No I/O here: adaptor.js does the listening, printing and exiting.

const COOKIE_KEY = 'ILP_SETTLEMENT_ADAPTOR';
const COOKIE_VALUE = '5c1d7e0a9b3f4e2c8a6d1f0b7e9c3a5d';

/** go-plugin's core protocol version, the first field of the handshake line. */
const CORE_PROTOCOL_VERSION = 1;

/** The contract versions this adaptor speaks. */
const SUPPORTED_VERSIONS = [1];

/** The longest unix socket path the contract allows, in bytes (docs: "under 100 bytes"). */
const MAX_SOCKET_PATH_BYTES = 99;

class ConfigError extends Error {}

/**
 * The version to speak: the highest one offered in PLUGIN_PROTOCOL_VERSIONS that we support,
 * our lowest when nothing is offered, null when nothing is common. Entries that are not
 * integers are ignored, as go-plugin does.
 */
function negotiateVersion(offered, supported = SUPPORTED_VERSIONS) {
  const theirs = (offered || '')
    .split(',')
    .map((item) => item.trim())
    .filter((item) => /^[0-9]+$/.test(item))
    .map(Number);
  if (theirs.length === 0) return Math.min(...supported);
  const common = supported.filter((version) => theirs.includes(version));
  return common.length === 0 ? null : Math.max(...common);
}

/** Base64 with the standard alphabet and no `=` padding, as the CERT field wants. */
function unpaddedBase64(buffer) {
  return buffer.toString('base64').replace(/=+$/, '');
}

/** The handshake line `CORE|APP|NETWORK|ADDR|PROTOCOL|CERT`, without the newline. */
function handshakeLine({ appVersion, network, address, certDer = null }) {
  const cert = certDer ? unpaddedBase64(certDer) : '';
  return [CORE_PROTOCOL_VERSION, appVersion, network, address, 'grpc', cert].join('|');
}

/** A canonical base-10 non-negative integer: digits, no sign, no leading zeros but "0". */
const CANONICAL_INTEGER = /^(0|[1-9][0-9]*)$/;
/** The peer account ids of the contract: 1 to 128 characters of [A-Za-z0-9._~-]. */
const ACCOUNT_ID = /^[A-Za-z0-9._~-]{1,128}$/;

function integerSetting(env, name, fallback, min, max) {
  const text = env[name];
  if (text === undefined || text === '') return fallback;
  if (!CANONICAL_INTEGER.test(text) || Number(text) < min || Number(text) > max) {
    throw new ConfigError(`${name}=${JSON.stringify(text)}: expected an integer ${min}..${max}`);
  }
  return Number(text);
}

/** ILP_ADAPTOR_INCOMING, e.g. "alice:500,alice:250": incoming settlements present at start. */
function parseIncoming(text) {
  if (text === undefined || text.trim() === '') return [];
  return text.split(',').map((entry) => {
    const [accountId, value, ...rest] = entry.trim().split(':');
    const amountOk = CANONICAL_INTEGER.test(value || '') && value !== '0' && value.length <= 78;
    if (rest.length > 0 || !ACCOUNT_ID.test(accountId || '') || !amountOk) {
      throw new ConfigError(
        `ILP_ADAPTOR_INCOMING entry ${JSON.stringify(entry)}: expected ACCOUNT:AMOUNT with a `
        + 'valid account id and an amount greater than zero at the ledger scale',
      );
    }
    return { accountId, value };
  });
}

/**
 * The adaptor's configuration from its environment. Throws ConfigError naming the variable
 * and the problem.
 */
function readConfig(env) {
  const transport = env.ILP_ADAPTOR_TRANSPORT || 'unix';
  if (transport !== 'unix' && transport !== 'tcp') {
    throw new ConfigError(`ILP_ADAPTOR_TRANSPORT=${JSON.stringify(transport)}: expected unix or tcp`);
  }
  const minPort = integerSetting(env, 'PLUGIN_MIN_PORT', 0, 1, 65535);
  const maxPort = integerSetting(env, 'PLUGIN_MAX_PORT', 0, 1, 65535);
  if ((minPort === 0) !== (maxPort === 0) || minPort > maxPort) {
    throw new ConfigError(
      `PLUGIN_MIN_PORT=${minPort || 'unset'} PLUGIN_MAX_PORT=${maxPort || 'unset'}: `
      + 'set both, with min <= max, or neither',
    );
  }
  const liquidity = env.ILP_ADAPTOR_LIQUIDITY || '100000000';
  if (!CANONICAL_INTEGER.test(liquidity) || liquidity.length > 78) {
    throw new ConfigError(
      `ILP_ADAPTOR_LIQUIDITY=${JSON.stringify(liquidity)}: expected a non-negative integer`,
    );
  }
  const assetCode = env.ILP_ADAPTOR_ASSET_CODE || 'USD';
  return {
    name: env.ILP_ADAPTOR_NAME || 'memory-node',
    transport,
    socketDir: env.PLUGIN_UNIX_SOCKET_DIR || null,
    portRange: minPort === 0 ? null : { min: minPort, max: maxPort },
    clientCertPem: env.PLUGIN_CLIENT_CERT || null,
    assetCode,
    assetScale: integerSetting(env, 'ILP_ADAPTOR_ASSET_SCALE', 2, 0, 255),
    liquidity: BigInt(liquidity),
    incoming: parseIncoming(env.ILP_ADAPTOR_INCOMING),
  };
}

module.exports = {
  ACCOUNT_ID,
  CANONICAL_INTEGER,
  COOKIE_KEY,
  COOKIE_VALUE,
  ConfigError,
  MAX_SOCKET_PATH_BYTES,
  SUPPORTED_VERSIONS,
  handshakeLine,
  negotiateVersion,
  readConfig,
};
