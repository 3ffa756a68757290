// A STREAM payment (npm ilp-protocol-stream, the reference implementation) for tests/interop:
// a receiver and a sender, each an ILP endpoint over ilp-plugin-http behind a connector of its
// own (the child of that connector's account), on loopback only.
//
// Usage: node stream_payment.js '<JSON>' with {amount, sender: {port, url, token},
// receiver: {port, url, token}}. Prints one JSON line: what the sender sent and delivered and
// what the receiver received, or {"error": ...} and exits 1.
'use strict'

const http = require('http')
const Koa = require('koa')
// ilp-plugin-http listens on every interface (Koa's listen(port)); keep it on loopback.
Koa.prototype.listen = function (port) {
  return http.createServer(this.callback()).listen(port, '127.0.0.1')
}

// ilp-protocol-stream 2.7.1 (its latest release) assigns `this.closed` on its Duplex
// streams, which Node 18+ defines as a getter only (on Readable, not configurable): give
// Duplex an accessor whose setter makes an own property of that one stream (Node itself
// never assigns it; every other stream reads as before).
const { Duplex, Readable } = require('stream')
const readableClosed = Object.getOwnPropertyDescriptor(Readable.prototype, 'closed')
if (readableClosed && !Object.getOwnPropertyDescriptor(Duplex.prototype, 'closed')) {
  Object.defineProperty(Duplex.prototype, 'closed', {
    configurable: true,
    get () { return readableClosed.get.call(this) },
    set (value) {
      Object.defineProperty(this, 'closed', { value, writable: true, configurable: true })
    }
  })
}

const crypto = require('crypto')
const PluginHttp = require('ilp-plugin-http')
const { createServer, createConnection } = require('ilp-protocol-stream')

const options = JSON.parse(process.argv[2])
let paid = false
process.on('unhandledRejection', (err) => {
  if (paid) return // the teardown's, after the result is out (see below)
  process.stdout.write(JSON.stringify({ error: String(err && err.stack ? err.stack : err) }) + '\n')
  process.exit(1)
})

function plugin ({ port, url, token }) {
  return new PluginHttp({
    incoming: { port, staticToken: token },
    outgoing: { url, staticToken: token }
  })
}

async function main () {
  const receiverPlugin = plugin(options.receiver)
  const senderPlugin = plugin(options.sender)
  await receiverPlugin.connect()
  await senderPlugin.connect()
  const server = await createServer({ plugin: receiverPlugin, serverSecret: crypto.randomBytes(32) })
  let received = 0
  server.on('connection', (connection) => {
    connection.on('stream', (stream) => {
      stream.setReceiveMax(Infinity)
      stream.on('money', (amount) => { received += Number(amount) })
    })
  })
  const { destinationAccount, sharedSecret } = server.generateAddressAndSecret()
  const connection = await createConnection({ plugin: senderPlugin, destinationAccount, sharedSecret })
  const stream = connection.createStream()
  await stream.sendTotal(options.amount, { timeout: 20000 })
  await connection.end()
  process.stdout.write(JSON.stringify({
    destination: destinationAccount,
    sent: Number(connection.totalSent),
    delivered: Number(connection.totalDelivered),
    received
  }) + '\n')
  paid = true
  // The payment is over. Tearing down races the receiver's closing frames to the sender (its
  // plugin may already answer 502): what happens then says nothing about the payment.
  try {
    await server.close()
    await senderPlugin.disconnect()
    await receiverPlugin.disconnect()
  } catch (err) {}
  process.exit(0)
}

main().catch(err => {
  process.stdout.write(JSON.stringify({ error: String(err && err.stack ? err.stack : err) }) + '\n')
  process.exit(1)
})
