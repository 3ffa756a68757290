'use strict';
// The ledger-account exchange of SetupAccount: send the peer's adaptor our ledger account
// through the host's Engine.SendData and learn its own from the reply. The first attempt runs
// while SetupAccount waits; when it fails (the peer unreachable, its adaptor not ready, a
// malformed reply) the exchange is retried in the background, with jittered backoff capped at
// 5 s, until it succeeds, the account is deleted, or the adaptor stops.

const { backoffDelay, ledgerAccountRequest, parseLedgerAccountReply } = require('./messages');
const { describeFailure, unaryCall } = require('./rpc');

const RETRY = { initialMs: 200, maxMs: 5000 };
const CALL_TIMEOUT_MS = 5000;

class AccountExchange {
  /**
   * `engine` is an Engine client, or null when the host runs no engine (the peer then has to
   * start the exchange). `onLearned(accountId, ledgerAccount)` records the peer's account.
   */
  constructor({ grpc, engine, ledgerAccount, log, onLearned, random = Math.random }) {
    this.grpc = grpc;
    this.engine = engine;
    this.ledgerAccount = ledgerAccount;
    this.log = log;
    this.onLearned = onLearned;
    this.random = random;
    this.retrying = new Map(); // account id -> {timer, cancelled}
    this.stopped = false;
  }

  /** One attempt now; on failure, retries in the background. Resolves once the first ends. */
  async begin(accountId) {
    if (this.stopped || this.retrying.has(accountId)) return;
    if (!this.engine) {
      this.log.warn('no ILP_HOST_ENGINE_ADDR: waiting for the peer to send its ledger account', {
        account_id: accountId,
      });
      return;
    }
    const run = { timer: null, cancelled: false, attempts: 0 };
    this.retrying.set(accountId, run);
    await this.attempt(accountId, run);
  }

  /** Begin without waiting: for accounts found in the state file at start. */
  resume(accountId) {
    this.begin(accountId).catch((error) => {
      this.log.error('account exchange failed', { error: String(error && error.stack) });
    });
  }

  async attempt(accountId, run) {
    run.attempts += 1;
    let failure;
    try {
      const reply = await unaryCall(
        this.engine,
        'SendData',
        { account_id: accountId, data: ledgerAccountRequest(this.ledgerAccount) },
        CALL_TIMEOUT_MS,
      );
      if (run.cancelled) return;
      const peer = parseLedgerAccountReply(reply.data, this.ledgerAccount);
      this.finish(accountId, run);
      this.onLearned(accountId, peer);
      return;
    } catch (error) {
      failure = error;
    }
    if (run.cancelled) return;
    const delay = backoffDelay(run.attempts, RETRY, this.random);
    // Loud the first time, quiet while it keeps failing.
    this.log[run.attempts === 1 ? 'warn' : 'debug']('ledger account exchange failed; will retry', {
      account_id: accountId,
      attempts: run.attempts,
      retry_in_ms: delay,
      error: describeFailure(this.grpc, failure),
    });
    run.timer = setTimeout(() => {
      run.timer = null;
      this.attempt(accountId, run).catch((error) => {
        this.log.error('account exchange failed', { error: String(error && error.stack) });
      });
    }, delay);
  }

  finish(accountId, run) {
    if (this.retrying.get(accountId) === run) this.retrying.delete(accountId);
  }

  /** Stop exchanging for `accountId` (deleted, or its peer's account learned otherwise). */
  cancel(accountId) {
    const run = this.retrying.get(accountId);
    if (!run) return;
    run.cancelled = true;
    if (run.timer) clearTimeout(run.timer);
    this.retrying.delete(accountId);
  }

  stop() {
    this.stopped = true;
    for (const accountId of [...this.retrying.keys()]) this.cancel(accountId);
  }
}

module.exports = { AccountExchange, RETRY };
