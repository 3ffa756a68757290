'use strict';
// Unit tests of the pure pieces and the state file: `node --test test/` (run by
// tests/adaptors/test_simledger_node.py). The adaptor as a process is tested from there.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test } = require('node:test');

const { AdaptorError } = require('../../node-common/checks');
const { Connection } = require('../../node-common/connection');
const { ConfigError } = require('../../node-common/contract');
const { isTarget, readConfig } = require('../lib/config');
const {
  MAX_DATA_BYTES, backoffDelay, ledgerAccountReply, ledgerAccountRequest,
  parseLedgerAccountReply, parseLedgerAccountRequest,
} = require('../lib/messages');
const { AdaptorState } = require('../lib/state');

function refusedWith(code) {
  return (error) => error instanceof AdaptorError && error.code === code;
}

test('the ledger-account exchange is protobuf, the same bytes as every simledger adaptor\'s', () => {
  // PeerRequest{ledger_account_exchange (1): {ledger_account (1): "ledger:alice"}}: what
  // sdk/simledger.py writes too (tests/unit/test_simledger_messages.py).
  const expected = Buffer.from('0a0e0a0c6c65646765723a616c696365', 'hex');
  assert.deepEqual(ledgerAccountRequest('ledger:alice'), expected);
  assert.deepEqual(ledgerAccountReply('ledger:alice'), expected); // same shape, other direction
  assert.equal(parseLedgerAccountRequest(expected, 'ledger:bob'), 'ledger:alice');
  assert.equal(parseLedgerAccountReply(ledgerAccountReply('bob'), 'alice'), 'bob');
});

test('anything but an exchange naming another well-formed account is INVALID_ARGUMENT', () => {
  const bad = [
    Buffer.alloc(0), // no kind
    Buffer.from('120374776f', 'hex'), // a kind from a newer release (field 2): no known kind
    Buffer.from('not protobuf'),
    Buffer.from('0a050a03', 'hex'), // truncated
    ledgerAccountRequest(''),
    ledgerAccountRequest('b o b'),
    ledgerAccountRequest('x'.repeat(129)),
    ledgerAccountRequest('alice'), // our own
    Buffer.alloc(MAX_DATA_BYTES + 1, 0x20),
  ];
  for (const data of bad) {
    assert.throws(
      () => parseLedgerAccountRequest(data, 'alice'),
      refusedWith('INVALID_ARGUMENT'),
      data.toString('hex').slice(0, 40),
    );
  }
});

test('backoff doubles, is jittered within its upper half, and is capped', () => {
  const limits = { initialMs: 100, maxMs: 2000 };
  assert.equal(backoffDelay(1, limits, () => 0), 50);
  assert.equal(backoffDelay(1, limits, () => 1), 100);
  assert.equal(backoffDelay(3, limits, () => 1), 400);
  for (const attempt of [6, 7, 50, 10000]) {
    assert.equal(backoffDelay(attempt, limits, () => 1), 2000);
    assert.equal(backoffDelay(attempt, limits, () => 0), 1000);
  }
});

test('configuration: every variable is checked and named', () => {
  const good = {
    ILP_SIMLEDGER_ADDR: 'unix:/run/ledger.sock',
    ILP_SIMLEDGER_ACCOUNT: 'alice:main',
    ILP_ADAPTOR_STATE_DB: 'var/alice.db',
  };
  assert.deepEqual(readConfig(good), {
    ledgerAddress: 'unix:/run/ledger.sock',
    ledgerAccount: 'alice:main',
    stateFile: 'var/alice.db',
    engineAddress: null,
  });
  const changes = [
    ['ILP_SIMLEDGER_ADDR', undefined],
    ['ILP_SIMLEDGER_ADDR', 'ledger'],
    ['ILP_SIMLEDGER_ADDR', 'localhost:99999'],
    ['ILP_SIMLEDGER_ACCOUNT', ''],
    ['ILP_SIMLEDGER_ACCOUNT', 'a/b'],
    ['ILP_ADAPTOR_STATE_DB', ''],
    ['ILP_HOST_ENGINE_ADDR', 'unix:'],
  ];
  for (const [name, value] of changes) {
    const env = { ...good, [name]: value };
    assert.throws(() => readConfig(env), (error) => error instanceof ConfigError
      && error.message.includes(name));
  }
  for (const target of ['unix:/a', 'unix:rel.sock', '127.0.0.1:1', 'ledger.local:443', '[::1]:5']) {
    assert.ok(isTarget(target), target);
  }
});

test('a connection moves only along the table, counting failures until READY', () => {
  const link = new Connection('ledger', 'settlement-system');
  assert.throws(() => link.moveTo('READY'), /illegal connection transition IDLE -> READY/);
  link.moveTo('CONNECTING');
  link.moveTo('TRANSIENT_FAILURE', 'down');
  assert.throws(() => link.moveTo('READY'), /illegal/);
  link.moveTo('CONNECTING');
  link.moveTo('TRANSIENT_FAILURE', 'still down');
  assert.deepEqual([link.attempts, link.lastError], [2, 'still down']);
  link.moveTo('CONNECTING');
  link.moveTo('READY');
  assert.deepEqual([link.attempts, link.lastError], [0, '']);
  assert.equal(link.moveTo('READY'), false);
  link.moveTo('SHUTDOWN');
  assert.throws(() => link.moveTo('CONNECTING'), /illegal/);
});

function transfer(sequence, from, value, id = `${from}:${sequence}`) {
  return {
    transfer_id: id,
    from_account_id: from,
    to_account_id: 'alice',
    amount: { value: String(value), scale: 2 },
    memo: from,
    sequence: String(sequence),
  };
}

function withStateFile(body) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ilp-state'));
  try {
    body(path.join(dir, 'nested', 'alice.db'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('state: transfers, attribution, acknowledgements and keys survive a reopen', () => {
  withStateFile((file) => {
    let state = AdaptorState.open(file, 'alice');
    assert.equal(state.asset(), null);
    state.setAsset('USD', 2);
    assert.equal(state.addAccount('bob-acct'), true);
    assert.equal(state.addAccount('bob-acct'), false);

    assert.equal(state.recordTransfer({ ...transfer(1, '', 5), transfer_id: 'mint' }), null);
    assert.equal(state.cursor(), '1');
    const unknown = state.recordTransfer(transfer(2, 'bob', 100));
    assert.equal(unknown.accountId, null, 'a payer not known yet is kept, not reported');
    assert.equal(state.recordTransfer(transfer(2, 'bob', 100)), null, 'seen already');
    state.recordTransfer(transfer(3, 'carol', 7));
    state.recordTransfer(transfer(4, 'bob', 50));
    assert.deepEqual(state.unacknowledged(), []);

    const learned = state.learnPeer('bob-acct', 'bob');
    assert.deepEqual(learned.attributed.map((t) => t.transferId), ['bob:2', 'bob:4']);
    assert.deepEqual(state.learnPeer('bob-acct', 'bob').attributed, []);
    assert.equal(state.learnPeer('nobody', 'bob').known, false);
    assert.equal(state.recordTransfer(transfer(5, 'bob', 1)).accountId, 'bob-acct');
    state.acknowledge('bob:2');
    const payment = { accountId: 'bob-acct', value: '300', transferId: 'alice:k1', peer: 'bob' };
    state.addPayment('k1', payment);
    state.close();

    state = AdaptorState.open(file, 'alice');
    assert.deepEqual(state.asset(), { code: 'USD', scale: 2 });
    assert.equal(state.cursor(), '5');
    assert.deepEqual(state.unacknowledged().map((t) => t.transferId), ['bob:4', 'bob:5']);
    assert.deepEqual(state.payment('k1'), payment);
    assert.equal(state.incoming('carol:3').accountId, null);
    state.close();

    assert.throws(
      () => AdaptorState.open(file, 'mallory'),
      (error) => error instanceof ConfigError
        && /belongs to ledger account "alice"/.test(error.message),
    );
  });
});

test('state: a failed transfer record changes nothing, not even the cursor', () => {
  withStateFile((file) => {
    const state = AdaptorState.open(file, 'alice');
    state.recordTransfer(transfer(1, 'bob', 10));
    // The same transfer id at another sequence violates nothing but is not new: ignored.
    assert.equal(state.recordTransfer(transfer(2, 'bob', 10, 'bob:1')), null);
    // A malformed amount fails the insert: the transaction rolls the cursor back.
    const broken = { ...transfer(3, 'bob', 1), amount: { value: null, scale: 2 } };
    assert.throws(() => state.recordTransfer(broken));
    assert.equal(state.cursor(), '2');
    state.close();
  });
});
