#!/usr/bin/env node
'use strict';
// simledger-node: the ledger adaptor of the Interledger settlement host for the simulated
// ledger (python -m host.simledger), written from docs/protocol.md, the .proto files and
// adaptors/simledger-python/README.md. The process contract (cookie, version, listener, mutual
// TLS, handshake, health, Shutdown, signals, parent watch) is ../node-common/serve.js; this
// file wires the state file, the ledger and engine clients and the handlers into it.

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { ReflectionService } = require('@grpc/reflection');

const { SUPPORTED_VERSIONS } = require('../node-common/contract');
const { loadProtos, main } = require('../node-common/serve');
const { readConfig } = require('./lib/config');
const { AdaptorServices } = require('./lib/services');
const { SimLedgerAdaptor } = require('./lib/simledger-adaptor');
const { AdaptorState } = require('./lib/state');
const { version: VERSION } = require('./package.json');

const runtime = { grpc, protoLoader, ReflectionService };
/** Reconnect to a ledger that went away within our own 2 s backoff, not gRPC's 120 s. */
const LEDGER_CHANNEL_OPTIONS = {
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 2000,
};

main(runtime, {
  program: 'simledger-node',
  protoFiles: ['ilphost/adaptor/v1/adaptor.proto'],
  readConfig,
  async start({ config, packages, log }) {
    const state = AdaptorState.open(config.stateFile, config.ledgerAccount);
    const clients = loadProtos(runtime, [
      'ilphost/simledger/v1/simledger.proto',
      'ilphost/engine/v1/engine.proto',
    ]).packages.ilphost;
    const insecure = grpc.credentials.createInsecure();
    const ledger = new clients.simledger.v1.SimLedger(
      config.ledgerAddress, insecure, LEDGER_CHANNEL_OPTIONS,
    );
    const engine = config.engineAddress
      ? new clients.engine.v1.Engine(config.engineAddress, insecure)
      : null;
    const services = new AdaptorServices({
      grpc,
      log,
      info: { name: 'simledger-node', version: VERSION, contractVersions: SUPPORTED_VERSIONS },
    });
    const adaptor = new SimLedgerAdaptor({
      grpc,
      ledger,
      engine,
      ledgerAccount: config.ledgerAccount,
      state,
      log,
      ...services.reporters(),
    });
    const handlers = services.ledgerAdaptor(adaptor);
    adaptor.start();
    return {
      services: [[packages.ilphost.adaptor.v1.LedgerAdaptor.service, handlers]],
      fields: {
        ledger: config.ledgerAddress,
        ledger_account: config.ledgerAccount,
        state_db: config.stateFile,
        engine: config.engineAddress || 'none',
      },
      stopping: () => services.stopping(),
      close: async () => {
        ledger.close();
        if (engine) engine.close();
        state.close();
      },
    };
  },
});
