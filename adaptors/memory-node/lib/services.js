'use strict';
// The LedgerAdaptor handlers over the memory ledger (docs/protocol.md, section 5). They
// translate between protobuf objects (proto-loader, keepCase) and the ledger; refusals are
// AdaptorErrors, answered with their status by node-common's `unary`. Health, GRPCController
// and the process around them are ../node-common/serve.js.

const { connectionMessage } = require('../../node-common/connection');
const { EventStreams, unary } = require('../../node-common/services');

const CAPABILITIES = ['send_money', 'receive_money', 'balance', 'accounts'];

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
  /** `info` is {name, version, assetCode, assetScale, contractVersions}. */
  constructor({ grpc, ledger, info, log }) {
    this.grpc = grpc;
    this.ledger = ledger;
    this.info = info;
    this.log = log;
    this.events = new EventStreams(grpc);
  }

  /** Handlers of ilphost.adaptor.v1.LedgerAdaptor. */
  ledgerAdaptor() {
    const { grpc, ledger, info, log } = this;
    const handle = (method, handler) => unary(grpc, log, method, handler);
    return {
      GetInfo: handle('GetInfo', () => ({
        name: info.name,
        version: info.version,
        ledger: 'memory',
        asset_code: info.assetCode,
        asset_scale: info.assetScale,
        capabilities: CAPABILITIES,
        contract_versions: info.contractVersions,
      })),
      Probe: handle('Probe', () => ({
        ready: { value: ledger.connection.state === 'READY' },
        connections: [connectionMessage(ledger.connection)],
      })),
      SetupAccount: handle('SetupAccount', (request) => {
        if (ledger.setupAccount(request.account_id)) {
          log.info('account set up', { account_id: request.account_id });
        }
        return {};
      }),
      DeleteAccount: handle('DeleteAccount', (request) => {
        if (ledger.deleteAccount(request.account_id)) {
          log.info('account deleted', { account_id: request.account_id });
        }
        return {};
      }),
      SendMoney: handle('SendMoney', (request) => {
        const result = ledger.sendMoney({
          accountId: request.account_id,
          amount: request.amount,
          idempotencyKey: request.idempotency_key,
        });
        if (!result.repeated) {
          log.info('paid', {
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
      ReceiveMoney: handle('ReceiveMoney', (request) => {
        ledger.receiveMoney(request.settlement_id);
        return {};
      }),
      ReceiveData: (call, callback) => {
        callback({
          code: grpc.status.UNIMPLEMENTED,
          details: 'ReceiveData: this adaptor does not declare the "data" capability',
        });
      },
      GetBalance: handle('GetBalance', () => ({
        balance: { value: ledger.balance(), scale: info.assetScale },
      })),
      WatchEvents: (call) => {
        const backlog = ledger.unacknowledged().map((s) => incomingMessage(s, info.assetScale));
        this.events.open(call, [connectionMessage(ledger.connection)], backlog);
      },
    };
  }

  /**
   * A stop began: the ledger connection goes SHUTDOWN, which open WatchEvents streams receive
   * before they end with OK, so the server can close gracefully.
   */
  stopping() {
    const moved = this.ledger.connection.moveTo('SHUTDOWN');
    const change = { connection_changed: connectionMessage(this.ledger.connection) };
    this.events.end(moved ? change : null);
  }
}

module.exports = { AdaptorServices, CAPABILITIES };
