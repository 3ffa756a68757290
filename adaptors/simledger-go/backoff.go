package main

import "time"

// retryDelay is the pause before retry number attempt (1 for the first retry): doubling
// from initial, capped at limit, with jitter so that many adaptors do not retry in step.
// random is in [0, 1); the delay is between half and all of the capped value (pure).
func retryDelay(attempt int, initial, limit time.Duration, random float64) time.Duration {
	delay := initial
	for i := 1; i < attempt && delay < limit; i++ {
		delay *= 2
	}
	if delay > limit {
		delay = limit
	}
	return delay/2 + time.Duration(random*float64(delay/2))
}
