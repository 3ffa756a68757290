'use strict';
// Pure pieces of the adaptor's conversations: the ledger-account message the two adaptors of a
// peering exchange through Engine.SendData / ReceiveData (the same JSON as simledger-python, so
// either can peer with the other), and the jittered, capped backoff of every retry loop.

const { invalid } = require('../../node-common/checks');
const { LEDGER_ACCOUNT } = require('./config');

/** The most ReceiveData may carry: the data limit of an ILP packet. */
const MAX_DATA_BYTES = 32767;
const LEDGER_ACCOUNT_TYPE = 'ledger_account';

/** `{"type": "ledger_account", "ledger_account": "<account>"}` as bytes. */
function ledgerAccountMessage(ledgerAccount) {
  return Buffer.from(JSON.stringify({ type: LEDGER_ACCOUNT_TYPE, ledger_account: ledgerAccount }));
}

/**
 * The peer's ledger account from a ledger-account message; INVALID_ARGUMENT (an AdaptorError)
 * for anything else, including a message naming `ours` (both sides on one ledger account
 * could only pay themselves).
 */
function parseLedgerAccountMessage(data, ours) {
  if (data.length > MAX_DATA_BYTES) {
    throw invalid(`data has ${data.length} bytes, at most ${MAX_DATA_BYTES}`);
  }
  let message;
  try {
    message = JSON.parse(Buffer.from(data).toString('utf8'));
  } catch (error) {
    throw invalid(`data is not a JSON message: ${error.message}`);
  }
  if (message === null || typeof message !== 'object' || Array.isArray(message)) {
    throw invalid('data is not a JSON object');
  }
  if (message.type !== LEDGER_ACCOUNT_TYPE) {
    throw invalid(
      `message type ${JSON.stringify(message.type)}: this adaptor understands only `
      + `${JSON.stringify(LEDGER_ACCOUNT_TYPE)}`,
    );
  }
  const account = message.ledger_account;
  if (typeof account !== 'string' || !LEDGER_ACCOUNT.test(account)) {
    throw invalid(
      `ledger_account ${JSON.stringify(account)}: expected 1 to 128 characters of [A-Za-z0-9._~:-]`,
    );
  }
  if (account === ours) {
    throw invalid(`ledger_account ${JSON.stringify(account)} is this adaptor's own account`);
  }
  return account;
}

/**
 * Milliseconds to wait before retry number `attempt` (1, 2, ...): doubling from `initialMs`,
 * capped at `maxMs`, with its upper half jittered so that many retriers spread out.
 */
function backoffDelay(attempt, { initialMs, maxMs }, random = Math.random) {
  const exponent = Math.min(Math.max(attempt, 1) - 1, 30);
  const ceiling = Math.min(maxMs, initialMs * 2 ** exponent);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

module.exports = {
  MAX_DATA_BYTES,
  backoffDelay,
  ledgerAccountMessage,
  parseLedgerAccountMessage,
};
