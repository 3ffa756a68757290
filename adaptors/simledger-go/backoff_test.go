package main

import (
	"testing"
	"time"
)

func TestRetryDelayDoublesToItsCapWithJitter(t *testing.T) {
	initial, limit := 100*time.Millisecond, 2*time.Second
	cases := []struct {
		attempt int
		full    time.Duration
	}{
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{5, 1600 * time.Millisecond},
		{6, 2 * time.Second},
		{100, 2 * time.Second},
	}
	for _, c := range cases {
		low := retryDelay(c.attempt, initial, limit, 0)
		high := retryDelay(c.attempt, initial, limit, 0.999999)
		if low != c.full/2 || high > c.full || high < c.full*99/100 {
			t.Errorf("attempt %d: delays [%v, %v], want [%v, %v]", c.attempt, low, high, c.full/2, c.full)
		}
	}
}
