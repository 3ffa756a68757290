// Command simledger-go is a ledger adaptor for the simulated ledger (python -m host.simledger),
// served with HashiCorp go-plugin's plugin.Serve. The host starts it; it refuses to run by hand.
//
// go-plugin owns the process contract: the magic cookie, version negotiation, the listener, the
// handshake line, health ("plugin" SERVING), reflection, plugin.GRPCController (Shutdown),
// plugin.GRPCStdio and the broker. This program adds the LedgerAdaptor service (adaptor.go and
// its companions), SIGTERM handling and a watch on its parent, which go-plugin leaves to it.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

// handshake is the contract of docs/protocol.md: contract version 1 and the host's cookie.
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "ILP_SETTLEMENT_ADAPTOR",
	MagicCookieValue: "5c1d7e0a9b3f4e2c8a6d1f0b7e9c3a5d",
}

func main() {
	// hclog JSON to the process's real stderr, as go-plugin's own default logger does. Taken
	// now: plugin.Serve later points os.Stderr at the GRPCStdio pipe.
	log := hclog.New(&hclog.LoggerOptions{
		Name:       adaptorName(),
		Level:      hclog.Info,
		Output:     os.Stderr,
		JSONFormat: true,
	})
	ledgerPlugin := &ledgerAdaptorPlugin{log: log}

	// go-plugin falls back to its own version when none of the host's is common; the contract
	// (docs/protocol.md, section 3) asks for a refusal instead, so check before Serve. A wrong
	// cookie is left to Serve, which explains it.
	if os.Getenv(handshake.MagicCookieKey) == handshake.MagicCookieValue && !offersVersion(1) {
		fmt.Fprintf(os.Stderr, "simledger-go speaks contract version %d; the host offered %s=%q\n",
			handshake.ProtocolVersion, "PLUGIN_PROTOCOL_VERSIONS", os.Getenv("PLUGIN_PROTOCOL_VERSIONS"))
		os.Exit(1)
	}

	// Subscribed before Serve: go-plugin starts ignoring SIGINT only after its handshake line,
	// and a signal that arrives before anyone listens ends the process instead.
	interrupts := make(chan os.Signal, 1)
	signal.Notify(interrupts, os.Interrupt)
	terms := make(chan os.Signal, 1)
	signal.Notify(terms, syscall.SIGTERM)
	go stopOnSignalOrOrphan(log, ledgerPlugin, terms)

	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         plugin.PluginSet{"ledger_adaptor": ledgerPlugin},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          log,
	})

	// Serve returns after Shutdown stopped the gRPC server, or when setting up failed (the
	// cookie check exits inside Serve).
	if ledgerPlugin.initErr != nil {
		os.Exit(1)
	}
	ledgerPlugin.close()
	log.Info("stopped")
	os.Exit(0)
}

// offersVersion reports whether PLUGIN_PROTOCOL_VERSIONS lists v. Entries that are not
// base-10 numbers are skipped, and a variable with none (or absent) offers every version: the
// adaptor then uses its own (docs/protocol.md, section 2).
func offersVersion(v int) bool {
	return versionsOffer(os.Getenv("PLUGIN_PROTOCOL_VERSIONS"), v)
}

func versionsOffer(offered string, v int) bool {
	usable := false
	for _, item := range strings.Split(offered, ",") {
		item = strings.TrimSpace(item)
		if item == "" || strings.Trim(item, "0123456789") != "" {
			continue
		}
		n, err := strconv.Atoi(item)
		if err != nil {
			continue // too large to be a version
		}
		if n == v {
			return true
		}
		usable = true
	}
	return !usable
}

func adaptorName() string {
	if name := os.Getenv("ILP_ADAPTOR_NAME"); name != "" {
		return name
	}
	return "simledger-go"
}

// stopOnSignalOrOrphan stops the adaptor on SIGTERM (go-plugin handles only SIGINT, which it
// ignores) and when the parent process goes away (the host died). It stops the gRPC server as
// go-plugin's Shutdown does, so main ends the usual way; exiting here is the fallback.
func stopOnSignalOrOrphan(log hclog.Logger, p *ledgerAdaptorPlugin, terms <-chan os.Signal) {
	parent := os.Getppid()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-terms:
			log.Info("SIGTERM: stopping")
		case <-tick.C:
			if os.Getppid() == parent {
				continue
			}
			log.Warn("the host process is gone: stopping", "parent_pid", parent)
		}
		if p.stopServing() {
			time.Sleep(stopFallback) // main exits meanwhile
			log.Warn("the server did not stop in time: exiting", "after", stopFallback.String())
		}
		// Every state change is on disk before it is acknowledged: leaving now loses nothing.
		p.close()
		os.Exit(0)
	}
}

const stopFallback = 5 * time.Second
