package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// The adaptor's durable state: one JSON file, rewritten whole on every change (write a
// temporary file, fsync, rename over the old one, fsync the directory), so a crash leaves the
// old state or the new one, never a mix. A change and the ledger cursor that goes with it are
// one write, so a crash neither loses nor doubles an incoming settlement.

const stateVersion = 1

// stateData is what the file holds.
type stateData struct {
	Version int `json:"version"`
	// LedgerAccount is the ledger account the state belongs to; another one is refused.
	LedgerAccount string `json:"ledger_account"`
	// Asset is the ledger's asset once it has answered; nil before.
	Asset *assetRecord `json:"asset,omitempty"`
	// Accounts are the set-up host accounts, by host account id.
	Accounts map[string]*accountRecord `json:"accounts"`
	// Payments are the SendMoney idempotency keys used, by key.
	Payments map[string]*paymentRecord `json:"payments"`
	// Incoming is every transfer into our ledger account from another account, in ledger order.
	Incoming []*incomingRecord `json:"incoming"`
	// Cursor is the ledger sequence of the last transfer into our account taken into Incoming
	// (or skipped as a mint): WatchTransfers resumes after it.
	Cursor uint64 `json:"cursor"`
}

type assetRecord struct {
	Code  string `json:"code"`
	Scale uint32 `json:"scale"`
}

type accountRecord struct {
	// PeerLedgerAccount is the peer's ledger account; empty until the peers have exchanged them.
	PeerLedgerAccount string `json:"peer_ledger_account,omitempty"`
}

type paymentRecord struct {
	AccountID string `json:"account_id"`
	Value     string `json:"value"`
	Scale     uint32 `json:"scale"`
	// To is the peer's ledger account when the key was first used: a retry pays the same one.
	To           string `json:"to"`
	SettlementID string `json:"settlement_id"`
	// Completed: the ledger confirmed the transfer. Until then the outcome may be unknown.
	Completed bool `json:"completed"`
}

type incomingRecord struct {
	TransferID string `json:"transfer_id"`
	From       string `json:"from"`
	Value      string `json:"value"`
	Scale      uint32 `json:"scale"`
	Sequence   uint64 `json:"sequence"`
	// AccountID is the host account of the payer; empty while the payer's ledger account
	// belongs to no known peer (the settlement is reported once it does).
	AccountID    string `json:"account_id,omitempty"`
	Acknowledged bool   `json:"acknowledged,omitempty"`
}

// stateFile is the state in memory and its file. Not safe for concurrent use: the adaptor
// holds its lock around every use.
type stateFile struct {
	path  string
	data  stateData
	saved []byte // the file's content: what a failed update returns to
	lock  *os.File
}

// openState loads the file at path (a missing file is a fresh state) and locks it against a
// second adaptor process using the same file.
func openState(path, ledgerAccount string) (*stateFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("state file %s is in use by another adaptor process (%w)", path, err)
	}
	s := &stateFile{path: path, lock: lock}
	content, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		s.data = stateData{Version: stateVersion, LedgerAccount: ledgerAccount}
		s.data.init()
		if err := s.update(func(*stateData) error { return nil }); err != nil {
			s.close()
			return nil, err
		}
		return s, nil
	case err != nil:
		s.close()
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if err := decodeState(content, &s.data); err != nil {
		s.close()
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if s.data.LedgerAccount != ledgerAccount {
		s.close()
		return nil, fmt.Errorf("state file %s belongs to ledger account %q, not %q: "+
			"use another file for another account", path, s.data.LedgerAccount, ledgerAccount)
	}
	s.saved = content
	return s, nil
}

func decodeState(content []byte, into *stateData) error {
	var data stateData
	if err := json.Unmarshal(content, &data); err != nil {
		return fmt.Errorf("not a state file of this adaptor: %w", err)
	}
	if data.Version != stateVersion {
		return fmt.Errorf("state version %d; this adaptor reads version %d", data.Version, stateVersion)
	}
	data.init()
	*into = data
	return nil
}

func (d *stateData) init() {
	if d.Accounts == nil {
		d.Accounts = map[string]*accountRecord{}
	}
	if d.Payments == nil {
		d.Payments = map[string]*paymentRecord{}
	}
	if d.Incoming == nil {
		d.Incoming = []*incomingRecord{}
	}
}

// update applies change and writes the file. If change or the write fails, the state in
// memory is what the file holds, unchanged, and the error is returned.
func (s *stateFile) update(change func(*stateData) error) error {
	err := change(&s.data)
	var content []byte
	if err == nil {
		content, err = json.MarshalIndent(&s.data, "", " ")
	}
	if err == nil {
		err = writeAtomically(s.path, content)
	}
	if err != nil {
		if s.saved != nil {
			// Cannot fail: these bytes were written from a valid state.
			_ = decodeState(s.saved, &s.data)
		}
		return err
	}
	s.saved = content
	return nil
}

func writeAtomically(path string, content []byte) error {
	temporary := path + ".tmp"
	file, err := os.OpenFile(temporary, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	_, err = file.Write(content)
	if err == nil {
		err = file.Sync()
	}
	if closeErr := file.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(temporary, path)
	}
	if err != nil {
		_ = os.Remove(temporary)
		return fmt.Errorf("state file: %w", err)
	}
	// The rename is durable once the directory is.
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

func (s *stateFile) close() {
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
}

// --- queries (pure) ----------------------------------------------------------------------

// accountOfPeer is the host account whose peer has the ledger account ledgerAccount, or "".
// Should two accounts name the same peer, the first by id wins, so the answer is stable.
func (d *stateData) accountOfPeer(ledgerAccount string) string {
	found := ""
	for id, account := range d.Accounts {
		if account.PeerLedgerAccount == ledgerAccount && (found == "" || id < found) {
			found = id
		}
	}
	return found
}

// incoming is the incoming settlement with that transfer id, or nil.
func (d *stateData) incoming(transferID string) *incomingRecord {
	for _, record := range d.Incoming {
		if record.TransferID == transferID {
			return record
		}
	}
	return nil
}

// unacknowledged lists the reported settlements not yet acknowledged, in ledger order.
func (d *stateData) unacknowledged() []*incomingRecord {
	var pending []*incomingRecord
	for _, record := range d.Incoming {
		if record.AccountID != "" && !record.Acknowledged {
			pending = append(pending, record)
		}
	}
	return pending
}
