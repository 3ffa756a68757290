'use strict';
// The LedgerAdaptor handlers (docs/protocol.md, section 5) over SimLedgerAdaptor: protobuf
// objects (proto-loader, keepCase) in and out, refusals answered with their status by
// node-common's `unary`, and the WatchEvents streams with their re-deliveries.

const { connectionMessage } = require('../../node-common/connection');
const { EventStreams, unary } = require('../../node-common/services');

const CAPABILITIES = ['send_money', 'receive_money', 'data', 'balance', 'accounts'];

function incomingMessage(incoming) {
  return {
    incoming_settlement: {
      settlement_id: incoming.transferId,
      account_id: incoming.accountId,
      amount: { value: incoming.value, scale: incoming.scale },
    },
  };
}

class AdaptorServices {
  /** `info` is {name, version, contractVersions}. */
  constructor({ grpc, log, info }) {
    this.grpc = grpc;
    this.log = log;
    this.info = info;
    this.events = new EventStreams(grpc);
    this.adaptor = null;
  }

  /** Hooks for SimLedgerAdaptor: what it reports goes to every open WatchEvents stream. */
  reporters() {
    return {
      onIncoming: (incoming) => this.events.broadcast(incomingMessage(incoming)),
      onConnection: (connection) => {
        this.events.broadcast({ connection_changed: connectionMessage(connection) });
      },
    };
  }

  /** Handlers of ilphost.adaptor.v1.LedgerAdaptor over `adaptor`. */
  ledgerAdaptor(adaptor) {
    this.adaptor = adaptor;
    const { info } = this;
    const handle = (method, handler) => unary(this.grpc, this.log, method, handler);
    return {
      GetInfo: handle('GetInfo', async () => {
        const asset = await adaptor.asset();
        return {
          name: info.name,
          version: info.version,
          ledger: 'simledger',
          asset_code: asset.code,
          asset_scale: asset.scale,
          capabilities: CAPABILITIES,
          contract_versions: info.contractVersions,
        };
      }),
      Probe: handle('Probe', () => ({
        ready: { value: adaptor.connection.state === 'READY' },
        connections: [connectionMessage(adaptor.connection)],
      })),
      SetupAccount: handle('SetupAccount', async (request) => {
        await adaptor.setupAccount(request.account_id);
        return {};
      }),
      DeleteAccount: handle('DeleteAccount', (request) => {
        adaptor.deleteAccount(request.account_id);
        return {};
      }),
      SendMoney: handle('SendMoney', async (request) => {
        const result = await adaptor.sendMoney({
          accountId: request.account_id,
          amount: request.amount,
          key: request.idempotency_key,
        });
        return {
          settlement_id: result.settlementId,
          status: `SETTLEMENT_STATUS_${result.status}`,
        };
      }),
      ReceiveMoney: handle('ReceiveMoney', (request) => {
        adaptor.receiveMoney(request.settlement_id);
        return {};
      }),
      ReceiveData: handle('ReceiveData', (request) => ({
        data: adaptor.receiveData(request.account_id, request.data),
      })),
      GetBalance: handle('GetBalance', async () => ({ balance: await adaptor.balance() })),
      WatchEvents: (call) => {
        // Snapshot and registration in one turn of the event loop: nothing reported in
        // between can be missed or sent twice. The connection's state comes first.
        this.events.open(
          call,
          [connectionMessage(adaptor.connection)],
          adaptor.unacknowledged().map(incomingMessage),
        );
      },
    };
  }

  /**
   * A stop began: the adaptor stops its link (the ledger connection goes SHUTDOWN, which open
   * streams receive) and its exchanges; then every stream ends with OK.
   */
  stopping() {
    if (this.adaptor) this.adaptor.stop();
    this.events.end();
  }
}

module.exports = { AdaptorServices, CAPABILITIES };
