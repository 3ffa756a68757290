package main

import (
	adaptorv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/adaptor/v1"
)

// The fan-out of live events to the open WatchEvents streams. The adaptor calls every method
// with its lock held, the same lock as its state: a stream that takes its re-delivery snapshot
// and subscribes under that lock misses nothing that happens after.

// subscriberBacklog is how many events a stream may fall behind before it is ended (the host
// reopens it, and the reopened stream re-delivers every unacknowledged settlement).
const subscriberBacklog = 1024

type subscriber struct {
	events chan *adaptorv1.WatchEventsResponse
	// lagged is closed when the subscriber fell too far behind and was dropped.
	lagged chan struct{}
}

type eventHub struct {
	subscribers map[*subscriber]struct{}
}

func (h *eventHub) subscribe() *subscriber {
	if h.subscribers == nil {
		h.subscribers = map[*subscriber]struct{}{}
	}
	s := &subscriber{
		events: make(chan *adaptorv1.WatchEventsResponse, subscriberBacklog),
		lagged: make(chan struct{}),
	}
	h.subscribers[s] = struct{}{}
	return s
}

func (h *eventHub) unsubscribe(s *subscriber) {
	delete(h.subscribers, s)
}

// publish hands the event to every subscriber without blocking; one that is full is dropped.
func (h *eventHub) publish(event *adaptorv1.WatchEventsResponse) {
	for s := range h.subscribers {
		select {
		case s.events <- event:
		default:
			close(s.lagged)
			delete(h.subscribers, s)
		}
	}
}

func incomingEvent(record *incomingRecord) *adaptorv1.WatchEventsResponse {
	return &adaptorv1.WatchEventsResponse{Event: &adaptorv1.WatchEventsResponse_IncomingSettlement{
		IncomingSettlement: &adaptorv1.IncomingSettlement{
			SettlementId: record.TransferID,
			AccountId:    record.AccountID,
			Amount:       amountOf(record.Value, record.Scale),
		},
	}}
}

func connectionEvent(c connection) *adaptorv1.WatchEventsResponse {
	return &adaptorv1.WatchEventsResponse{Event: &adaptorv1.WatchEventsResponse_ConnectionChanged{
		ConnectionChanged: c.proto(),
	}}
}
