'use strict';
// What the adaptor does on the simulated ledger (README, "Behaviour"): accounts and their
// peers' ledger accounts, SendMoney as one idempotent ledger transfer, incoming transfers
// turned into settlements that wait for ReceiveMoney, and the balance. Refusals are
// AdaptorErrors with the status the engine should see; a refused request changes nothing.
// Protobuf shapes stay in services.js.

const {
  AdaptorError, checkAccountId, checkAmount, checkIdempotencyKey, invalid,
} = require('../../node-common/checks');
const { AccountExchange } = require('./exchange');
const { LedgerLink } = require('./ledger-link');
const { ledgerAccountReply, parseLedgerAccountRequest } = require('./messages');
const { describeFailure, statusName, unaryCall } = require('./rpc');

/** Deadline of a ledger call made for the engine. */
const LEDGER_CALL_TIMEOUT_MS = 10000;
/** Shorter for GetInfo's question, which the host asks with its own start timeout. */
const ASSET_CALL_TIMEOUT_MS = 3000;

/**
 * A definite refusal of the ledger's Transfer, as the engine should see it; any other failure
 * leaves the outcome unknown: UNAVAILABLE, retry with the same key.
 */
const TRANSFER_REFUSALS = {
  FAILED_PRECONDITION: 'FAILED_PRECONDITION', // insufficient funds
  NOT_FOUND: 'FAILED_PRECONDITION', // an account missing on the ledger
  ALREADY_EXISTS: 'ALREADY_EXISTS', // the transfer id was used with other content
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
};

class SimLedgerAdaptor {
  /**
   * `ledger` is a SimLedger client, `engine` an Engine client or null. `onIncoming(incoming)`
   * hears each settlement to report live, `onConnection(connection)` each change of the
   * ledger connection.
   */
  constructor({ grpc, ledger, engine, ledgerAccount, state, log, onIncoming, onConnection }) {
    this.grpc = grpc;
    this.ledger = ledger;
    this.ledgerAccount = ledgerAccount;
    this.state = state;
    this.log = log;
    this.onIncoming = onIncoming;
    this.link = new LedgerLink({
      grpc,
      client: ledger,
      account: ledgerAccount,
      state,
      log,
      onTransfer: (transfer) => this.transferArrived(transfer),
      onChange: onConnection,
    });
    this.exchange = new AccountExchange({
      grpc,
      engine,
      ledgerAccount,
      log,
      onLearned: (accountId, peer) => this.learnPeer(accountId, peer),
    });
  }

  /** Connect to the ledger; resume the exchanges left unfinished by the last run. */
  start() {
    this.link.start();
    for (const { accountId, peer } of this.state.accounts()) {
      if (!peer) this.exchange.resume(accountId);
    }
  }

  stop() {
    this.exchange.stop();
    this.link.stop();
  }

  get connection() {
    return this.link.connection;
  }

  /**
   * The ledger's asset {code, scale}: remembered in the state file, or asked of the ledger
   * when it never answered yet (the host asks GetInfo as soon as we serve, and the link may
   * not have got there first); UNAVAILABLE while the ledger cannot say.
   */
  async asset() {
    const known = this.state.asset();
    if (known) return known;
    let info;
    try {
      info = await unaryCall(this.ledger, 'GetLedgerInfo', {}, ASSET_CALL_TIMEOUT_MS);
    } catch (error) {
      throw new AdaptorError(
        'UNAVAILABLE',
        'the ledger has never answered, so its asset is unknown: retry once it is reachable '
        + `(${describeFailure(this.grpc, error)})`,
      );
    }
    this.state.setAsset(info.asset_code, info.asset_scale);
    return this.state.asset();
  }

  // --- accounts -------------------------------------------------------------------------------

  async setupAccount(accountId) {
    checkAccountId('account_id', accountId);
    if (this.state.addAccount(accountId)) {
      this.log.info('account set up', { account_id: accountId });
    }
    if (this.state.account(accountId).peer) return;
    await this.exchange.begin(accountId);
  }

  deleteAccount(accountId) {
    checkAccountId('account_id', accountId);
    this.exchange.cancel(accountId);
    if (this.state.deleteAccount(accountId)) {
      this.log.info('account deleted', { account_id: accountId });
    }
  }

  /** A message from the peer's adaptor: its ledger account. The reply names ours. */
  receiveData(accountId, data) {
    checkAccountId('account_id', accountId);
    if (!this.state.account(accountId)) {
      throw new AdaptorError('NOT_FOUND', `account_id ${JSON.stringify(accountId)} is not set up`);
    }
    const peer = parseLedgerAccountRequest(data, this.ledgerAccount);
    // The peer now knows ours from the reply, and we know theirs: no need to keep sending.
    this.exchange.cancel(accountId);
    this.learnPeer(accountId, peer);
    return ledgerAccountReply(this.ledgerAccount);
  }

  learnPeer(accountId, peer) {
    const learned = this.state.learnPeer(accountId, peer);
    if (!learned.changed) return;
    const fields = { account_id: accountId, peer_ledger_account: peer };
    if (learned.previous) {
      this.log.warn('the peer changed its ledger account', { ...fields, was: learned.previous });
    } else {
      this.log.info('peer ledger account learned', fields);
    }
    for (const incoming of learned.attributed) this.report(incoming);
  }

  // --- outgoing -------------------------------------------------------------------------------

  /**
   * Pay `amount` to the peer behind `accountId` once per `key`: the transfer id is
   * "<our ledger account>:<key>", so the ledger itself refuses to pay a key twice, even after
   * a restart of this adaptor. Returns {settlementId, status, repeated}.
   */
  async sendMoney({ accountId, amount, key }) {
    checkAccountId('account_id', accountId);
    checkIdempotencyKey(key);
    checkAmount('amount', amount, (await this.asset()).scale);
    let payment = this.state.payment(key);
    const repeated = payment !== undefined;
    if (repeated && (payment.accountId !== accountId || payment.value !== amount.value)) {
      throw new AdaptorError(
        'ALREADY_EXISTS',
        `idempotency_key ${JSON.stringify(key)} was used for ${payment.value} to `
        + `${payment.accountId}; this request is ${amount.value} to ${accountId}`,
      );
    }
    if (!repeated) {
      const account = this.state.account(accountId);
      if (!account) {
        throw new AdaptorError(
          'NOT_FOUND',
          `account_id ${JSON.stringify(accountId)} is not set up`,
        );
      }
      if (!account.peer) {
        throw new AdaptorError(
          'FAILED_PRECONDITION',
          `the ledger account of the peer behind ${JSON.stringify(accountId)} is not known yet `
          + '(the exchange through the engine has not succeeded): retry later',
        );
      }
      // Recorded before the transfer: from now on the key means this account and amount.
      payment = {
        accountId,
        value: amount.value,
        transferId: `${this.ledgerAccount}:${key}`,
        peer: account.peer,
      };
      this.state.addPayment(key, payment);
    }
    await this.transfer(payment, amount.scale);
    if (!repeated) {
      this.log.info('paid', {
        account_id: accountId, amount: amount.value, settlement_id: payment.transferId,
      });
    }
    return { settlementId: payment.transferId, status: 'COMPLETED', repeated };
  }

  async transfer(payment, scale) {
    try {
      await unaryCall(this.ledger, 'Transfer', {
        transfer_id: payment.transferId,
        from_account_id: this.ledgerAccount,
        to_account_id: payment.peer,
        amount: { value: payment.value, scale },
        memo: this.ledgerAccount,
      }, LEDGER_CALL_TIMEOUT_MS);
    } catch (error) {
      const refusal = TRANSFER_REFUSALS[statusName(this.grpc, error)];
      const what = `transfer ${JSON.stringify(payment.transferId)}`;
      if (refusal) {
        throw new AdaptorError(refusal, `the ledger refused ${what}: ${error.details}`);
      }
      throw new AdaptorError(
        'UNAVAILABLE',
        `${what}: the ledger did not answer (${describeFailure(this.grpc, error)}); the outcome `
        + 'is unknown: retry with the same idempotency key',
      );
    }
  }

  // --- incoming -------------------------------------------------------------------------------

  /** A transfer into our account, from the ledger link (synchronous, in ledger order). */
  transferArrived(transfer) {
    const incoming = this.state.recordTransfer(transfer);
    if (!incoming) return;
    if (incoming.accountId) {
      this.report(incoming);
    } else {
      this.log.info('transfer from an unknown payer kept until its peer is known', {
        transfer_id: incoming.transferId, payer: incoming.payer, amount: incoming.value,
      });
    }
  }

  report(incoming) {
    this.log.info('incoming settlement', {
      settlement_id: incoming.transferId, account_id: incoming.accountId, amount: incoming.value,
    });
    this.onIncoming(incoming);
  }

  /** The settlements to re-deliver on a new WatchEvents stream, in ledger order. */
  unacknowledged() {
    return this.state.unacknowledged();
  }

  /** Acknowledge a reported settlement; idempotent; NOT_FOUND for an id never reported. */
  receiveMoney(settlementId) {
    if (!settlementId) throw invalid('settlement_id is required');
    const incoming = this.state.incoming(settlementId);
    if (!incoming || !incoming.accountId) {
      throw new AdaptorError(
        'NOT_FOUND',
        `settlement_id ${JSON.stringify(settlementId)} was never reported by this adaptor`,
      );
    }
    if (!incoming.acknowledged) {
      this.state.acknowledge(settlementId);
      this.log.info('settlement acknowledged', { settlement_id: settlementId });
    }
  }

  // --- balance --------------------------------------------------------------------------------

  /** Our ledger account's balance {value, scale}; UNAVAILABLE while the ledger is not. */
  async balance() {
    try {
      const reply = await unaryCall(
        this.ledger, 'GetAccount', { account_id: this.ledgerAccount }, LEDGER_CALL_TIMEOUT_MS,
      );
      return reply.account.balance;
    } catch (error) {
      throw new AdaptorError(
        'UNAVAILABLE',
        `the balance of ledger account ${JSON.stringify(this.ledgerAccount)} is unknown: `
        + describeFailure(this.grpc, error),
      );
    }
  }
}

module.exports = { SimLedgerAdaptor, TRANSFER_REFUSALS };
