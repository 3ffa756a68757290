package main

import (
	"encoding/json"
	"errors"
	"fmt"
)

// The one message simledger adaptors exchange through Engine.SendData / ReceiveData, the same
// JSON as the Python and Node.js adaptors, so that any two of them peer:
//
//	{"type": "ledger_account", "ledger_account": "<the sender's ledger account>"}
//
// The reply (from ReceiveData) is the same message naming the replier's ledger account.

const messageLedgerAccount = "ledger_account"

type peerMessage struct {
	Type          string `json:"type"`
	LedgerAccount string `json:"ledger_account"`
}

func ledgerAccountMessage(ledgerAccount string) []byte {
	content, err := json.Marshal(peerMessage{Type: messageLedgerAccount, LedgerAccount: ledgerAccount})
	if err != nil {
		panic(err) // two strings always marshal
	}
	return content
}

// parseLedgerAccountMessage returns the ledger account a peer's message names.
func parseLedgerAccountMessage(data []byte) (string, error) {
	if len(data) == 0 {
		return "", errors.New("data is empty: expected a JSON ledger_account message")
	}
	var message struct {
		Type          *string `json:"type"`
		LedgerAccount *string `json:"ledger_account"`
	}
	if err := json.Unmarshal(data, &message); err != nil {
		return "", fmt.Errorf("data is not a JSON message object: %v", err)
	}
	if message.Type == nil {
		return "", errors.New(`data: the message has no "type"`)
	}
	if *message.Type != messageLedgerAccount {
		return "", fmt.Errorf("data: unknown message type %q (expected %q)",
			clip(*message.Type), messageLedgerAccount)
	}
	if message.LedgerAccount == nil {
		return "", errors.New(`data: the ledger_account message has no "ledger_account"`)
	}
	if err := checkLedgerAccount(*message.LedgerAccount); err != nil {
		return "", fmt.Errorf("data: %w", err)
	}
	return *message.LedgerAccount, nil
}
