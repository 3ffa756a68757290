#!/usr/bin/env node
'use strict';
// memory-node: a ledger adaptor of the Interledger settlement host over an in-memory ledger,
// written from docs/protocol.md and the .proto files alone. The process contract (cookie,
// version, listener, mutual TLS, handshake, health, Shutdown, signals, parent watch) is
// ../node-common/serve.js; this file wires the memory ledger (lib/ledger.js) and its handlers
// (lib/services.js) into it.

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { ReflectionService } = require('@grpc/reflection');

const { SUPPORTED_VERSIONS } = require('../node-common/contract');
const { main } = require('../node-common/serve');
const { readConfig } = require('./lib/config');
const { MemoryLedger } = require('./lib/ledger');
const { AdaptorServices } = require('./lib/services');
const { version: VERSION } = require('./package.json');

main({ grpc, protoLoader, ReflectionService }, {
  program: 'memory-node',
  protoFiles: ['ilphost/adaptor/v1/adaptor.proto'],
  readConfig,
  async start({ config, packages, log }) {
    const ledger = new MemoryLedger(config);
    const services = new AdaptorServices({
      grpc,
      ledger,
      log,
      info: {
        name: 'memory-node',
        version: VERSION,
        assetCode: config.assetCode,
        assetScale: config.assetScale,
        contractVersions: SUPPORTED_VERSIONS,
      },
    });
    return {
      services: [[packages.ilphost.adaptor.v1.LedgerAdaptor.service, services.ledgerAdaptor()]],
      fields: {
        asset: `${config.assetCode}/${config.assetScale}`,
        incoming: ledger.incoming.length,
      },
      stopping: () => services.stopping(),
      close: async () => {},
    };
  },
});
