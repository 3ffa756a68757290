package main

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	simledgerv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/simledger/v1"
)

// The messages simledger adaptors exchange through Engine.SendData / ReceiveData are the
// protobuf PeerRequest and PeerReply of proto/ilphost/simledger/v1/peer_message.proto, the same
// bytes in every language, so that any two simledger adaptors peer. The one kind today is the
// ledger-account exchange: the request names the sender's ledger account, the reply the
// replier's.

func ledgerAccountRequest(ledgerAccount string) []byte {
	return mustMarshal(&simledgerv1.PeerRequest{Kind: &simledgerv1.PeerRequest_LedgerAccountExchange{
		LedgerAccountExchange: &simledgerv1.LedgerAccountExchange{LedgerAccount: ledgerAccount},
	}})
}

func ledgerAccountReply(ledgerAccount string) []byte {
	return mustMarshal(&simledgerv1.PeerReply{Kind: &simledgerv1.PeerReply_LedgerAccountExchange{
		LedgerAccountExchange: &simledgerv1.LedgerAccountExchange{LedgerAccount: ledgerAccount},
	}})
}

func mustMarshal(message proto.Message) []byte {
	content, err := proto.Marshal(message)
	if err != nil {
		panic(err) // a message of one string always marshals
	}
	return content
}

// parseLedgerAccountRequest returns the ledger account a peer's PeerRequest names.
func parseLedgerAccountRequest(data []byte) (string, error) {
	var request simledgerv1.PeerRequest
	if err := proto.Unmarshal(data, &request); err != nil {
		return "", fmt.Errorf("data is not an ilphost.simledger.v1.PeerRequest: %v", err)
	}
	return exchangedAccount("PeerRequest", request.GetLedgerAccountExchange())
}

// parseLedgerAccountReply returns the ledger account a peer's PeerReply names.
func parseLedgerAccountReply(data []byte) (string, error) {
	var reply simledgerv1.PeerReply
	if err := proto.Unmarshal(data, &reply); err != nil {
		return "", fmt.Errorf("data is not an ilphost.simledger.v1.PeerReply: %v", err)
	}
	return exchangedAccount("PeerReply", reply.GetLedgerAccountExchange())
}

func exchangedAccount(name string, exchange *simledgerv1.LedgerAccountExchange) (string, error) {
	if exchange == nil {
		// No kind, or one from a newer release (an unknown field to us).
		return "", errors.New("data: a " + name + " of no kind this adaptor knows " +
			"(expected ledger_account_exchange)")
	}
	if err := checkLedgerAccount(exchange.GetLedgerAccount()); err != nil {
		return "", fmt.Errorf("data: %w", err)
	}
	return exchange.GetLedgerAccount(), nil
}
