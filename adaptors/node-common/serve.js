'use strict';
// The life of an adaptor process (docs/protocol.md, sections 1 to 5): the cookie, the version,
// the adaptor's configuration, the listener (unix or tcp, automatic mutual TLS), the services
// every adaptor serves (health, GRPCController, reflection), the handshake line, and stopping on
// Shutdown, SIGTERM or the parent's death (SIGINT is ignored). The adaptor brings its
// configuration and its LedgerAdaptor; this file brings the process around them.
//
// `runtime` is {grpc, protoLoader, ReflectionService}: the adaptor's own packages, since this
// folder has no node_modules of its own.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { curveOfCertificate, selfSignedCertificate } = require('./cert');
const {
  COOKIE_KEY, COOKIE_VALUE, ConfigError, MAX_SOCKET_PATH_BYTES, SUPPORTED_VERSIONS,
  handshakeLine, negotiateVersion, readProcessConfig,
} = require('./contract');
const { createLogger } = require('./log');
const { HealthService, controllerHandlers } = require('./services');

/** The repository's contract (proto/), and the standard health proto kept in this folder. */
const PROTO_ROOTS = [path.resolve(__dirname, '..', '..', 'proto'), path.join(__dirname, 'proto')];
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};
/** How long in-flight calls get to finish on a stop; the host's grace period is 2 s. */
const STOP_GRACE_MS = 1500;
const PARENT_POLL_MS = 1000;
/** The curve when the host's certificate does not tell us a better one (docs, section 4). */
const DEFAULT_CURVE = 'P-521';

/** Load .proto files (paths under proto/, e.g. 'ilphost/adaptor/v1/adaptor.proto'). */
function loadProtos(runtime, files) {
  const definition = runtime.protoLoader.loadSync(files, {
    ...LOADER_OPTIONS,
    includeDirs: PROTO_ROOTS,
  });
  return { definition, packages: runtime.grpc.loadPackageDefinition(definition) };
}

/**
 * Credentials for the listener: plaintext, or automatic mutual TLS when the host sent its
 * certificate. Our key goes on the curve of the host's certificate when that is one we can
 * make, else P-521: the host is then sure to speak it (gRPC's BoringSSL, for one, refuses
 * P-521 signatures).
 */
function serverCredentials(grpc, clientCertPem) {
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
    server.bindAsync(address, credentials, (error, port) => {
      if (error) reject(error);
      else resolve(port);
    });
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
    const directory = path.resolve(config.socketDir || ownDir);
    const socketPath = path.join(directory, `node-${process.pid}.sock`);
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

/**
 * Run the adaptor process. `adaptor` is:
 *
 * - `program`: the adaptor's name, e.g. 'simledger-node' (refusals start with it; the log module
 *   when ILP_ADAPTOR_NAME is unset);
 * - `protoFiles`: the .proto files of the services it serves, under proto/;
 * - `readConfig(env)`: its own settings; throws ConfigError naming the variable;
 * - `async start({config, processConfig, packages, log})`: builds the adaptor and
 *   returns {services: [[serviceDefinition, handlers], ...], fields, stopping(), close()}.
 *   `fields` go into the "serving" log record; `stopping()` runs when a stop begins (health is
 *   NOT_SERVING by then: end streams, cancel background work); `async close()` runs once the
 *   server is closed (release files and clients). A ConfigError it throws is a refusal.
 *
 * A refusal prints `program: message` on stderr and exits 1 before any handshake.
 */
async function serveAdaptor(runtime, adaptor) {
  const { grpc, ReflectionService } = runtime;
  const refuse = (message) => {
    process.stderr.write(`${adaptor.program}: ${message}\n`);
    process.exit(1);
  };
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
  let processConfig;
  let config;
  try {
    processConfig = readProcessConfig(process.env, adaptor.program);
    config = adaptor.readConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) refuse(error.message);
    throw error;
  }
  const log = createLogger(processConfig.name);
  const health = new HealthService(grpc);
  let stop = () => {};

  const served = loadProtos(runtime, [
    ...adaptor.protoFiles,
    'plugin/grpc_controller.proto',
    'grpc/health/v1/health.proto',
  ]);
  let started;
  try {
    started = await adaptor.start({ config, processConfig, packages: served.packages, log });
  } catch (error) {
    if (error instanceof ConfigError) refuse(error.message);
    throw error;
  }
  const server = new grpc.Server();
  for (const [service, handlers] of started.services) server.addService(service, handlers);
  server.addService(served.packages.grpc.health.v1.Health.service, health.handlers());
  server.addService(
    served.packages.plugin.GRPCController.service,
    controllerHandlers(() => stop('Shutdown RPC')),
  );
  new ReflectionService(served.definition).addToServer(server);

  let listener;
  let tls;
  try {
    tls = serverCredentials(grpc, processConfig.clientCertPem);
    listener = await listen(server, processConfig, tls.credentials);
  } catch (error) {
    refuse(error instanceof ConfigError ? error.message : `cannot listen: ${error.message}`);
  }

  let stopping = false;
  let finished = false;
  const finish = async () => {
    if (finished) return;
    finished = true;
    try {
      await started.close();
    } catch (error) {
      log.error('closing failed', { error: String(error && error.stack) });
    }
    listener.cleanup();
    log.info('stopped');
    process.exit(0);
  };
  stop = (reason) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { reason });
    health.stop();
    started.stopping();
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
    ...started.fields,
  });
  process.stdout.write(`${handshakeLine({
    appVersion,
    network: listener.network,
    address: listener.address,
    certDer: tls.cert && tls.cert.der,
  })}\n`);
}

/** Run `serveAdaptor`; a failure to start is a refusal (stderr, exit 1). */
function main(runtime, adaptor) {
  serveAdaptor(runtime, adaptor).catch((error) => {
    process.stderr.write(`${adaptor.program}: failed to start: ${error.stack || error}\n`);
    process.exit(1);
  });
}

module.exports = { PROTO_ROOTS, loadProtos, main, serveAdaptor };
