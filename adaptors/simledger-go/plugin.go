package main

import (
	"context"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	adaptorv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/adaptor/v1"
)

// ledgerAdaptorPlugin is the go-plugin plugin: it builds the adaptor and registers the
// LedgerAdaptor service when plugin.Serve sets up its gRPC server, before the handshake line.
type ledgerAdaptorPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	log hclog.Logger

	mu      sync.Mutex
	adaptor *adaptor
	server  *grpc.Server
	// initErr is set when the adaptor could not be built (configuration, state file): Serve
	// then returns before the handshake and main exits 1.
	initErr error
}

// GRPCServer reads the configuration, opens the state file, starts the ledger link and
// registers the service. An error here makes plugin.Serve stop before its handshake line.
func (p *ledgerAdaptorPlugin) GRPCServer(_ *plugin.GRPCBroker, server *grpc.Server) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cfg, err := configFromEnv(lookupEnv)
	if err == nil {
		p.adaptor, err = newAdaptor(cfg, p.log)
	}
	if err != nil {
		p.initErr = err
		p.log.Error("cannot start", "error", err.Error())
		return err
	}
	adaptorv1.RegisterLedgerAdaptorServer(server, p.adaptor)
	p.server = server
	return nil
}

// stopServing stops the gRPC server as go-plugin's Shutdown does, so that plugin.Serve returns
// and cleans up (it removes its socket); false if there is no server yet.
func (p *ledgerAdaptorPlugin) stopServing() bool {
	p.mu.Lock()
	server := p.server
	p.mu.Unlock()
	if server == nil {
		return false
	}
	server.Stop()
	return true
}

// GRPCClient gives a Go host the client side of the service.
func (p *ledgerAdaptorPlugin) GRPCClient(
	_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn,
) (interface{}, error) {
	return adaptorv1.NewLedgerAdaptorClient(conn), nil
}

// close stops the adaptor, if it was built; safe to call more than once and from any goroutine.
func (p *ledgerAdaptorPlugin) close() {
	p.mu.Lock()
	a := p.adaptor
	p.mu.Unlock()
	if a != nil {
		a.close()
	}
}
