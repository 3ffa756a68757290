'use strict';
// The memory ledger's own settings from the environment (README, "Configuration"), as pure
// functions. The host's variables are read by ../node-common/contract.js.

const { ACCOUNT_ID } = require('../../node-common/checks');
const { CANONICAL_INTEGER, ConfigError, integerSetting } = require('../../node-common/contract');

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

/** The ledger's settings: {assetCode, assetScale, liquidity, incoming}; ConfigError if bad. */
function readConfig(env) {
  const liquidity = env.ILP_ADAPTOR_LIQUIDITY || '100000000';
  if (!CANONICAL_INTEGER.test(liquidity) || liquidity.length > 78) {
    throw new ConfigError(
      `ILP_ADAPTOR_LIQUIDITY=${JSON.stringify(liquidity)}: expected a non-negative integer`,
    );
  }
  return {
    assetCode: env.ILP_ADAPTOR_ASSET_CODE || 'USD',
    assetScale: integerSetting(env, 'ILP_ADAPTOR_ASSET_SCALE', 2, 0, 255),
    liquidity: BigInt(liquidity),
    incoming: parseIncoming(env.ILP_ADAPTOR_INCOMING),
  };
}

module.exports = { parseIncoming, readConfig };
