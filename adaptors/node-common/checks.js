'use strict';
// Validation of what the engine sends (docs/protocol.md, sections 5 and 7), as pure functions.
// Every refusal is an AdaptorError carrying the gRPC status name the engine should see; the
// message names the field and the problem.

const { CANONICAL_INTEGER } = require('./contract');

class AdaptorError extends Error {
  /** `code` is a gRPC status name, e.g. 'INVALID_ARGUMENT'. */
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const invalid = (message) => new AdaptorError('INVALID_ARGUMENT', message);

/** The peer account ids of the contract: 1 to 128 characters of [A-Za-z0-9._~-]. */
const ACCOUNT_ID = /^[A-Za-z0-9._~-]{1,128}$/;
/** Idempotency keys: 1 to 128 printable ASCII characters. */
const IDEMPOTENCY_KEY = /^[\x20-\x7e]{1,128}$/;
const MAX_AMOUNT_DIGITS = 78;
const MAX_SCALE = 255;

function checkAccountId(field, accountId) {
  if (!ACCOUNT_ID.test(accountId)) {
    throw invalid(
      `${field} ${JSON.stringify(accountId)}: expected 1 to 128 characters of [A-Za-z0-9._~-]`,
    );
  }
}

function checkIdempotencyKey(key) {
  if (!IDEMPOTENCY_KEY.test(key)) {
    throw invalid('idempotency_key: expected 1 to 128 printable ASCII characters');
  }
}

/** A positive amount at the ledger's scale, as a BigInt; anything else is INVALID_ARGUMENT. */
function checkAmount(field, amount, ledgerScale) {
  if (!amount) throw invalid(`${field} is required`);
  const { value, scale } = amount;
  if (!CANONICAL_INTEGER.test(value)) {
    throw invalid(
      `${field}.value ${JSON.stringify(value)}: expected base-10 digits, no sign, no fraction, `
      + 'no leading zeros',
    );
  }
  if (value.length > MAX_AMOUNT_DIGITS) {
    throw invalid(`${field}.value has ${value.length} digits, at most ${MAX_AMOUNT_DIGITS}`);
  }
  if (scale > MAX_SCALE) throw invalid(`${field}.scale ${scale}: at most ${MAX_SCALE}`);
  if (scale !== ledgerScale) {
    throw invalid(`${field}.scale ${scale}: this ledger counts at scale ${ledgerScale}`);
  }
  if (value === '0') throw invalid(`${field}.value must be greater than zero`);
  return BigInt(value);
}

module.exports = {
  ACCOUNT_ID,
  AdaptorError,
  IDEMPOTENCY_KEY,
  checkAccountId,
  checkAmount,
  checkIdempotencyKey,
  invalid,
};
