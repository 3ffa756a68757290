'use strict';
// The adaptor's own settings from the environment (README, "Run"), as pure functions. The
// host's variables are read by ../node-common/contract.js. A missing or malformed variable is a
// ConfigError naming it: the adaptor exits 1 before the handshake.

const { ConfigError } = require('../../node-common/contract');

/** Ledger account ids of the simulated ledger: 1 to 128 of [A-Za-z0-9._~:-]. */
const LEDGER_ACCOUNT = /^[A-Za-z0-9._~:-]{1,128}$/;
/** A gRPC target: "unix:PATH", or "HOST:PORT" (a bracketed IPv6 host allowed). */
const UNIX_TARGET = /^unix:.+$/;
const TCP_TARGET = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/;

function isTarget(text) {
  if (UNIX_TARGET.test(text)) return true;
  const tcp = TCP_TARGET.exec(text);
  return tcp !== null && Number(tcp[2]) >= 1 && Number(tcp[2]) <= 65535;
}

function required(env, name) {
  const value = env[name];
  if (value === undefined || value === '') throw new ConfigError(`${name} is not set`);
  return value;
}

function target(name, value) {
  if (!isTarget(value)) {
    throw new ConfigError(
      `${name}=${JSON.stringify(value)}: expected a gRPC target, "unix:/path" or "host:port"`,
    );
  }
  return value;
}

/**
 * {ledgerAddress, ledgerAccount, stateFile, engineAddress (null when the host runs no
 * engine)}; throws ConfigError.
 */
function readConfig(env) {
  const ledgerAccount = required(env, 'ILP_SIMLEDGER_ACCOUNT');
  if (!LEDGER_ACCOUNT.test(ledgerAccount)) {
    throw new ConfigError(
      `ILP_SIMLEDGER_ACCOUNT=${JSON.stringify(ledgerAccount)}: expected 1 to 128 characters `
      + 'of [A-Za-z0-9._~:-]',
    );
  }
  const engine = env.ILP_HOST_ENGINE_ADDR;
  return {
    ledgerAddress: target('ILP_SIMLEDGER_ADDR', required(env, 'ILP_SIMLEDGER_ADDR')),
    ledgerAccount,
    stateFile: required(env, 'ILP_ADAPTOR_STATE_DB'),
    engineAddress: engine ? target('ILP_HOST_ENGINE_ADDR', engine) : null,
  };
}

module.exports = { LEDGER_ACCOUNT, isTarget, readConfig };
