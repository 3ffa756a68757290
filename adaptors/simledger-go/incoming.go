package main

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adaptorv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/adaptor/v1"
	simledgerv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/simledger/v1"
)

// Incoming settlements: every transfer into our ledger account from a peer's ledger account is
// recorded (with the cursor, in one write) and reported on WatchEvents until the engine
// acknowledges it with ReceiveMoney. A transfer from a ledger account no peer has named yet is
// kept and reported once one does (accounts.go); a mint is funding, not a settlement.

// recordIncoming takes one transfer from WatchTransfers.
func (a *adaptor) recordIncoming(transfer *simledgerv1.LedgerTransfer) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if transfer.GetSequence() <= a.state.data.Cursor {
		return nil // already taken: the stream resumed from an older cursor
	}
	var record *incomingRecord
	if transfer.GetFromAccountId() != "" && transfer.GetToAccountId() == a.cfg.ledgerAccount {
		record = &incomingRecord{
			TransferID: transfer.GetTransferId(),
			From:       transfer.GetFromAccountId(),
			Value:      transfer.GetAmount().GetValue(),
			Scale:      transfer.GetAmount().GetScale(),
			Sequence:   transfer.GetSequence(),
			AccountID:  a.state.data.accountOfPeer(transfer.GetFromAccountId()),
		}
	}
	err := a.persistLocked(func(d *stateData) error {
		if record != nil {
			d.Incoming = append(d.Incoming, record)
		}
		d.Cursor = transfer.GetSequence()
		return nil
	})
	if err != nil || record == nil {
		return err
	}
	if record.AccountID == "" {
		a.log.Info("incoming transfer from a ledger account no peer has named yet: kept",
			"transfer_id", record.TransferID, "from", record.From)
		return nil
	}
	a.log.Info("incoming settlement", "settlement_id", record.TransferID,
		"account_id", record.AccountID, "amount", record.Value)
	a.events.publish(incomingEvent(record))
	return nil
}

// ReceiveMoney acknowledges a reported settlement: it is not re-delivered any more.
func (a *adaptor) ReceiveMoney(_ context.Context, request *adaptorv1.ReceiveMoneyRequest) (*adaptorv1.ReceiveMoneyResponse, error) {
	id := request.GetSettlementId()
	if err := checkSettlementID(id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	a.mu.Lock()
	record := a.state.data.incoming(id)
	if record == nil || record.AccountID == "" {
		a.mu.Unlock()
		return nil, status.Errorf(codes.NotFound, "settlement_id %q: no such incoming settlement was reported", clip(id))
	}
	if record.Acknowledged {
		a.mu.Unlock()
		return &adaptorv1.ReceiveMoneyResponse{}, nil
	}
	accountID, value := record.AccountID, record.Value
	err := a.persistLocked(func(d *stateData) error {
		d.incoming(id).Acknowledged = true
		return nil
	})
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	// After unlocking: a stdout write can block until the host reads GRPCStdio.
	a.receipts.Info("incoming settlement acknowledged", "settlement_id", id,
		"account_id", accountID, "amount", value)
	return &adaptorv1.ReceiveMoneyResponse{}, nil
}
