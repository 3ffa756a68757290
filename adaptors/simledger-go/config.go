package main

import (
	"fmt"
	"os"
	"strings"
)

// config is what the operator and the host tell the adaptor, through environment variables.
type config struct {
	// ledgerAddr is the simulated ledger's gRPC target: "unix:/path" or "host:port".
	ledgerAddr string
	// ledgerAccount is this side's account on the ledger (created at start).
	ledgerAccount string
	// statePath is the adaptor's own state file.
	statePath string
	// engineAddr is the host's Engine service; empty when the host runs no engine.
	engineAddr string
}

const (
	envLedgerAddr    = "ILP_SIMLEDGER_ADDR"
	envLedgerAccount = "ILP_SIMLEDGER_ACCOUNT"
	envStatePath     = "ILP_ADAPTOR_STATE_DB"
	envEngineAddr    = "ILP_HOST_ENGINE_ADDR"
)

func lookupEnv(key string) string { return os.Getenv(key) }

// configFromEnv reads and checks the variables; the error names the variable and the problem.
func configFromEnv(getenv func(string) string) (config, error) {
	cfg := config{
		ledgerAddr:    getenv(envLedgerAddr),
		ledgerAccount: getenv(envLedgerAccount),
		statePath:     getenv(envStatePath),
		engineAddr:    getenv(envEngineAddr),
	}
	if cfg.ledgerAddr == "" {
		return cfg, fmt.Errorf("%s is not set: give the ledger's gRPC target, e.g. unix:/run/simledger.sock", envLedgerAddr)
	}
	if strings.ContainsAny(cfg.ledgerAddr, " \t\r\n") {
		return cfg, fmt.Errorf("%s=%q: a gRPC target has no white space", envLedgerAddr, cfg.ledgerAddr)
	}
	if cfg.ledgerAccount == "" {
		return cfg, fmt.Errorf("%s is not set: give this side's ledger account", envLedgerAccount)
	}
	if err := checkLedgerAccount(cfg.ledgerAccount); err != nil {
		return cfg, fmt.Errorf("%s: %w", envLedgerAccount, err)
	}
	if cfg.statePath == "" {
		return cfg, fmt.Errorf("%s is not set: give the path of the adaptor's state file", envStatePath)
	}
	return cfg, nil
}
