// The JavaScript reference connector (npm ilp-connector) for tests/interop, on loopback only.
//
// Usage: node js_connector.js '<JSON>' where JSON is {connector, leaves}: `connector` is
// ilp-connector's own options object (accounts with ilp-plugin-http); each leaf
// {name, port, url, token} is an ILP endpoint behind the connector (an ilp-plugin-http of its
// own, the other end of a child account): it fulfills packets whose data starts with the
// preimage of their condition (what ilp-host's exercise receiver does too) and sends such
// packets on request.
//
// Prints "READY <address>" once the connector runs (after ILDCP when it has a parent), then
// answers one JSON line on stdout per JSON line on stdin:
//   {"op": "send", "leaf": NAME, "destination": ADDR, "amount": N, "data": BYTES?}
//     -> {"type": "fulfill"} or {"type": "reject", "code": ..., "message": ..., "triggeredBy": ...}
//   {"op": "received", "leaf": NAME} -> {"amount": total fulfilled to that leaf}
'use strict'

const crypto = require('crypto')
const http = require('http')
const readline = require('readline')

// ilp-plugin-http listens on every interface (Koa's listen(port)); keep it on loopback.
const Koa = require('koa')
Koa.prototype.listen = function (port) {
  return http.createServer(this.callback()).listen(port, '127.0.0.1')
}

const IlpPacket = require('ilp-packet')
const PluginHttp = require('ilp-plugin-http')
const { createApp } = require('ilp-connector')

const options = JSON.parse(process.argv[2])
const received = {}

function leafPlugin (leaf) {
  const plugin = new PluginHttp({
    incoming: { port: leaf.port, staticToken: leaf.token },
    outgoing: { url: leaf.url, staticToken: leaf.token }
  })
  received[leaf.name] = 0
  plugin.registerDataHandler(async (data) => {
    const prepare = IlpPacket.deserializeIlpPrepare(data)
    const preimage = prepare.data.slice(0, 32)
    const hash = crypto.createHash('sha256').update(preimage).digest()
    if (preimage.length === 32 && hash.equals(prepare.executionCondition)) {
      received[leaf.name] += Number(prepare.amount)
      return IlpPacket.serializeIlpFulfill({ fulfillment: preimage, data: Buffer.alloc(0) })
    }
    return IlpPacket.serializeIlpReject({
      code: 'F06', triggeredBy: '', message: 'not an exercise packet', data: Buffer.alloc(0)
    })
  })
  return plugin
}

async function send (plugin, { destination, amount, data }) {
  const preimage = crypto.randomBytes(32)
  const extra = data ? Buffer.alloc(data) : Buffer.alloc(0)
  const prepare = IlpPacket.serializeIlpPrepare({
    amount: String(amount),
    destination,
    executionCondition: crypto.createHash('sha256').update(preimage).digest(),
    expiresAt: new Date(Date.now() + 10000),
    data: Buffer.concat([preimage, extra])
  })
  const reply = await plugin.sendData(prepare)
  if (reply[0] === IlpPacket.Type.TYPE_ILP_FULFILL) return { type: 'fulfill' }
  const reject = IlpPacket.deserializeIlpReject(reply)
  return { type: 'reject', code: reject.code, message: reject.message, triggeredBy: reject.triggeredBy }
}

async function main () {
  const app = createApp(options.connector)
  const leaves = {}
  for (const leaf of options.leaves || []) leaves[leaf.name] = leafPlugin(leaf)
  await Promise.all(Object.values(leaves).map(plugin => plugin.connect()))
  await app.listen()
  process.stdout.write(`READY ${options.connector.ilpAddress || ''}\n`)
  const lines = readline.createInterface({ input: process.stdin })
  for await (const line of lines) {
    let answer
    try {
      const request = JSON.parse(line)
      if (request.op === 'send') answer = await send(leaves[request.leaf], request)
      else if (request.op === 'received') answer = { amount: received[request.leaf] }
      else answer = { error: `unknown op ${request.op}` }
    } catch (err) {
      answer = { error: String(err && err.message ? err.message : err) }
    }
    process.stdout.write(JSON.stringify(answer) + '\n')
  }
  await app.shutdown()
  process.exit(0)
}

main().catch(err => {
  process.stderr.write(`js_connector failed: ${err && err.stack ? err.stack : err}\n`)
  process.exit(1)
})
