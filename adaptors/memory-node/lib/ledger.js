'use strict';
// The memory "ledger": peer accounts, outgoing payments by idempotency key, incoming settlements
// waiting for acknowledgement, and the state of the one connection (to the ledger itself).
// Pure logic, no gRPC: every refusal is a LedgerError carrying the gRPC status name the engine
// should see (docs/protocol.md, section 7), and a refused request changes nothing.

const { ACCOUNT_ID, CANONICAL_INTEGER } = require('./contract');

class LedgerError extends Error {
  /** `code` is a gRPC status name, e.g. 'INVALID_ARGUMENT'. */
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const invalid = (message) => new LedgerError('INVALID_ARGUMENT', message);

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

/** The legal moves between connection states (docs/protocol.md, section 5). */
const TRANSITIONS = {
  IDLE: ['CONNECTING', 'SHUTDOWN'],
  CONNECTING: ['READY', 'TRANSIENT_FAILURE', 'IDLE', 'SHUTDOWN'],
  READY: ['IDLE', 'TRANSIENT_FAILURE', 'CONNECTING', 'SHUTDOWN'],
  TRANSIENT_FAILURE: ['CONNECTING', 'IDLE', 'SHUTDOWN'],
  SHUTDOWN: [],
};

/** One connection of the adaptor, moving only along the legal transitions. */
class Connection {
  constructor(name, kind, now = new Date()) {
    this.name = name;
    this.kind = kind;
    this.state = 'IDLE';
    this.since = now;
    this.lastError = '';
    this.attempts = 0;
  }

  /** Move to `state`; throws on an illegal move, returns false when already there. */
  moveTo(state, now = new Date(), error = '') {
    if (state === this.state) return false;
    if (!TRANSITIONS[this.state].includes(state)) {
      throw new Error(`illegal connection transition ${this.state} -> ${state}`);
    }
    if (state === 'READY') {
      this.attempts = 0;
      this.lastError = '';
    } else if (state === 'TRANSIENT_FAILURE') {
      this.attempts += 1;
      this.lastError = error;
    }
    this.state = state;
    this.since = now;
    return true;
  }
}

/**
 * The ledger. `incoming` lists the settlements the peer made before start ({accountId, value});
 * they get stable ids from their order ("in-1", "in-2", ...), so a restarted adaptor with the
 * same configuration reports the same ids and the engine deduplicates them.
 */
class MemoryLedger {
  constructor({ assetScale, liquidity, incoming = [] }) {
    this.assetScale = assetScale;
    this.liquidity = liquidity;
    this.accounts = new Set();
    this.payments = new Map();
    this.incoming = incoming.map(({ accountId, value }, index) => ({
      settlementId: `in-${index + 1}`,
      accountId,
      value,
      acknowledged: false,
    }));
    this.connection = new Connection('ledger', 'settlement-system');
    this.connection.moveTo('CONNECTING');
    this.connection.moveTo('READY');
  }

  /** Idempotent; returns true when the account is new. */
  setupAccount(accountId) {
    checkAccountId('account_id', accountId);
    if (this.accounts.has(accountId)) return false;
    this.accounts.add(accountId);
    return true;
  }

  /** Idempotent; returns true when the account existed. */
  deleteAccount(accountId) {
    checkAccountId('account_id', accountId);
    return this.accounts.delete(accountId);
  }

  /**
   * Pay `amount` to the peer behind `accountId`, once per idempotency key. The payment id is
   * derived from the key alone, so the same key can never pay twice. Returns
   * {settlementId, status, repeated}.
   */
  sendMoney({ accountId, amount, idempotencyKey }) {
    checkAccountId('account_id', accountId);
    const value = checkAmount('amount', amount, this.assetScale);
    if (!IDEMPOTENCY_KEY.test(idempotencyKey)) {
      throw invalid('idempotency_key: expected 1 to 128 printable ASCII characters');
    }
    const settlementId = `out:${idempotencyKey}`;
    const earlier = this.payments.get(settlementId);
    if (earlier) {
      if (earlier.accountId !== accountId || earlier.value !== amount.value) {
        throw new LedgerError(
          'ALREADY_EXISTS',
          `idempotency_key ${JSON.stringify(idempotencyKey)} was used for ${earlier.value} to `
          + `${earlier.accountId}; this request is ${amount.value} to ${accountId}`,
        );
      }
      return { settlementId, status: earlier.status, repeated: true };
    }
    if (!this.accounts.has(accountId)) {
      throw new LedgerError('NOT_FOUND', `account_id ${JSON.stringify(accountId)} is not set up`);
    }
    if (value > this.liquidity) {
      throw new LedgerError(
        'FAILED_PRECONDITION',
        `insufficient liquidity: ${amount.value} requested, ${this.liquidity} available`,
      );
    }
    this.liquidity -= value;
    this.payments.set(settlementId, { accountId, value: amount.value, status: 'COMPLETED' });
    return { settlementId, status: 'COMPLETED', repeated: false };
  }

  /** Acknowledge an incoming settlement; idempotent, NOT_FOUND for an id never reported. */
  receiveMoney(settlementId) {
    if (!settlementId) throw invalid('settlement_id is required');
    const settlement = this.incoming.find((item) => item.settlementId === settlementId);
    if (!settlement) {
      throw new LedgerError(
        'NOT_FOUND',
        `settlement_id ${JSON.stringify(settlementId)} was never reported by this ledger`,
      );
    }
    settlement.acknowledged = true;
  }

  /** The incoming settlements not yet acknowledged, in ledger order. */
  unacknowledged() {
    return this.incoming.filter((item) => !item.acknowledged);
  }

  /** What the adaptor can still pay out, as a canonical integer string. */
  balance() {
    return this.liquidity.toString();
  }
}

module.exports = { Connection, LedgerError, MemoryLedger, TRANSITIONS, checkAmount };
