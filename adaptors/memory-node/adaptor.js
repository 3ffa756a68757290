#!/usr/bin/env node
'use strict';
// memory-node: a ledger adaptor of the Interledger settlement host over an in-memory ledger,
// written from docs/protocol.md and the .proto files alone. This file is the process contract:
// cookie, version negotiation, listener (unix or tcp, automatic mutual TLS), handshake line,
// and stopping on Shutdown, SIGTERM or the parent's death. The ledger is lib/ledger.js, the
// gRPC handlers lib/services.js.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { ReflectionService } = require('@grpc/reflection');

const { curveOfCertificate, selfSignedCertificate } = require('./lib/cert');
const {
  COOKIE_KEY, COOKIE_VALUE, ConfigError, MAX_SOCKET_PATH_BYTES, SUPPORTED_VERSIONS,
  handshakeLine, negotiateVersion, readConfig,
} = require('./lib/contract');
const { MemoryLedger } = require('./lib/ledger');
const { createLogger } = require('./lib/log');
const { AdaptorServices } = require('./lib/services');
const { version: VERSION } = require('./package.json');

/** The repository's contract (proto/), and the standard health proto kept next to this file. */
const PROTO_ROOTS = [
  path.resolve(__dirname, '..', '..', 'proto'),
  path.join(__dirname, 'proto'),
];
const PROTO_FILES = [
  'ilphost/adaptor/v1/adaptor.proto',
  'plugin/grpc_controller.proto',
  'grpc/health/v1/health.proto',
];
/** How long in-flight calls get to finish on a stop; the host's grace period is 2 s. */
const STOP_GRACE_MS = 1500;
const PARENT_POLL_MS = 1000;
/** The curve when the host's certificate does not tell us a better one (docs, section 4). */
const DEFAULT_CURVE = 'P-521';

function refuse(message) {
  process.stderr.write(`memory-node: ${message}\n`);
  process.exit(1);
}

function loadServices() {
  const definition = protoLoader.loadSync(PROTO_FILES, {
    includeDirs: PROTO_ROOTS,
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return { definition, packages: grpc.loadPackageDefinition(definition) };
}

/**
 * Credentials for the listener: plaintext, or automatic mutual TLS when the host sent its
 * certificate. Our key goes on the curve of the host's certificate when that is one we can
 * make, else P-521: the host is then sure to speak it (gRPC's BoringSSL, for one, refuses
 * P-521 signatures).
 */
function serverCredentials(clientCertPem) {
  if (!clientCertPem) return { credentials: grpc.ServerCredentials.createInsecure(), cert: null };
  let curve;
  try {
    curve = curveOfCertificate(clientCertPem) || DEFAULT_CURVE;
  } catch (error) {
    throw new ConfigError(`PLUGIN_CLIENT_CERT is not a PEM certificate: ${error.message}`);
  }
  const cert = selfSignedCertificate(curve);
  const credentials = grpc.ServerCredentials.createSsl(
    Buffer.from(clientCertPem),
    [{ private_key: Buffer.from(cert.keyPem), cert_chain: Buffer.from(cert.certPem) }],
    true, // require a client certificate, trusted only if it is PLUGIN_CLIENT_CERT
  );
  return { credentials, cert, curve };
}

function bind(server, address, credentials) {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, credentials, (error, port) => (error ? reject(error) : resolve(port)));
  });
}

/** Ports of the range, starting at a random one so that adaptors started together spread out. */
function candidatePorts(range) {
  if (!range) return [0];
  const count = range.max - range.min + 1;
  const first = Math.floor(Math.random() * count);
  return Array.from({ length: count }, (_, index) => range.min + ((first + index) % count));
}

/** Listen as configured; returns {network, address, cleanup}. */
async function listen(server, config, credentials) {
  if (config.transport === 'unix') {
    const ownDir = config.socketDir ? null : fs.mkdtempSync(path.join(os.tmpdir(), 'ilpa'));
    const socketPath = path.join(path.resolve(config.socketDir || ownDir), `node-${process.pid}.sock`);
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
      throw new ConfigError(
        `socket path ${socketPath} is longer than ${MAX_SOCKET_PATH_BYTES} bytes: `
        + 'choose a shorter PLUGIN_UNIX_SOCKET_DIR',
      );
    }
    await bind(server, `unix:${socketPath}`, credentials);
    const cleanup = () => {
      fs.rmSync(socketPath, { force: true });
      if (ownDir) fs.rmSync(ownDir, { recursive: true, force: true });
    };
    return { network: 'unix', address: socketPath, cleanup };
  }
  let lastError = null;
  for (const port of candidatePorts(config.portRange)) {
    try {
      const bound = await bind(server, `127.0.0.1:${port}`, credentials);
      return { network: 'tcp', address: `127.0.0.1:${bound}`, cleanup: () => {} };
    } catch (error) {
      lastError = error;
    }
  }
  throw new ConfigError(
    `no free port in ${config.portRange.min}-${config.portRange.max}: ${lastError.message}`,
  );
}

async function main() {
  if (process.env[COOKIE_KEY] !== COOKIE_VALUE) {
    refuse(
      'this is a ledger adaptor of the Interledger settlement host, not a program to run by '
      + `hand (${COOKIE_KEY} is missing or wrong). Configure it in host.toml and let the host `
      + 'start it.',
    );
  }
  const appVersion = negotiateVersion(process.env.PLUGIN_PROTOCOL_VERSIONS);
  if (appVersion === null) {
    refuse(
      `no common contract version: the host offers PLUGIN_PROTOCOL_VERSIONS=`
      + `${process.env.PLUGIN_PROTOCOL_VERSIONS}, this adaptor speaks ${SUPPORTED_VERSIONS}`,
    );
  }
  let config;
  try {
    config = readConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) refuse(error.message);
    throw error;
  }
  const log = createLogger(config.name);
  const ledger = new MemoryLedger(config);
  let stop = () => {};
  const services = new AdaptorServices({
    ledger,
    log,
    info: {
      name: 'memory-node',
      version: VERSION,
      assetCode: config.assetCode,
      assetScale: config.assetScale,
      contractVersions: SUPPORTED_VERSIONS,
    },
    onShutdown: () => stop('Shutdown RPC'),
  });

  const { definition, packages } = loadServices();
  const server = new grpc.Server();
  server.addService(packages.ilphost.adaptor.v1.LedgerAdaptor.service, services.ledgerAdaptor());
  server.addService(packages.grpc.health.v1.Health.service, services.health());
  server.addService(packages.plugin.GRPCController.service, services.controller());
  new ReflectionService(definition).addToServer(server);

  let listener;
  let tls;
  try {
    tls = serverCredentials(config.clientCertPem);
    listener = await listen(server, config, tls.credentials);
  } catch (error) {
    refuse(error instanceof ConfigError ? error.message : `cannot listen: ${error.message}`);
  }

  let stopping = false;
  const finish = () => {
    listener.cleanup();
    log.info('stopped');
    process.exit(0);
  };
  stop = (reason) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { reason });
    services.stop();
    const force = setTimeout(() => {
      log.warn('calls still open after the grace period; closing them');
      server.forceShutdown();
      finish();
    }, STOP_GRACE_MS);
    server.tryShutdown(() => {
      clearTimeout(force);
      finish();
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => log.info('ignoring SIGINT: the host decides when to stop'));
  const parentPid = process.ppid;
  setInterval(() => {
    if (process.ppid !== parentPid) stop(`parent process ${parentPid} exited`);
  }, PARENT_POLL_MS).unref();

  log.info('serving', {
    network: listener.network,
    address: listener.address,
    contract_version: appVersion,
    tls: tls.cert ? `mutual, ${tls.curve}` : 'none',
    asset: `${config.assetCode}/${config.assetScale}`,
    incoming: ledger.incoming.length,
  });
  process.stdout.write(`${handshakeLine({
    appVersion,
    network: listener.network,
    address: listener.address,
    certDer: tls.cert && tls.cert.der,
  })}\n`);
}

main().catch((error) => refuse(`failed to start: ${error.stack || error}`));
