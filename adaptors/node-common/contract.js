'use strict';
// The process contract of docs/protocol.md as pure functions: the magic cookie, contract version
// negotiation, the handshake line, and the host's variables (section 2) read from the
// environment. No I/O here: serve.js does the listening, printing and exiting.

const COOKIE_KEY = 'ILP_SETTLEMENT_ADAPTOR';
const COOKIE_VALUE = '5c1d7e0a9b3f4e2c8a6d1f0b7e9c3a5d';

/** go-plugin's core protocol version, the first field of the handshake line. */
const CORE_PROTOCOL_VERSION = 1;

/** The contract versions these adaptors speak. */
const SUPPORTED_VERSIONS = [1];

/** The longest unix socket path the contract allows, in bytes (docs: "under 100 bytes"). */
const MAX_SOCKET_PATH_BYTES = 99;

/** A configuration problem: the adaptor prints the message and exits 1 before the handshake. */
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

/** An integer variable in min..max, or `fallback` when unset or empty; else ConfigError. */
function integerSetting(env, name, fallback, min, max) {
  const text = env[name];
  if (text === undefined || text === '') return fallback;
  if (!CANONICAL_INTEGER.test(text) || Number(text) < min || Number(text) > max) {
    throw new ConfigError(`${name}=${JSON.stringify(text)}: expected an integer ${min}..${max}`);
  }
  return Number(text);
}

/**
 * The host's variables (docs/protocol.md, section 2): {name, transport, socketDir, portRange,
 * clientCertPem}. `program` names the adaptor when ILP_ADAPTOR_NAME is unset. Throws
 * ConfigError naming the variable and the problem.
 */
function readProcessConfig(env, program) {
  const transport = env.ILP_ADAPTOR_TRANSPORT || 'unix';
  if (transport !== 'unix' && transport !== 'tcp') {
    throw new ConfigError(
      `ILP_ADAPTOR_TRANSPORT=${JSON.stringify(transport)}: expected unix or tcp`,
    );
  }
  const minPort = integerSetting(env, 'PLUGIN_MIN_PORT', 0, 1, 65535);
  const maxPort = integerSetting(env, 'PLUGIN_MAX_PORT', 0, 1, 65535);
  if ((minPort === 0) !== (maxPort === 0) || minPort > maxPort) {
    throw new ConfigError(
      `PLUGIN_MIN_PORT=${minPort || 'unset'} PLUGIN_MAX_PORT=${maxPort || 'unset'}: `
      + 'set both, with min <= max, or neither',
    );
  }
  return {
    name: env.ILP_ADAPTOR_NAME || program,
    transport,
    socketDir: env.PLUGIN_UNIX_SOCKET_DIR || null,
    portRange: minPort === 0 ? null : { min: minPort, max: maxPort },
    clientCertPem: env.PLUGIN_CLIENT_CERT || null,
  };
}

module.exports = {
  CANONICAL_INTEGER,
  COOKIE_KEY,
  COOKIE_VALUE,
  ConfigError,
  MAX_SOCKET_PATH_BYTES,
  SUPPORTED_VERSIONS,
  handshakeLine,
  integerSetting,
  negotiateVersion,
  readProcessConfig,
};
