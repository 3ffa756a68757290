// A sender and a receiver of ILP packets over ilp-plugin-http, the same for every connector
// that bench/bench_vs_ilp_connector.py measures: whatever differs between two runs is the
// connector between them.
//
// Usage: node ilp_loadgen.js '<JSON>' with
//   {sender: {port, url, token} or a list of them, receiver: {port, url, token}}
// where sender.url is the connector's ILP-over-HTTP endpoint for the sender's account and
// receiver.port is where the receiver listens (the connector's outgoing URL for the receiver's
// account). The receiver fulfils packets whose data starts with the preimage of their condition
// (the exercise packets of ilp-host's local receiver). Both plugins listen on 127.0.0.1 only.
//
// Prints "READY", then answers one JSON line on stdout per JSON line on stdin:
//   {"op": "warm", "destination": ADDR, "seconds": S}
//     -> {"ok": true} once 20 packets in a row were fulfilled, {"ok": false, "last": ...} after S
//   {"op": "run", "destination": ADDR, "count": N, "concurrency": C, "amount": A}
//     -> {"fulfilled", "rejected", "seconds", "latencies_ms": [sorted], "first_reject"}
// With several senders, or "destinations": [ADDR, ...] instead of "destination", the n-th
// packet of a run goes from sender n % senders and to destination n % destinations (packets
// spread over many accounts of the connector); "warm" uses the first sender.
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

const options = JSON.parse(process.argv[2])

function plugin ({ port, url, token }) {
  return new PluginHttp({
    incoming: { port, staticToken: token },
    outgoing: { url, staticToken: token }
  })
}

const receiver = plugin(options.receiver)
receiver.registerDataHandler(async (data) => {
  const prepare = IlpPacket.deserializeIlpPrepare(data)
  const preimage = prepare.data.slice(0, 32)
  const hash = crypto.createHash('sha256').update(preimage).digest()
  if (preimage.length === 32 && hash.equals(prepare.executionCondition)) {
    return IlpPacket.serializeIlpFulfill({ fulfillment: preimage, data: Buffer.alloc(0) })
  }
  return IlpPacket.serializeIlpReject({
    code: 'F06', triggeredBy: '', message: 'not an exercise packet', data: Buffer.alloc(0)
  })
})

const senders = [].concat(options.sender).map(plugin)
// A connector may send the senders CCP or other peer.* requests: they answer none of them.
for (const sender of senders) {
  sender.registerDataHandler(async () => IlpPacket.serializeIlpReject({
    code: 'F02', triggeredBy: '', message: 'the load generator routes nothing', data: Buffer.alloc(0)
  }))
}

async function sendOne (destination, amount, sender = senders[0]) {
  const preimage = crypto.randomBytes(32)
  const prepare = IlpPacket.serializeIlpPrepare({
    amount: String(amount),
    destination,
    executionCondition: crypto.createHash('sha256').update(preimage).digest(),
    expiresAt: new Date(Date.now() + 30000),
    data: preimage
  })
  const reply = await sender.sendData(prepare)
  if (reply[0] === IlpPacket.Type.TYPE_ILP_FULFILL) return null
  const reject = IlpPacket.deserializeIlpReject(reply)
  return `${reject.code} ${reject.message}`
}

async function warm ({ destination, seconds }) {
  const deadline = Date.now() + seconds * 1000
  let streak = 0
  let last = null
  while (Date.now() < deadline) {
    try {
      last = await sendOne(destination, 1)
    } catch (error) {
      last = String(error.message || error)
    }
    if (last === null) {
      if (++streak >= 20) return { ok: true }
    } else {
      streak = 0
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }
  return { ok: false, last }
}

async function run ({ destination, destinations, count, concurrency, amount }) {
  const targets = destinations || [destination]
  const latencies = []
  let next = 0
  let rejected = 0
  let firstReject = null
  async function worker () {
    while (next < count) {
      const n = next++
      const start = process.hrtime.bigint()
      let outcome
      try {
        outcome = await sendOne(targets[n % targets.length], amount, senders[n % senders.length])
      } catch (error) {
        outcome = `error ${error.message || error}`
      }
      latencies.push(Number(process.hrtime.bigint() - start) / 1e6)
      if (outcome !== null) {
        rejected++
        if (firstReject === null) firstReject = outcome
      }
    }
  }
  const start = process.hrtime.bigint()
  await Promise.all(Array.from({ length: concurrency }, worker))
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  latencies.sort((a, b) => a - b)
  return {
    fulfilled: count - rejected,
    rejected,
    seconds,
    latencies_ms: latencies,
    first_reject: firstReject
  }
}

async function main () {
  await Promise.all([receiver, ...senders].map(p => p.connect()))
  process.stdout.write('READY\n')
  const lines = readline.createInterface({ input: process.stdin })
  for await (const line of lines) {
    const request = JSON.parse(line)
    const answer = request.op === 'warm' ? await warm(request) : await run(request)
    process.stdout.write(JSON.stringify(answer) + '\n')
  }
  await Promise.all([receiver, ...senders].map(p => p.disconnect()))
  process.exit(0)
}

main().catch(error => {
  process.stderr.write(`${error.stack || error}\n`)
  process.exit(1)
})
