package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adaptorv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/adaptor/v1"
	enginev1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/engine/v1"
)

// Accounts and peering: SetupAccount records a host account and sends the peer our ledger
// account through Engine.SendData; the peer's adaptor answers (in its ReceiveData) with its
// own. Until that exchange succeeds it is retried in the background, also after a restart.

const (
	exchangeRetryInitial = 200 * time.Millisecond
	exchangeRetryMax     = 5 * time.Second
	// sendDataTimeout bounds one exchange; SetupAccount waits for its own attempt at most this.
	sendDataTimeout = 5 * time.Second
)

// exchange is a background exchange for one account.
type exchange struct{ cancel context.CancelFunc }

func (a *adaptor) SetupAccount(ctx context.Context, request *adaptorv1.SetupAccountRequest) (*adaptorv1.SetupAccountResponse, error) {
	id := request.GetAccountId()
	if err := checkAccountID(id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	a.mu.Lock()
	account := a.state.data.Accounts[id]
	switch {
	case account == nil:
		err := a.persistLocked(func(d *stateData) error {
			d.Accounts[id] = &accountRecord{}
			return nil
		})
		if err != nil {
			a.mu.Unlock()
			return nil, err
		}
		a.log.Info("account set up", "account_id", id)
	case account.PeerLedgerAccount != "" || a.exchanges[id] != nil:
		a.mu.Unlock()
		return &adaptorv1.SetupAccountResponse{}, nil
	}
	if a.engine == nil {
		a.mu.Unlock()
		a.log.Warn("no engine (ILP_HOST_ENGINE_ADDR unset): waiting for the peer to send its ledger account",
			"account_id", id)
		return &adaptorv1.SetupAccountResponse{}, nil
	}
	a.mu.Unlock()

	if err := a.exchangeOnce(ctx, id); err != nil {
		a.log.Warn("ledger account exchange failed: retrying in the background",
			"account_id", id, "error", err.Error())
		a.mu.Lock()
		if account := a.state.data.Accounts[id]; account != nil && account.PeerLedgerAccount == "" {
			a.startExchangeLocked(id)
		}
		a.mu.Unlock()
	}
	return &adaptorv1.SetupAccountResponse{}, nil
}

func (a *adaptor) DeleteAccount(_ context.Context, request *adaptorv1.DeleteAccountRequest) (*adaptorv1.DeleteAccountResponse, error) {
	id := request.GetAccountId()
	if err := checkAccountID(id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if running := a.exchanges[id]; running != nil {
		running.cancel()
		delete(a.exchanges, id)
	}
	if a.state.data.Accounts[id] == nil {
		return &adaptorv1.DeleteAccountResponse{}, nil
	}
	err := a.persistLocked(func(d *stateData) error {
		delete(d.Accounts, id)
		return nil
	})
	if err != nil {
		return nil, err
	}
	a.log.Info("account deleted", "account_id", id)
	return &adaptorv1.DeleteAccountResponse{}, nil
}

// ReceiveData answers the peer's ledger-account PeerRequest with a PeerReply naming ours.
func (a *adaptor) ReceiveData(_ context.Context, request *adaptorv1.ReceiveDataRequest) (*adaptorv1.ReceiveDataResponse, error) {
	id := request.GetAccountId()
	if err := checkAccountID(id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(request.GetData()) > maxDataBytes {
		return nil, status.Errorf(codes.InvalidArgument, "data is %d bytes: at most %d",
			len(request.GetData()), maxDataBytes)
	}
	peer, err := parseLedgerAccountRequest(request.GetData())
	if err == nil && peer == a.cfg.ledgerAccount {
		err = fmt.Errorf("data: the message names our own ledger account %q", peer)
	}
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	a.mu.Lock()
	err = a.recordPeerLocked(id, peer)
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &adaptorv1.ReceiveDataResponse{Data: ledgerAccountReply(a.cfg.ledgerAccount)}, nil
}

// exchangeOnce sends our ledger account to the peer of id and records the one it answers.
func (a *adaptor) exchangeOnce(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, sendDataTimeout)
	defer cancel()
	reply, err := a.engine.SendData(ctx, &enginev1.SendDataRequest{
		AccountId: id, Data: ledgerAccountRequest(a.cfg.ledgerAccount),
	})
	if err != nil {
		s := status.Convert(err)
		return fmt.Errorf("Engine.SendData: %s: %s", s.Code(), s.Message())
	}
	peer, err := parseLedgerAccountReply(reply.GetData())
	if err == nil && peer == a.cfg.ledgerAccount {
		err = errors.New("the reply names our own ledger account")
	}
	if err != nil {
		return fmt.Errorf("the peer's reply: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.recordPeerLocked(id, peer)
}

// recordPeerLocked stores the peer's ledger account (lock held) and reports the settlements it
// had already paid, which were kept until now. NOT_FOUND if id is not set up.
func (a *adaptor) recordPeerLocked(id, peer string) error {
	account := a.state.data.Accounts[id]
	if account == nil {
		return status.Errorf(codes.NotFound, "account_id %q is not set up", id)
	}
	if running := a.exchanges[id]; running != nil {
		running.cancel()
		delete(a.exchanges, id)
	}
	previous := account.PeerLedgerAccount
	if previous == peer {
		return nil
	}
	var reported []*incomingRecord
	err := a.persistLocked(func(d *stateData) error {
		d.Accounts[id].PeerLedgerAccount = peer
		for _, record := range d.Incoming {
			if record.AccountID == "" && record.From == peer {
				record.AccountID = d.accountOfPeer(peer)
				reported = append(reported, record)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if previous != "" {
		a.log.Warn("the peer's ledger account changed", "account_id", id,
			"was", previous, "now", peer)
	} else {
		a.log.Info("the peer's ledger account is known", "account_id", id, "peer_ledger_account", peer)
	}
	for _, record := range reported {
		a.events.publish(incomingEvent(record))
	}
	return nil
}

// startExchangeLocked keeps exchanging ledger accounts for id in the background until it
// succeeds, the account is deleted or the adaptor stops (lock held).
func (a *adaptor) startExchangeLocked(id string) {
	if a.engine == nil || a.exchanges[id] != nil || a.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithCancel(a.ctx)
	this := &exchange{cancel: cancel}
	a.exchanges[id] = this
	a.goBackground(func() {
		defer func() {
			cancel()
			a.mu.Lock()
			if a.exchanges[id] == this {
				delete(a.exchanges, id)
			}
			a.mu.Unlock()
		}()
		for attempt := 1; ; attempt++ {
			delay := retryDelay(attempt, exchangeRetryInitial, exchangeRetryMax, rand.Float64())
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			err := a.exchangeOnce(ctx, id)
			if err == nil || ctx.Err() != nil {
				return
			}
			a.log.Debug("ledger account exchange failed", "account_id", id, "attempt", attempt,
				"error", err.Error())
		}
	})
}
