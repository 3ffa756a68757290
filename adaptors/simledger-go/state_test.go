package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStateSurvivesReopening(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "alice.json")
	state, err := openState(path, "ledger-alice")
	if err != nil {
		t.Fatal(err)
	}
	err = state.update(func(d *stateData) error {
		d.Asset = &assetRecord{Code: "USD", Scale: 2}
		d.Accounts["peer-bob"] = &accountRecord{PeerLedgerAccount: "ledger-bob"}
		d.Payments["k1"] = &paymentRecord{AccountID: "peer-bob", Value: "5", Scale: 2,
			To: "ledger-bob", SettlementID: "ledger-alice:k1", Completed: true}
		d.Incoming = append(d.Incoming, &incomingRecord{TransferID: "bob:1", From: "ledger-bob",
			Value: "7", Scale: 2, Sequence: 3, AccountID: "peer-bob"})
		d.Cursor = 3
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	state.close()

	again, err := openState(path, "ledger-alice")
	if err != nil {
		t.Fatal(err)
	}
	defer again.close()
	d := again.data
	if d.Asset == nil || d.Asset.Code != "USD" || d.Cursor != 3 ||
		d.Accounts["peer-bob"].PeerLedgerAccount != "ledger-bob" ||
		!d.Payments["k1"].Completed || d.incoming("bob:1") == nil {
		t.Errorf("reopened state = %+v", d)
	}
	if got := d.accountOfPeer("ledger-bob"); got != "peer-bob" {
		t.Errorf("accountOfPeer = %q", got)
	}
	if pending := d.unacknowledged(); len(pending) != 1 || pending[0].TransferID != "bob:1" {
		t.Errorf("unacknowledged = %v", pending)
	}
}

func TestAFailedChangeLeavesTheStateAsItWas(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alice.json")
	state, err := openState(path, "ledger-alice")
	if err != nil {
		t.Fatal(err)
	}
	defer state.close()
	before, _ := os.ReadFile(path)
	refused := errors.New("refused")
	err = state.update(func(d *stateData) error {
		d.Cursor = 99
		d.Accounts["half"] = &accountRecord{}
		return refused
	})
	if !errors.Is(err, refused) {
		t.Fatalf("update error = %v", err)
	}
	after, _ := os.ReadFile(path)
	if state.data.Cursor != 0 || state.data.Accounts["half"] != nil || string(before) != string(after) {
		t.Errorf("a refused change left traces: %+v", state.data)
	}
}

func TestTheStateFileIsGuarded(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "alice.json")
	state, err := openState(path, "ledger-alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openState(path, "ledger-alice"); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second opener got %v, want 'in use'", err)
	}
	state.close()
	if _, err := openState(path, "ledger-bob"); err == nil || !strings.Contains(err.Error(), "ledger-alice") {
		t.Errorf("another ledger account got %v", err)
	}
	garbage := filepath.Join(dir, "garbage.json")
	if err := os.WriteFile(garbage, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openState(garbage, "ledger-alice"); err == nil {
		t.Error("a corrupt state file was accepted")
	}
}
