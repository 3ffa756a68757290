'use strict';
// gRPC pieces every adaptor serves the same way (docs/protocol.md, section 5): the standard
// health service with "plugin", the handler wrapper that turns AdaptorError into its status,
// and the set of open WatchEvents streams. `grpc` is the adaptor's own @grpc/grpc-js (this
// folder has no node_modules of its own), passed in so that one copy of gRPC runs.

const { AdaptorError } = require('./checks');

/** The health service names an adaptor answers: the overall "" and go-plugin's "plugin". */
const HEALTH_SERVICES = ['', 'plugin'];

/** grpc.health.v1.Health: SERVING until stop(), then NOT_SERVING; Check and Watch. */
class HealthService {
  constructor(grpc) {
    this.grpc = grpc;
    this.status = new Map(HEALTH_SERVICES.map((service) => [service, 'SERVING']));
    this.watchers = new Set();
  }

  handlers() {
    return {
      Check: (call, callback) => {
        const status = this.status.get(call.request.service);
        if (status === undefined) {
          callback({
            code: this.grpc.status.NOT_FOUND,
            details: `unknown service ${JSON.stringify(call.request.service)}`,
          });
        } else {
          callback(null, { status });
        }
      },
      Watch: (call) => {
        call.write({ status: this.status.get(call.request.service) || 'SERVICE_UNKNOWN' });
        follow(this.watchers, call);
      },
    };
  }

  /** NOT_SERVING everywhere, told to every watcher, whose streams then end with OK. */
  stop() {
    for (const service of this.status.keys()) this.status.set(service, 'NOT_SERVING');
    for (const call of this.watchers) {
      const status = this.status.get(call.request.service);
      if (status) call.write({ status });
      call.end();
    }
    this.watchers.clear();
  }
}

/** Keep a server stream in `streams` until the client goes away. */
function follow(streams, call) {
  streams.add(call);
  const forget = () => streams.delete(call);
  call.on('cancelled', forget);
  call.on('close', forget);
  call.on('error', forget);
}

/**
 * The open WatchEvents streams. open() sends the headers at once (so the host sees the stream
 * up before any event exists), the current state of every connection (the contract: a stream
 * starts with the truth, as grpc.health.v1 Watch does, so no change falls between a Probe and
 * the stream), then the re-deliveries, then follows; broadcast() writes a live event to all;
 * end() writes a last event and closes them with OK.
 */
class EventStreams {
  constructor(grpc) {
    this.grpc = grpc;
    this.calls = new Set();
  }

  /** `connections`: Connection messages, current; `backlog`: WatchEventsResponse messages. */
  open(call, connections, backlog) {
    call.sendMetadata(new this.grpc.Metadata());
    for (const connection of connections) call.write({ connection_changed: connection });
    for (const event of backlog) call.write(event);
    follow(this.calls, call);
  }

  broadcast(event) {
    for (const call of this.calls) call.write(event);
  }

  end(lastEvent = null) {
    for (const call of this.calls) {
      if (lastEvent) call.write(lastEvent);
      call.end();
    }
    this.calls.clear();
  }
}

/**
 * A unary handler from `handler(request)` (a value or a promise): AdaptorError answers its
 * status, anything else INTERNAL (a bug, logged with its stack).
 */
function unary(grpc, log, method, handler) {
  return (call, callback) => {
    Promise.resolve()
      .then(() => handler(call.request))
      .then(
        (reply) => callback(null, reply),
        (error) => {
          if (error instanceof AdaptorError) {
            log.debug('request refused', { method, code: error.code, error: error.message });
            callback({ code: grpc.status[error.code], details: error.message });
          } else {
            log.error('handler failed', { method, error: String(error && error.stack) });
            callback({ code: grpc.status.INTERNAL, details: `internal error: ${error}` });
          }
        },
      );
  };
}

/** plugin.GRPCController: Shutdown answers first, then `onShutdown` runs. */
function controllerHandlers(onShutdown) {
  return {
    Shutdown: (call, callback) => {
      callback(null, {});
      setImmediate(onShutdown);
    },
  };
}

module.exports = { EventStreams, HEALTH_SERVICES, HealthService, controllerHandlers, unary };
