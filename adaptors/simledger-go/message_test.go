package main

import (
	"encoding/json"
	"testing"
)

func TestLedgerAccountMessageRoundTrip(t *testing.T) {
	data := ledgerAccountMessage("ledger-alice")
	var decoded map[string]any
	if err := json.Unmarshal(data, &decoded); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": "ledger_account", "ledger_account": "ledger-alice"}
	if len(decoded) != len(want) || decoded["type"] != want["type"] ||
		decoded["ledger_account"] != want["ledger_account"] {
		t.Errorf("message = %s", data)
	}
	got, err := parseLedgerAccountMessage(data)
	if err != nil || got != "ledger-alice" {
		t.Errorf("parse = %q, %v", got, err)
	}
}

func TestPeerMessagesFromOtherAdaptors(t *testing.T) {
	// Python's json.dumps puts spaces after separators; extra fields are ignored.
	got, err := parseLedgerAccountMessage(
		[]byte(`{"type": "ledger_account", "ledger_account": "bank:bob", "id": 7}`))
	if err != nil || got != "bank:bob" {
		t.Errorf("parse = %q, %v", got, err)
	}
	for _, bad := range []string{
		``, `null`, `[]`, `"ledger_account"`, `not json`, `{}`,
		`{"type": "claim", "ledger_account": "bob"}`,
		`{"type": "ledger_account"}`,
		`{"type": "ledger_account", "ledger_account": ""}`,
		`{"type": "ledger_account", "ledger_account": "has space"}`,
		`{"type": "ledger_account", "ledger_account": 5}`,
	} {
		if account, err := parseLedgerAccountMessage([]byte(bad)); err == nil {
			t.Errorf("parse(%s) = %q, want an error", bad, account)
		}
	}
}
