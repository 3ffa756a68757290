'use strict';
// The adaptor's link to its ledger: the connection "ledger" (kind settlement-system) and the
// loop that keeps it up. An attempt learns the ledger's asset (GetLedgerInfo), opens our ledger
// account (CreateAccount, idempotent) and follows WatchTransfers from the cursor of the state
// file: READY while that stream is open. When an attempt fails or the stream ends, the link is
// TRANSIENT_FAILURE (attempts, last error) and tries again after a jittered backoff capped at
// 2 s. Every state change goes to `onChange`, every transfer into our account to `onTransfer`
// (synchronously, in ledger order).

const { Connection } = require('../../node-common/connection');
const { backoffDelay } = require('./messages');
const { describeFailure, unaryCall } = require('./rpc');

const RECONNECT = { initialMs: 100, maxMs: 2000 };
/** Deadline of the calls an attempt makes before it follows the stream. */
const CALL_TIMEOUT_MS = 5000;

class LedgerLink {
  /**
   * `client` is a SimLedger client; `state` the AdaptorState (asset and cursor);
   * `onTransfer(transfer)` handles one transfer and throws to make the link reconnect;
   * `onChange(connection)` hears every state change.
   */
  constructor({ grpc, client, account, state, log, onTransfer, onChange, random = Math.random }) {
    this.grpc = grpc;
    this.client = client;
    this.account = account;
    this.state = state;
    this.log = log;
    this.onTransfer = onTransfer;
    this.onChange = onChange;
    this.random = random;
    this.connection = new Connection('ledger', 'settlement-system');
    this.stopped = false;
    this.call = null;
    this.wake = null;
    this.running = null;
  }

  get ready() {
    return this.connection.state === 'READY';
  }

  start() {
    this.running = this.run().catch((error) => {
      this.log.error('ledger link failed', { error: String(error && error.stack) });
    });
  }

  /** Stop for good: the connection goes SHUTDOWN and the stream is cancelled. */
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    this.move('SHUTDOWN');
    if (this.call) this.call.cancel();
    if (this.wake) this.wake();
  }

  move(state, error = '') {
    const previous = this.connection.state;
    if (!this.connection.moveTo(state, error)) return;
    const fields = { from: previous, to: state, attempts: this.connection.attempts };
    if (state === 'TRANSIENT_FAILURE') {
      // Loud on the first failure, quiet while it stays down.
      const level = this.connection.attempts === 1 ? 'warn' : 'debug';
      this.log[level]('ledger connection failed', { ...fields, error });
    } else {
      this.log.info('ledger connection', fields);
    }
    this.onChange(this.connection);
  }

  async run() {
    this.move('CONNECTING');
    while (!this.stopped) {
      let failure;
      try {
        await this.connect();
        failure = await this.follow();
      } catch (error) {
        failure = error;
      }
      if (this.stopped) return;
      this.move('TRANSIENT_FAILURE', describeFailure(this.grpc, failure));
      await this.pause(backoffDelay(this.connection.attempts, RECONNECT, this.random));
      if (this.stopped) return;
      this.move('CONNECTING');
    }
  }

  async connect() {
    const info = await unaryCall(this.client, 'GetLedgerInfo', {}, CALL_TIMEOUT_MS);
    const known = this.state.asset();
    if (!known || known.code !== info.asset_code || known.scale !== info.asset_scale) {
      if (known) {
        this.log.warn('the ledger changed its asset', {
          was: `${known.code}/${known.scale}`,
          now: `${info.asset_code}/${info.asset_scale}`,
        });
      }
      this.state.setAsset(info.asset_code, info.asset_scale);
    }
    await unaryCall(this.client, 'CreateAccount', { account_id: this.account }, CALL_TIMEOUT_MS);
  }

  /** Follow WatchTransfers; resolves with why it ended (an error, or the end of the stream). */
  follow() {
    return new Promise((resolve) => {
      if (this.stopped) {
        resolve(new Error('stopped'));
        return;
      }
      const call = this.client.WatchTransfers({
        account_id: this.account,
        after_sequence: this.state.cursor(),
      });
      this.call = call;
      let ended = false;
      const end = (reason) => {
        if (ended) return;
        ended = true;
        this.call = null;
        resolve(reason);
      };
      call.on('data', (message) => {
        if (ended) return;
        try {
          this.onTransfer(message.transfer);
        } catch (error) {
          // Nothing was recorded (one transaction): reconnect and resume from the cursor.
          this.log.error('could not record a transfer', { error: String(error && error.stack) });
          end(error);
          call.cancel();
        }
      });
      call.on('error', end);
      call.on('end', () => end(new Error('the ledger ended the transfer stream')));
      this.move('READY');
    });
  }

  pause(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        this.wake = null;
        done();
      };
    });
  }
}

module.exports = { LedgerLink, RECONNECT };
