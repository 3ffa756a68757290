'use strict';
// Logging in hclog's JSON format, one record per line on stderr, which the host parses into
// levelled records (docs/protocol.md, section 8). Stdout is reserved for the handshake line.

/** hclog's timestamp: RFC 3339 in UTC with microseconds. */
function timestamp(date) {
  return `${date.toISOString().slice(0, -1)}000Z`;
}

/** One hclog JSON record; `fields` become extra keys of the record. */
function record(level, module, message, fields, date = new Date()) {
  return JSON.stringify({
    '@level': level,
    '@message': message,
    '@module': module,
    '@timestamp': timestamp(date),
    ...fields,
  });
}

/** A logger writing to `stream` (stderr by default) under the module name `module`. */
function createLogger(module, stream = process.stderr) {
  const write = (level) => (message, fields = {}) => {
    stream.write(`${record(level, module, message, fields)}\n`);
  };
  return {
    debug: write('debug'),
    info: write('info'),
    warn: write('warn'),
    error: write('error'),
  };
}

module.exports = { createLogger, record, timestamp };
