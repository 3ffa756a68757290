package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	adaptorv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/adaptor/v1"
	enginev1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/engine/v1"
	simledgerv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/simledger/v1"
	typesv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/types/v1"
)

// The LedgerAdaptor service over the simulated ledger: the adaptor's parts, its life, and the
// read-only RPCs. Accounts and peering are in accounts.go, payments in payments.go, incoming
// settlements in incoming.go, the link to the ledger in ledger.go.

const (
	adaptorVersion = "0.1.0"
	// ledgerCallTimeout bounds each call to the ledger.
	ledgerCallTimeout = 10 * time.Second
	// assetWait bounds how long GetInfo waits for the ledger's first answer: the host asks
	// right after the handshake, usually a few milliseconds before the ledger has answered.
	assetWait = 5 * time.Second
)

var capabilities = []string{"send_money", "receive_money", "data", "balance", "accounts"}

type adaptor struct {
	adaptorv1.UnimplementedLedgerAdaptorServer

	cfg config
	log hclog.Logger
	// receipts writes one hclog JSON line per settlement to stdout, which go-plugin carries to
	// the host over GRPCStdio. Used only from RPC handlers: they run after plugin.Serve has
	// pointed os.Stdout at its pipe (see stdoutNow).
	receipts hclog.Logger

	ledgerConn *grpc.ClientConn
	ledger     simledgerv1.SimLedgerClient
	engineConn *grpc.ClientConn
	engine     enginev1.EngineClient // nil without ILP_HOST_ENGINE_ADDR

	// assetKnown is closed once the ledger's asset is known (from the state file or the ledger).
	assetKnown chan struct{}
	// ctx ends when the adaptor stops; background work runs under it.
	ctx    context.Context
	cancel context.CancelFunc
	work   sync.WaitGroup
	keys   keyLocks

	// mu guards everything below: the state (and its file), the ledger connection's state,
	// the event subscribers, the running peer exchanges.
	mu        sync.Mutex
	state     *stateFile
	link      connection
	events    eventHub
	exchanges map[string]*exchange
}

func newAdaptor(cfg config, log hclog.Logger) (*adaptor, error) {
	state, err := openState(cfg.statePath, cfg.ledgerAccount)
	if err != nil {
		return nil, err
	}
	ledgerConn, err := grpc.NewClient(cfg.ledgerAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		state.close()
		return nil, fmt.Errorf("%s=%q: %w", envLedgerAddr, cfg.ledgerAddr, err)
	}
	a := &adaptor{
		cfg: cfg,
		log: log,
		receipts: hclog.New(&hclog.LoggerOptions{
			Name: log.Name(), Level: hclog.Info, Output: stdoutNow{}, JSONFormat: true,
		}),
		ledgerConn: ledgerConn,
		ledger:     simledgerv1.NewSimLedgerClient(ledgerConn),
		state:      state,
		link:       newConnection("ledger", "settlement-system", stateConnecting, time.Now()),
		exchanges:  map[string]*exchange{},
		assetKnown: make(chan struct{}),
	}
	if state.data.Asset != nil {
		close(a.assetKnown)
	}
	if cfg.engineAddr != "" {
		a.engineConn, err = grpc.NewClient(cfg.engineAddr,
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			ledgerConn.Close()
			state.close()
			return nil, fmt.Errorf("%s=%q: %w", envEngineAddr, cfg.engineAddr, err)
		}
		a.engine = enginev1.NewEngineClient(a.engineConn)
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.goBackground(a.followLedger)
	a.mu.Lock()
	for id, account := range state.data.Accounts {
		if account.PeerLedgerAccount == "" {
			a.startExchangeLocked(id)
		}
	}
	a.mu.Unlock()
	log.Info("adaptor ready", "ledger", cfg.ledgerAddr, "ledger_account", cfg.ledgerAccount,
		"state_file", cfg.statePath, "engine", cfg.engineAddr != "")
	return a, nil
}

func (a *adaptor) goBackground(run func()) {
	a.work.Add(1)
	go func() {
		defer a.work.Done()
		run()
	}()
}

// close stops the background work and the clients, then keeps the lock for good, so that no
// state write is under way or can start while the process exits: call it only right before
// exiting. A second call blocks until the exit.
func (a *adaptor) close() {
	a.cancel()
	done := make(chan struct{})
	go func() { a.work.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		a.log.Warn("background work did not end within 2 s; stopping anyway")
	}
	a.mu.Lock()
	a.ledgerConn.Close()
	if a.engineConn != nil {
		a.engineConn.Close()
	}
	a.state.close()
}

// --- read-only RPCs ----------------------------------------------------------------------

func (a *adaptor) GetInfo(ctx context.Context, _ *adaptorv1.GetInfoRequest) (*adaptorv1.GetInfoResponse, error) {
	wait := time.NewTimer(assetWait)
	defer wait.Stop()
	select {
	case <-a.assetKnown:
	case <-wait.C:
	case <-ctx.Done():
	}
	a.mu.Lock()
	asset := a.state.data.Asset
	a.mu.Unlock()
	if asset == nil {
		return nil, status.Error(codes.Unavailable,
			"the ledger has not answered yet, so its asset is unknown: retry")
	}
	return &adaptorv1.GetInfoResponse{
		Name:             "simledger-go",
		Version:          adaptorVersion,
		Ledger:           "simledger",
		AssetCode:        asset.Code,
		AssetScale:       asset.Scale,
		Capabilities:     capabilities,
		ContractVersions: []uint32{uint32(handshake.ProtocolVersion)},
	}, nil
}

func (a *adaptor) Probe(context.Context, *adaptorv1.ProbeRequest) (*adaptorv1.ProbeResponse, error) {
	a.mu.Lock()
	link := a.link
	a.mu.Unlock()
	response := &adaptorv1.ProbeResponse{Connections: []*typesv1.Connection{link.proto()}}
	switch {
	case link.state == stateReady:
		response.Ready = wrapperspb.Bool(true)
	case link.state == stateConnecting && link.attempts == 0:
		// The first attempt is under way: cannot tell yet.
	default:
		response.Ready = wrapperspb.Bool(false)
	}
	return response, nil
}

func (a *adaptor) GetBalance(ctx context.Context, _ *adaptorv1.GetBalanceRequest) (*adaptorv1.GetBalanceResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, ledgerCallTimeout)
	defer cancel()
	answer, err := a.ledger.GetAccount(ctx, &simledgerv1.GetAccountRequest{AccountId: a.cfg.ledgerAccount})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "the ledger did not give the balance of %q: %s",
			a.cfg.ledgerAccount, status.Convert(err).Message())
	}
	return &adaptorv1.GetBalanceResponse{Balance: answer.GetAccount().GetBalance()}, nil
}

// WatchEvents sends the current state of the ledger connection first (the contract: a stream
// starts with the truth, as grpc.health.v1 Watch does), then re-delivers every unacknowledged
// incoming settlement in ledger order, then follows live events.
func (a *adaptor) WatchEvents(_ *adaptorv1.WatchEventsRequest, stream adaptorv1.LedgerAdaptor_WatchEventsServer) error {
	// Headers at once: the host sees that the stream is up even with nothing to send.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	a.mu.Lock()
	backlog := []*adaptorv1.WatchEventsResponse{connectionEvent(a.link)}
	for _, record := range a.state.data.unacknowledged() {
		backlog = append(backlog, incomingEvent(record))
	}
	sub := a.events.subscribe()
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.events.unsubscribe(sub)
		a.mu.Unlock()
	}()

	for _, event := range backlog {
		if err := stream.Send(event); err != nil {
			return err
		}
	}
	for {
		select {
		case event := <-sub.events:
			if err := stream.Send(event); err != nil {
				return err
			}
		case <-sub.lagged:
			return status.Error(codes.Unavailable,
				"this event stream fell behind and was ended: reopen it (unacknowledged settlements are re-delivered)")
		case <-a.ctx.Done():
			return nil
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// --- helpers -----------------------------------------------------------------------------

// persistLocked applies change to the state and writes it (lock held). A failed write is INTERNAL:
// nothing changed, and the caller may retry.
func (a *adaptor) persistLocked(change func(*stateData) error) error {
	if err := a.state.update(change); err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		a.log.Error("cannot write the state file", "error", err.Error())
		return status.Errorf(codes.Internal, "cannot write the state file: %v", err)
	}
	return nil
}

func amountOf(value string, scale uint32) *typesv1.Amount {
	return &typesv1.Amount{Value: value, Scale: scale}
}

// stdoutNow writes to whatever os.Stdout is at the time of the write: once plugin.Serve runs,
// that is the pipe go-plugin streams over GRPCStdio.
type stdoutNow struct{}

func (stdoutNow) Write(p []byte) (int, error) { return os.Stdout.Write(p) }

var _ io.Writer = stdoutNow{}
