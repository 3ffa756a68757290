'use strict';
// The gRPC services of the adaptor (docs/protocol.md, section 5): LedgerAdaptor over the memory
// ledger, grpc.health.v1.Health with "plugin" SERVING, and plugin.GRPCController's Shutdown.
// Handlers translate between protobuf objects (proto-loader, keepCase) and the ledger, and map
// LedgerError codes to gRPC statuses. Open streams are tracked so that a stop can end them.

const grpc = require('@grpc/grpc-js');
const { LedgerError } = require('./ledger');

const CAPABILITIES = ['send_money', 'receive_money', 'balance', 'accounts'];

function timestampOf(date) {
  const millis = date.getTime();
  return { seconds: Math.floor(millis / 1000), nanos: (millis % 1000) * 1e6 };
}

function connectionMessage(connection) {
  return {
    name: connection.name,
    kind: connection.kind,
    state: `CONNECTIVITY_STATE_${connection.state}`,
    since: timestampOf(connection.since),
    last_error: connection.lastError,
    attempts: connection.attempts,
  };
}

function incomingMessage(settlement, scale) {
  return {
    incoming_settlement: {
      settlement_id: settlement.settlementId,
      account_id: settlement.accountId,
      amount: { value: settlement.value, scale },
    },
  };
}

class AdaptorServices {
  /**
   * `info` is {name, version, assetCode, assetScale, contractVersions}; `onShutdown` is called
   * once the Shutdown RPC has been answered.
   */
  constructor({ ledger, info, log, onShutdown }) {
    this.ledger = ledger;
    this.info = info;
    this.log = log;
    this.onShutdown = onShutdown;
    this.eventStreams = new Set();
    this.healthStatus = new Map([['', 'SERVING'], ['plugin', 'SERVING']]);
    this.healthStreams = new Set();
  }

  /** Wrap a synchronous unary handler: LedgerError -> its status, anything else -> INTERNAL. */
  unary(method, handler) {
    return (call, callback) => {
      try {
        callback(null, handler(call.request));
      } catch (error) {
        if (error instanceof LedgerError) {
          this.log.debug('request refused', { method, code: error.code, error: error.message });
          callback({ code: grpc.status[error.code], details: error.message });
        } else {
          this.log.error('handler failed', { method, error: String(error && error.stack) });
          callback({ code: grpc.status.INTERNAL, details: `internal error: ${error}` });
        }
      }
    };
  }

  /** Handlers of ilphost.adaptor.v1.LedgerAdaptor. */
  ledgerAdaptor() {
    const { ledger, info } = this;
    return {
      GetInfo: this.unary('GetInfo', () => ({
        name: info.name,
        version: info.version,
        ledger: 'memory',
        asset_code: info.assetCode,
        asset_scale: info.assetScale,
        capabilities: CAPABILITIES,
        contract_versions: info.contractVersions,
      })),
      Probe: this.unary('Probe', () => ({
        ready: { value: ledger.connection.state === 'READY' },
        connections: [connectionMessage(ledger.connection)],
      })),
      SetupAccount: this.unary('SetupAccount', (request) => {
        if (ledger.setupAccount(request.account_id)) {
          this.log.info('account set up', { account_id: request.account_id });
        }
        return {};
      }),
      DeleteAccount: this.unary('DeleteAccount', (request) => {
        if (ledger.deleteAccount(request.account_id)) {
          this.log.info('account deleted', { account_id: request.account_id });
        }
        return {};
      }),
      SendMoney: this.unary('SendMoney', (request) => {
        const result = ledger.sendMoney({
          accountId: request.account_id,
          amount: request.amount,
          idempotencyKey: request.idempotency_key,
        });
        if (!result.repeated) {
          this.log.info('paid', {
            account_id: request.account_id,
            amount: request.amount.value,
            settlement_id: result.settlementId,
          });
        }
        return {
          settlement_id: result.settlementId,
          status: `SETTLEMENT_STATUS_${result.status}`,
        };
      }),
      ReceiveMoney: this.unary('ReceiveMoney', (request) => {
        ledger.receiveMoney(request.settlement_id);
        return {};
      }),
      ReceiveData: (call, callback) => {
        callback({
          code: grpc.status.UNIMPLEMENTED,
          details: 'ReceiveData: this adaptor does not declare the "data" capability',
        });
      },
      GetBalance: this.unary('GetBalance', () => ({
        balance: { value: ledger.balance(), scale: info.assetScale },
      })),
      WatchEvents: (call) => {
        // Headers now, so the host sees the stream established before any event exists.
        call.sendMetadata(new grpc.Metadata());
        for (const settlement of ledger.unacknowledged()) {
          call.write(incomingMessage(settlement, info.assetScale));
        }
        this.follow(this.eventStreams, call);
      },
    };
  }

  /** Handlers of grpc.health.v1.Health. */
  health() {
    return {
      Check: (call, callback) => {
        const status = this.healthStatus.get(call.request.service);
        if (status === undefined) {
          callback({
            code: grpc.status.NOT_FOUND,
            details: `unknown service ${JSON.stringify(call.request.service)}`,
          });
        } else {
          callback(null, { status });
        }
      },
      Watch: (call) => {
        call.write({ status: this.healthStatus.get(call.request.service) || 'SERVICE_UNKNOWN' });
        this.follow(this.healthStreams, call);
      },
    };
  }

  /** Handlers of plugin.GRPCController. */
  controller() {
    return {
      Shutdown: (call, callback) => {
        callback(null, {});
        setImmediate(this.onShutdown);
      },
    };
  }

  /** Keep a server stream in `streams` until the client goes away. */
  follow(streams, call) {
    streams.add(call);
    const forget = () => streams.delete(call);
    call.on('cancelled', forget);
    call.on('close', forget);
    call.on('error', forget);
  }

  /**
   * Begin stopping: health goes NOT_SERVING, the ledger connection SHUTDOWN (both announced to
   * open streams), then every open stream ends with OK so the server can close gracefully.
   */
  stop() {
    for (const service of this.healthStatus.keys()) this.healthStatus.set(service, 'NOT_SERVING');
    for (const call of this.healthStreams) {
      const status = this.healthStatus.get(call.request.service);
      if (status) call.write({ status });
    }
    if (this.ledger.connection.moveTo('SHUTDOWN')) {
      const change = { connection_changed: connectionMessage(this.ledger.connection) };
      for (const call of this.eventStreams) call.write(change);
    }
    for (const call of [...this.eventStreams, ...this.healthStreams]) call.end();
    this.eventStreams.clear();
    this.healthStreams.clear();
  }
}

module.exports = { AdaptorServices, CAPABILITIES };
