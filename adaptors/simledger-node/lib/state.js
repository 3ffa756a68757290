'use strict';
// The adaptor's state file (ILP_ADAPTOR_STATE_DB): SQLite in WAL mode with full fsync, through
// better-sqlite3 (synchronous: a write is on disk when the call returns, and no other code runs
// in between, so a read-then-write needs no lock). It keeps what must survive a restart:
//
// - meta: our ledger account (a file belongs to one), the ledger's asset, the watch cursor;
// - accounts: the host accounts set up, with their peers' ledger accounts once known;
// - payments: every idempotency key used, with its account and amount (ALREADY_EXISTS);
// - incoming: every transfer into our account from another account, the host account it was
//   attributed to (null while its payer is unknown) and whether the engine acknowledged it.
//
// A transfer and the cursor move in one transaction: a crash neither loses nor doubles one.

const fs = require('node:fs');
const path = require('node:path');
const Database = require('better-sqlite3');

const { ConfigError } = require('../../node-common/contract');

const SCHEMA_VERSION = 1;
const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
  account_id TEXT PRIMARY KEY,
  peer_ledger_account TEXT
);
CREATE TABLE IF NOT EXISTS payments (
  idempotency_key TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  amount TEXT NOT NULL,
  transfer_id TEXT NOT NULL,
  peer_ledger_account TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS incoming (
  transfer_id TEXT PRIMARY KEY,
  sequence INTEGER NOT NULL UNIQUE,
  payer TEXT NOT NULL,
  amount TEXT NOT NULL,
  scale INTEGER NOT NULL,
  account_id TEXT,
  acknowledged INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS incoming_unacknowledged ON incoming (acknowledged, sequence);
`;

/** An incoming transfer row as the rest of the adaptor sees it. */
function incomingOf(row) {
  return row && {
    transferId: row.transfer_id,
    payer: row.payer,
    value: row.amount,
    scale: row.scale,
    accountId: row.account_id,
    acknowledged: row.acknowledged === 1,
  };
}

class AdaptorState {
  /**
   * Open (creating it and its directory if need be) the state file of `ledgerAccount`.
   * ConfigError when the file belongs to another ledger account or a newer schema, or cannot
   * be opened.
   */
  static open(file, ledgerAccount) {
    let db;
    try {
      fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
      db = new Database(file);
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('busy_timeout = 5000');
    } catch (error) {
      if (db) db.close();
      throw new ConfigError(`ILP_ADAPTOR_STATE_DB=${file}: cannot open it: ${error.message}`);
    }
    const state = new AdaptorState(db);
    try {
      state.migrate(file, ledgerAccount);
    } catch (error) {
      db.close();
      throw error;
    }
    return state;
  }

  constructor(db) {
    this.db = db;
  }

  migrate(file, ledgerAccount) {
    const version = this.db.pragma('user_version', { simple: true });
    if (version > SCHEMA_VERSION) {
      throw new ConfigError(
        `ILP_ADAPTOR_STATE_DB=${file}: written by a newer adaptor (schema ${version}); this one `
        + `reads schema ${SCHEMA_VERSION}`,
      );
    }
    this.db.exec(SCHEMA);
    this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
    const owner = this.meta('ledger_account');
    if (owner === undefined) {
      this.setMeta('ledger_account', ledgerAccount);
    } else if (owner !== ledgerAccount) {
      throw new ConfigError(
        `ILP_ADAPTOR_STATE_DB=${file} belongs to ledger account ${JSON.stringify(owner)}, not `
        + `ILP_SIMLEDGER_ACCOUNT=${JSON.stringify(ledgerAccount)}: use another state file`,
      );
    }
  }

  meta(key) {
    const row = this.db.prepare('SELECT value FROM meta WHERE key = ?').get(key);
    return row && row.value;
  }

  setMeta(key, value) {
    this.db
      .prepare(
        'INSERT INTO meta (key, value) VALUES (?, ?) '
        + 'ON CONFLICT (key) DO UPDATE SET value = excluded.value',
      )
      .run(key, String(value));
  }

  close() {
    this.db.close();
  }

  // --- the ledger -----------------------------------------------------------------------------

  /** The ledger's asset {code, scale} as last learned, or null before it ever answered. */
  asset() {
    const code = this.meta('asset_code');
    return code === undefined ? null : { code, scale: Number(this.meta('asset_scale')) };
  }

  setAsset(code, scale) {
    this.db.transaction(() => {
      this.setMeta('asset_code', code);
      this.setMeta('asset_scale', scale);
    })();
  }

  /** The sequence of the last transfer into our account handled, as a decimal string. */
  cursor() {
    return this.meta('cursor') || '0';
  }

  // --- accounts -------------------------------------------------------------------------------

  /** {accountId, peer} or undefined. */
  account(accountId) {
    const row = this.db.prepare('SELECT * FROM accounts WHERE account_id = ?').get(accountId);
    return row && { accountId: row.account_id, peer: row.peer_ledger_account };
  }

  accounts() {
    return this.db
      .prepare('SELECT * FROM accounts ORDER BY rowid')
      .all()
      .map((row) => ({ accountId: row.account_id, peer: row.peer_ledger_account }));
  }

  /** Idempotent; true when the account is new. */
  addAccount(accountId) {
    const result = this.db
      .prepare('INSERT INTO accounts (account_id) VALUES (?) ON CONFLICT DO NOTHING')
      .run(accountId);
    return result.changes === 1;
  }

  /** Idempotent; true when the account existed. */
  deleteAccount(accountId) {
    const result = this.db.prepare('DELETE FROM accounts WHERE account_id = ?').run(accountId);
    return result.changes === 1;
  }

  /**
   * Record that the peer behind `accountId` is `ledgerAccount` on the ledger, and attribute to
   * it the transfers from that payer kept so far. One transaction. Returns {known: false} when
   * the account is not set up, else {known, changed, attributed: [incoming in ledger order]}.
   */
  learnPeer(accountId, ledgerAccount) {
    return this.db.transaction(() => {
      const account = this.account(accountId);
      if (!account) return { known: false, changed: false, attributed: [] };
      if (account.peer === ledgerAccount) return { known: true, changed: false, attributed: [] };
      this.db
        .prepare('UPDATE accounts SET peer_ledger_account = ? WHERE account_id = ?')
        .run(ledgerAccount, accountId);
      const attributed = this.db
        .prepare(
          'SELECT * FROM incoming WHERE payer = ? AND account_id IS NULL ORDER BY sequence',
        )
        .all(ledgerAccount)
        .map((row) => ({ ...incomingOf(row), accountId }));
      this.db
        .prepare('UPDATE incoming SET account_id = ? WHERE payer = ? AND account_id IS NULL')
        .run(accountId, ledgerAccount);
      return { known: true, changed: true, previous: account.peer, attributed };
    })();
  }

  /** The host account whose peer is `ledgerAccount` (the first set up), or undefined. */
  accountOfPayer(ledgerAccount) {
    const row = this.db
      .prepare(
        'SELECT account_id FROM accounts WHERE peer_ledger_account = ? ORDER BY rowid LIMIT 1',
      )
      .get(ledgerAccount);
    return row && row.account_id;
  }

  // --- outgoing -------------------------------------------------------------------------------

  /** The payment recorded under `key`: {accountId, value, transferId, peer}, or undefined. */
  payment(key) {
    const row = this.db.prepare('SELECT * FROM payments WHERE idempotency_key = ?').get(key);
    return row && {
      accountId: row.account_id,
      value: row.amount,
      transferId: row.transfer_id,
      peer: row.peer_ledger_account,
    };
  }

  addPayment(key, { accountId, value, transferId, peer }) {
    this.db
      .prepare('INSERT INTO payments VALUES (?, ?, ?, ?, ?)')
      .run(key, accountId, value, transferId, peer);
  }

  // --- incoming -------------------------------------------------------------------------------

  /**
   * Handle one transfer into our account (a WatchTransfers message) and move the cursor past
   * it, in one transaction. Returns the incoming row when it is a new transfer from another
   * account (its accountId set when the payer is a known peer), else null (a mint, or seen).
   */
  recordTransfer(transfer) {
    return this.db.transaction(() => {
      const sequence = BigInt(transfer.sequence);
      if (sequence <= BigInt(this.cursor())) return null;
      this.setMeta('cursor', sequence.toString());
      if (!transfer.from_account_id) return null; // a mint: funding, not a settlement
      const accountId = this.accountOfPayer(transfer.from_account_id) || null;
      const inserted = this.db
        .prepare(
          'INSERT INTO incoming (transfer_id, sequence, payer, amount, scale, account_id) '
          + 'VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
        )
        .run(
          transfer.transfer_id,
          sequence,
          transfer.from_account_id,
          transfer.amount.value,
          transfer.amount.scale,
          accountId,
        );
      if (inserted.changes === 0) return null;
      return incomingOf(
        this.db.prepare('SELECT * FROM incoming WHERE transfer_id = ?').get(transfer.transfer_id),
      );
    })();
  }

  incoming(transferId) {
    const row = this.db.prepare('SELECT * FROM incoming WHERE transfer_id = ?').get(transferId);
    return incomingOf(row);
  }

  acknowledge(transferId) {
    this.db.prepare('UPDATE incoming SET acknowledged = 1 WHERE transfer_id = ?').run(transferId);
  }

  /** Every reported (attributed) incoming transfer not yet acknowledged, in ledger order. */
  unacknowledged() {
    return this.db
      .prepare(
        'SELECT * FROM incoming WHERE acknowledged = 0 AND account_id IS NOT NULL '
        + 'ORDER BY sequence',
      )
      .all()
      .map(incomingOf);
  }
}

module.exports = { AdaptorState, SCHEMA_VERSION };
