package main

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adaptorv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/adaptor/v1"
	simledgerv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/simledger/v1"
)

// SendMoney: one ledger Transfer per idempotency key. The transfer id is
// "<our ledger account>:<key>", so a retry (even after a restart of the adaptor) is the same
// transfer and the ledger pays it once. The key is recorded, with its account, amount and the
// peer's ledger account, before the transfer is tried: reusing it for other content is
// ALREADY_EXISTS, and a retry pays the same peer even if the account changed meanwhile.

func (a *adaptor) SendMoney(ctx context.Context, request *adaptorv1.SendMoneyRequest) (*adaptorv1.SendMoneyResponse, error) {
	id, key, amount := request.GetAccountId(), request.GetIdempotencyKey(), request.GetAmount()
	if err := checkAccountID(id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := checkIdempotencyKey(key); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	a.mu.Lock()
	asset := a.state.data.Asset
	a.mu.Unlock()
	if asset == nil {
		return nil, status.Error(codes.Unavailable,
			"the ledger has not answered yet, so its scale is unknown: retry")
	}
	if err := checkPayment(amount, asset.Scale); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}

	// One call per key at a time: the record, the transfer and its outcome go together.
	defer a.keys.lock(key)()
	payment, err := a.recordPayment(id, key, amount.GetValue(), amount.GetScale())
	if err != nil || payment.Completed {
		return answerOf(payment), err
	}

	call, done := context.WithTimeout(ctx, ledgerCallTimeout)
	_, err = a.ledger.Transfer(call, &simledgerv1.TransferRequest{
		TransferId:    payment.SettlementID,
		FromAccountId: a.cfg.ledgerAccount,
		ToAccountId:   payment.To,
		Amount:        amountOf(payment.Value, payment.Scale),
		Memo:          a.cfg.ledgerAccount,
	})
	done()
	if err != nil {
		return nil, a.transferFailed(key, payment, err)
	}
	a.mu.Lock()
	err = a.persistLocked(func(d *stateData) error {
		d.Payments[key].Completed = true
		return nil
	})
	a.mu.Unlock()
	if err != nil {
		// Paid, but not recorded as such: the retry with the same key finds the transfer.
		return nil, status.Errorf(codes.Unavailable, "paid, but %s: retry with the same key",
			status.Convert(err).Message())
	}
	a.log.Info("settlement sent", "settlement_id", payment.SettlementID, "account_id", id,
		"amount", payment.Value)
	a.receipts.Info("settlement sent", "settlement_id", payment.SettlementID, "account_id", id,
		"to", payment.To, "amount", payment.Value)
	payment.Completed = true
	return answerOf(payment), nil
}

// recordPayment returns the key's record, making it if the key is new: ALREADY_EXISTS for a
// key used with other content, NOT_FOUND for an account not set up, FAILED_PRECONDITION while
// the peer's ledger account is unknown. The result is a copy.
func (a *adaptor) recordPayment(id, key, value string, scale uint32) (paymentRecord, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if known := a.state.data.Payments[key]; known != nil {
		if known.AccountID != id || known.Value != value || known.Scale != scale {
			return paymentRecord{}, status.Errorf(codes.AlreadyExists,
				"idempotency_key %q was used for account %q, amount %s at scale %d: "+
					"a new settlement needs a new key", clip(key), known.AccountID, known.Value, known.Scale)
		}
		return *known, nil
	}
	account := a.state.data.Accounts[id]
	if account == nil {
		return paymentRecord{}, status.Errorf(codes.NotFound, "account_id %q is not set up", id)
	}
	if account.PeerLedgerAccount == "" {
		return paymentRecord{}, status.Errorf(codes.FailedPrecondition,
			"account_id %q: the peer's ledger account is not known yet (the exchange is retried)", id)
	}
	record := paymentRecord{
		AccountID:    id,
		Value:        value,
		Scale:        scale,
		To:           account.PeerLedgerAccount,
		SettlementID: a.cfg.ledgerAccount + ":" + key,
	}
	err := a.persistLocked(func(d *stateData) error {
		stored := record
		d.Payments[key] = &stored
		return nil
	})
	return record, err
}

// transferFailed turns the ledger's refusal into the answer. A definite refusal means no
// transfer with this id exists (the ledger checks the id first), so the key's record is
// removed: nothing has changed. Anything else leaves the outcome unknown: UNAVAILABLE, retry.
func (a *adaptor) transferFailed(key string, payment paymentRecord, err error) error {
	refusal := status.Convert(err)
	var answer error
	switch refusal.Code() {
	case codes.FailedPrecondition:
		answer = status.Errorf(codes.FailedPrecondition, "the ledger refused the transfer: %s", refusal.Message())
	case codes.NotFound:
		answer = status.Errorf(codes.FailedPrecondition,
			"the ledger refused the transfer to %q: %s", payment.To, refusal.Message())
	case codes.InvalidArgument:
		answer = status.Errorf(codes.InvalidArgument, "the ledger refused the transfer: %s", refusal.Message())
	case codes.AlreadyExists:
		// Another transfer holds this id: keep the record, the key is spent.
		return status.Errorf(codes.AlreadyExists, "the ledger has another transfer with id %q: %s",
			payment.SettlementID, refusal.Message())
	default:
		return status.Errorf(codes.Unavailable,
			"the ledger did not confirm transfer %q (%s: %s): outcome unknown, retry with the same key",
			payment.SettlementID, refusal.Code(), refusal.Message())
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if forget := a.persistLocked(func(d *stateData) error {
		delete(d.Payments, key)
		return nil
	}); forget != nil {
		a.log.Error("cannot forget a refused payment's key", "key", key, "error", forget.Error())
	}
	return answer
}

func answerOf(payment paymentRecord) *adaptorv1.SendMoneyResponse {
	if !payment.Completed {
		return nil
	}
	return &adaptorv1.SendMoneyResponse{
		SettlementId: payment.SettlementID,
		Status:       adaptorv1.SettlementStatus_SETTLEMENT_STATUS_COMPLETED,
	}
}

// keyLocks serialises calls that share an idempotency key.
type keyLocks struct {
	mu   sync.Mutex
	held map[string]*keyLock
}

type keyLock struct {
	mu    sync.Mutex
	users int
}

// lock takes the key's lock and returns its release.
func (k *keyLocks) lock(key string) func() {
	k.mu.Lock()
	if k.held == nil {
		k.held = map[string]*keyLock{}
	}
	entry := k.held[key]
	if entry == nil {
		entry = &keyLock{}
		k.held[key] = entry
	}
	entry.users++
	k.mu.Unlock()
	entry.mu.Lock()
	return func() {
		entry.mu.Unlock()
		k.mu.Lock()
		entry.users--
		if entry.users == 0 {
			delete(k.held, key)
		}
		k.mu.Unlock()
	}
}
