'use strict';
// The memory "ledger": peer accounts, outgoing payments by idempotency key, incoming settlements
// waiting for acknowledgement, and the state of the one connection (to the ledger itself).
// Pure logic, no gRPC: every refusal is an AdaptorError carrying the gRPC status name the engine
// should see (docs/protocol.md, section 7), and a refused request changes nothing.

const {
  AdaptorError, checkAccountId, checkAmount, checkIdempotencyKey, invalid,
} = require('../../node-common/checks');
const { Connection } = require('../../node-common/connection');

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
    checkIdempotencyKey(idempotencyKey);
    const settlementId = `out:${idempotencyKey}`;
    const earlier = this.payments.get(settlementId);
    if (earlier) {
      if (earlier.accountId !== accountId || earlier.value !== amount.value) {
        throw new AdaptorError(
          'ALREADY_EXISTS',
          `idempotency_key ${JSON.stringify(idempotencyKey)} was used for ${earlier.value} to `
          + `${earlier.accountId}; this request is ${amount.value} to ${accountId}`,
        );
      }
      return { settlementId, status: earlier.status, repeated: true };
    }
    if (!this.accounts.has(accountId)) {
      throw new AdaptorError('NOT_FOUND', `account_id ${JSON.stringify(accountId)} is not set up`);
    }
    if (value > this.liquidity) {
      throw new AdaptorError(
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
      throw new AdaptorError(
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

module.exports = { MemoryLedger };
