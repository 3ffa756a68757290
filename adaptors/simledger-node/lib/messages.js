'use strict';
// Pure pieces of the adaptor's conversations: the peer messages the two adaptors of a peering
// exchange through Engine.SendData / ReceiveData (ilphost.simledger.v1.PeerRequest and
// PeerReply, proto/ilphost/simledger/v1/peer_message.proto, the same bytes as every simledger
// adaptor's, so that any two peer), and the jittered, capped backoff of every retry loop.

const path = require('node:path');
const protobuf = require('protobufjs');

const { invalid } = require('../../node-common/checks');
const { LEDGER_ACCOUNT } = require('./config');

/** The most ReceiveData may carry: the data limit of an ILP packet. */
const MAX_DATA_BYTES = 32767;
const PROTO_ROOT = path.resolve(__dirname, '..', '..', '..', 'proto');
const PEER_MESSAGE_PROTO = 'ilphost/simledger/v1/peer_message.proto';
/** The one kind of peer message: each side names its own ledger account. */
const LEDGER_ACCOUNT_EXCHANGE = 'ledger_account_exchange';

function loadPeerMessages() {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(PROTO_ROOT, target);
  root.loadSync(PEER_MESSAGE_PROTO, { keepCase: true });
  return {
    PeerRequest: root.lookupType('ilphost.simledger.v1.PeerRequest'),
    PeerReply: root.lookupType('ilphost.simledger.v1.PeerReply'),
  };
}

const { PeerRequest, PeerReply } = loadPeerMessages();

function encode(type, ledgerAccount) {
  const message = type.create({ [LEDGER_ACCOUNT_EXCHANGE]: { ledger_account: ledgerAccount } });
  return Buffer.from(type.encode(message).finish());
}

/** The PeerRequest telling the peer's adaptor that `ledgerAccount` is ours. */
function ledgerAccountRequest(ledgerAccount) {
  return encode(PeerRequest, ledgerAccount);
}

/** The PeerReply to a ledger-account exchange, naming `ledgerAccount` as ours. */
function ledgerAccountReply(ledgerAccount) {
  return encode(PeerReply, ledgerAccount);
}

/**
 * The peer's ledger account from a PeerRequest or PeerReply (`type`); INVALID_ARGUMENT (an
 * AdaptorError) for anything else, including a message naming `ours` (both sides on one ledger
 * account could only pay themselves).
 */
function parseLedgerAccount(type, data, ours) {
  if (data.length > MAX_DATA_BYTES) {
    throw invalid(`data has ${data.length} bytes, at most ${MAX_DATA_BYTES}`);
  }
  let message;
  try {
    message = type.decode(data);
  } catch (error) {
    throw invalid(`data is not an ilphost.simledger.v1.${type.name}: ${error.message}`);
  }
  // protobufjs leaves the oneof's virtual field unset when no member is present.
  const kind = type.toObject(message, { oneofs: true }).kind;
  if (kind !== LEDGER_ACCOUNT_EXCHANGE) {
    throw invalid(
      `${type.name} of kind ${kind || 'unset'}: this adaptor understands only `
      + LEDGER_ACCOUNT_EXCHANGE,
    );
  }
  const account = message[LEDGER_ACCOUNT_EXCHANGE].ledger_account;
  if (typeof account !== 'string' || !LEDGER_ACCOUNT.test(account)) {
    throw invalid(
      `ledger_account ${JSON.stringify(account)}: expected 1 to 128 characters of [A-Za-z0-9._~:-]`,
    );
  }
  if (account === ours) {
    throw invalid(`ledger_account ${JSON.stringify(account)} is this adaptor's own account`);
  }
  return account;
}

/** The peer's ledger account from its PeerRequest (ReceiveData). */
function parseLedgerAccountRequest(data, ours) {
  return parseLedgerAccount(PeerRequest, data, ours);
}

/** The peer's ledger account from its PeerReply (the answer to our Engine.SendData). */
function parseLedgerAccountReply(data, ours) {
  return parseLedgerAccount(PeerReply, data, ours);
}

/**
 * Milliseconds to wait before retry number `attempt` (1, 2, ...): doubling from `initialMs`,
 * capped at `maxMs`, with its upper half jittered so that many retriers spread out.
 */
function backoffDelay(attempt, { initialMs, maxMs }, random = Math.random) {
  const exponent = Math.min(Math.max(attempt, 1) - 1, 30);
  const ceiling = Math.min(maxMs, initialMs * 2 ** exponent);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

module.exports = {
  MAX_DATA_BYTES,
  backoffDelay,
  ledgerAccountReply,
  ledgerAccountRequest,
  parseLedgerAccountReply,
  parseLedgerAccountRequest,
};
