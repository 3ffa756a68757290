package main

import (
	"errors"
	"fmt"
	"regexp"

	typesv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/types/v1"
)

// The checks of request fields (pure). Each error names the field and says what is wrong; the
// handlers answer it with INVALID_ARGUMENT.

var (
	// A host account id (adaptor.proto, SetupAccountRequest).
	accountIDPattern = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,128}$`)
	// A simulated-ledger account id (simledger's own rule; ':' allowed).
	ledgerAccountPattern = regexp.MustCompile(`^[A-Za-z0-9._~:-]{1,128}$`)
	// An Amount value (types.proto): base 10, no sign, no leading zeros, at most 78 digits.
	amountValuePattern = regexp.MustCompile(`^(0|[1-9][0-9]{0,77})$`)
	// Printable ASCII, as idempotency keys and ledger transfer ids are.
	printablePattern = regexp.MustCompile(`^[\x20-\x7e]+$`)
)

const (
	maxKeyLength          = 128
	maxSettlementIDLength = 512
	// maxDataBytes is the data limit of an ILP packet, which carries adaptor messages.
	maxDataBytes = 32767
)

func checkAccountID(id string) error {
	if id == "" {
		return errors.New("account_id is empty")
	}
	if !accountIDPattern.MatchString(id) {
		return fmt.Errorf("account_id %q: must be 1 to 128 of [A-Za-z0-9._~-]", clip(id))
	}
	return nil
}

func checkLedgerAccount(id string) error {
	if !ledgerAccountPattern.MatchString(id) {
		return fmt.Errorf("ledger account %q: must be 1 to 128 of [A-Za-z0-9._~:-]", clip(id))
	}
	return nil
}

func checkIdempotencyKey(key string) error {
	if key == "" {
		return errors.New("idempotency_key is empty")
	}
	if len(key) > maxKeyLength {
		return fmt.Errorf("idempotency_key is %d bytes long: at most %d", len(key), maxKeyLength)
	}
	if !printablePattern.MatchString(key) {
		return fmt.Errorf("idempotency_key %q: only printable ASCII is allowed", clip(key))
	}
	return nil
}

func checkSettlementID(id string) error {
	if id == "" {
		return errors.New("settlement_id is empty")
	}
	if len(id) > maxSettlementIDLength || !printablePattern.MatchString(id) {
		return fmt.Errorf("settlement_id %q: must be 1 to %d printable ASCII characters",
			clip(id), maxSettlementIDLength)
	}
	return nil
}

// checkPayment checks an amount to pay: well-formed, above zero, at the ledger's scale.
func checkPayment(amount *typesv1.Amount, ledgerScale uint32) error {
	if amount == nil {
		return errors.New("amount is required")
	}
	if !amountValuePattern.MatchString(amount.GetValue()) {
		return fmt.Errorf("amount.value %q: must be a base-10 integer of at most 78 digits, "+
			"no sign, no leading zeros", clip(amount.GetValue()))
	}
	if amount.GetValue() == "0" {
		return errors.New("amount.value is 0: a settlement must be greater than zero")
	}
	if amount.GetScale() != ledgerScale {
		return fmt.Errorf("amount.scale is %d: the ledger counts at scale %d (convert first)",
			amount.GetScale(), ledgerScale)
	}
	return nil
}

// clip shortens what goes into an error message: a request field can be long.
func clip(s string) string {
	const limit = 80
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}
