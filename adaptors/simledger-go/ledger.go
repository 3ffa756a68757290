package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/status"

	simledgerv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/simledger/v1"
)

// The link to the ledger, reported as the connection "ledger": CONNECTING at start, READY once
// the ledger answered and the stream of transfers into our account is open, TRANSIENT_FAILURE
// (with the error and the count of attempts) while it is not, then CONNECTING again after a
// jittered pause that doubles up to ledgerRetryMax. SHUTDOWN when the adaptor stops.

const (
	ledgerRetryInitial = 100 * time.Millisecond
	ledgerRetryMax     = 2 * time.Second
)

// followLedger keeps the link up until the adaptor stops.
func (a *adaptor) followLedger() {
	for {
		err := a.ledgerSession()
		if a.ctx.Err() != nil {
			break
		}
		a.mu.Lock()
		a.moveLinkLocked(stateTransientFailure, err.Error())
		attempts := a.link.attempts
		a.mu.Unlock()
		if !a.sleep(retryDelay(int(attempts), ledgerRetryInitial, ledgerRetryMax, rand.Float64())) {
			break
		}
		a.mu.Lock()
		a.moveLinkLocked(stateConnecting, "")
		a.mu.Unlock()
	}
	a.mu.Lock()
	a.moveLinkLocked(stateShutdown, "")
	a.mu.Unlock()
}

// ledgerSession learns the asset, makes sure our account exists and follows the transfers into
// it from the durable cursor; it returns why it ended.
func (a *adaptor) ledgerSession() error {
	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()

	call, done := context.WithTimeout(ctx, ledgerCallTimeout)
	info, err := a.ledger.GetLedgerInfo(call, &simledgerv1.GetLedgerInfoRequest{})
	done()
	if err != nil {
		return ledgerError("GetLedgerInfo", err)
	}
	if err := a.learnAsset(info); err != nil {
		return err
	}
	call, done = context.WithTimeout(ctx, ledgerCallTimeout)
	_, err = a.ledger.CreateAccount(call, &simledgerv1.CreateAccountRequest{AccountId: a.cfg.ledgerAccount})
	done()
	if err != nil {
		return ledgerError("CreateAccount", err)
	}
	a.mu.Lock()
	cursor := a.state.data.Cursor
	a.mu.Unlock()
	stream, err := a.ledger.WatchTransfers(ctx, &simledgerv1.WatchTransfersRequest{
		AccountId: a.cfg.ledgerAccount, AfterSequence: cursor,
	})
	if err != nil {
		return ledgerError("WatchTransfers", err)
	}
	a.mu.Lock()
	a.moveLinkLocked(stateReady, "")
	a.mu.Unlock()
	for {
		answer, err := stream.Recv()
		if err != nil {
			return ledgerError("WatchTransfers", err)
		}
		if err := a.recordIncoming(answer.GetTransfer()); err != nil {
			// Nothing was recorded: the next session resumes from the same cursor.
			return err
		}
	}
}

// learnAsset remembers the ledger's asset, and refuses a ledger whose asset changed.
func (a *adaptor) learnAsset(info *simledgerv1.GetLedgerInfoResponse) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	asset := assetRecord{Code: info.GetAssetCode(), Scale: info.GetAssetScale()}
	if known := a.state.data.Asset; known != nil {
		if *known != asset {
			return fmt.Errorf("the ledger's asset is %s at scale %d, but this adaptor's state was "+
				"made for %s at scale %d: refusing to settle in another asset",
				asset.Code, asset.Scale, known.Code, known.Scale)
		}
		return nil
	}
	if err := a.persistLocked(func(d *stateData) error { d.Asset = &asset; return nil }); err != nil {
		return err
	}
	close(a.assetKnown)
	a.log.Info("learned the ledger's asset", "asset_code", asset.Code, "asset_scale", asset.Scale)
	return nil
}

// moveLinkLocked moves the ledger connection (lock held), logs it and tells the event streams.
func (a *adaptor) moveLinkLocked(next connState, cause string) {
	if a.link.state == next {
		return
	}
	moved, err := a.link.to(next, cause, time.Now())
	if err != nil {
		panic(err) // the loop above only makes legal moves: anything else is a bug
	}
	a.link = moved
	if next == stateTransientFailure {
		a.log.Warn("ledger connection", "state", stateName(next), "error", cause,
			"attempts", moved.attempts)
	} else {
		a.log.Info("ledger connection", "state", stateName(next))
	}
	a.events.publish(connectionEvent(moved))
}

// sleep pauses for d; false if the adaptor stops first.
func (a *adaptor) sleep(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-a.ctx.Done():
		return false
	}
}

func ledgerError(call string, err error) error {
	s := status.Convert(err)
	return fmt.Errorf("ledger %s: %s: %s", call, s.Code(), s.Message())
}
