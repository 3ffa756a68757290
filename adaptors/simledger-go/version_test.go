package main

import "testing"

func TestVersionsOfferSkipsEntriesThatAreNotNumbers(t *testing.T) {
	for _, c := range []struct {
		offered string
		want    bool
	}{
		{"", true}, {"1", true}, {"1,2", true}, {" 2, 1", true}, {"1,,x, 2", true},
		{"x", true}, {",", true}, {"+1", true}, // no usable entry: as if absent
		{"2", false}, {"2,x", false}, {"2,+1", false}, {"99999999999999999999999", true},
	} {
		if got := versionsOffer(c.offered, 1); got != c.want {
			t.Errorf("versionsOffer(%q, 1) = %v, want %v", c.offered, got, c.want)
		}
	}
}
