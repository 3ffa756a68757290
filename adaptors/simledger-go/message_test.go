package main

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// PeerRequest{ledger_account_exchange (1): {ledger_account (1): "ledger:alice"}}: the bytes
// sdk/simledger.py and the Node.js adaptor write too.
const aliceExchangeHex = "0a0e0a0c6c65646765723a616c696365"

func TestLedgerAccountExchangeIsTheSharedProtobuf(t *testing.T) {
	want, _ := hex.DecodeString(aliceExchangeHex)
	if got := ledgerAccountRequest("ledger:alice"); !bytes.Equal(got, want) {
		t.Errorf("request = %x, want %x", got, want)
	}
	if got := ledgerAccountReply("ledger:alice"); !bytes.Equal(got, want) {
		t.Errorf("reply = %x, want %x", got, want)
	}
	if got, err := parseLedgerAccountRequest(want); err != nil || got != "ledger:alice" {
		t.Errorf("parse request = %q, %v", got, err)
	}
	if got, err := parseLedgerAccountReply(ledgerAccountReply("bank:bob")); err != nil || got != "bank:bob" {
		t.Errorf("parse reply = %q, %v", got, err)
	}
}

func TestUnusablePeerMessagesAreRefused(t *testing.T) {
	for _, bad := range [][]byte{
		nil,                               // no kind
		{0x12, 0x03, 'n', 'e', 'w'},       // a kind from a newer release (field 2)
		[]byte("not protobuf"),            // not decodable
		{0x0a, 0x05, 0x0a, 0x03},          // truncated
		ledgerAccountRequest(""),          // empty account
		ledgerAccountRequest("has space"), // outside the ledger's grammar
		ledgerAccountRequest(string(make([]byte, 129))),
	} {
		if account, err := parseLedgerAccountRequest(bad); err == nil {
			t.Errorf("parse(%x) = %q, want an error", bad, account)
		}
	}
}
