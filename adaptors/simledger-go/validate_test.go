package main

import (
	"strings"
	"testing"

	typesv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/types/v1"
)

func TestAccountIDs(t *testing.T) {
	for _, good := range []string{"a", "peer-bob", "A.b_c~d-9", strings.Repeat("x", 128)} {
		if err := checkAccountID(good); err != nil {
			t.Errorf("checkAccountID(%q) = %v, want nil", good, err)
		}
	}
	for _, bad := range []string{"", "peer bob", "peer:bob", "é", strings.Repeat("x", 129)} {
		if err := checkAccountID(bad); err == nil {
			t.Errorf("checkAccountID(%q) = nil, want an error", bad)
		}
	}
	if err := checkLedgerAccount("bank:alice"); err != nil {
		t.Errorf("a ledger account may hold ':': %v", err)
	}
}

func TestIdempotencyKeys(t *testing.T) {
	for _, good := range []string{"k", "settle 1", "~!@#", strings.Repeat("k", 128)} {
		if err := checkIdempotencyKey(good); err != nil {
			t.Errorf("checkIdempotencyKey(%q) = %v, want nil", good, err)
		}
	}
	for _, bad := range []string{"", "tab\tkey", "new\nline", "ü", strings.Repeat("k", 129)} {
		if err := checkIdempotencyKey(bad); err == nil {
			t.Errorf("checkIdempotencyKey(%q) = nil, want an error", bad)
		}
	}
}

func TestPaymentAmounts(t *testing.T) {
	max78 := strings.Repeat("9", 78)
	for _, good := range []string{"1", "1500", max78} {
		if err := checkPayment(&typesv1.Amount{Value: good, Scale: 2}, 2); err != nil {
			t.Errorf("checkPayment(%q) = %v, want nil", good, err)
		}
	}
	bad := map[string]*typesv1.Amount{
		"missing":       nil,
		"zero":          {Value: "0", Scale: 2},
		"empty":         {Value: "", Scale: 2},
		"negative":      {Value: "-1", Scale: 2},
		"plus sign":     {Value: "+1", Scale: 2},
		"leading zero":  {Value: "01", Scale: 2},
		"fraction":      {Value: "1.5", Scale: 2},
		"exponent":      {Value: "1e3", Scale: 2},
		"space":         {Value: " 1", Scale: 2},
		"79 digits":     {Value: max78 + "9", Scale: 2},
		"another scale": {Value: "1", Scale: 3},
	}
	for name, amount := range bad {
		if err := checkPayment(amount, 2); err == nil {
			t.Errorf("%s: checkPayment(%v) = nil, want an error", name, amount)
		}
	}
}

func TestSettlementIDs(t *testing.T) {
	if err := checkSettlementID("ledger-bob:key 1"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "a\x00b", strings.Repeat("s", 513)} {
		if err := checkSettlementID(bad); err == nil {
			t.Errorf("checkSettlementID(%q) = nil, want an error", bad)
		}
	}
}
