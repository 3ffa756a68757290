'use strict';
// Calls this adaptor makes as a gRPC client (to its ledger, to the host's Engine): a unary call
// as a promise with a deadline, and how a failed call is named in logs and statuses.

/** Call `client[method](request)` with a deadline `timeoutMs` from now; resolves the reply. */
function unaryCall(client, method, request, timeoutMs) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + timeoutMs);
    client[method](request, { deadline }, (error, reply) => {
      if (error) reject(error);
      else resolve(reply);
    });
  });
}

/** The status name of a failed call, e.g. 'UNAVAILABLE'; 'UNKNOWN' for a non-gRPC error. */
function statusName(grpc, error) {
  return (error && typeof error.code === 'number' && grpc.status[error.code]) || 'UNKNOWN';
}

/** "CODE: details" of a failed call, for logs and last_error. */
function describeFailure(grpc, error) {
  if (error && typeof error.code === 'number') {
    return `${statusName(grpc, error)}: ${error.details || error.message}`;
  }
  return String((error && error.message) || error);
}

module.exports = { describeFailure, statusName, unaryCall };
