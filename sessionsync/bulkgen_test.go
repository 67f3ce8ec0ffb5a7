package sessionsync

import "testing"

// TestSupersededBulkEnd: a sender that lost this peer and found it again
// begins a new copy while the old copy's goroutine still sends its end;
// that end, arriving inside the new copy, neither breaks it nor counts,
// and the new copy completes.
func TestSupersededBulkEnd(t *testing.T) {
	r := newReceiver(t, nil)
	r.send(t, "node-a", &Message{Kind: KindBulkBegin, Gen: 1})
	r.send(t, "node-a", &Message{Kind: KindBulkBegin, Gen: 2})
	r.send(t, "node-a", &Message{Kind: KindBulkEnd, Gen: 1})
	if r.e.BulkDone() {
		t.Fatal("the end of the superseded copy counted as complete")
	}
	r.send(t, "node-a", &Message{Kind: KindBulk, Gen: 2, Records: []Record{upsert(flowN(ProtoTCP, 1))}})
	r.send(t, "node-a", &Message{Kind: KindBulkEnd, Gen: 2, Count: 1})
	if n, _ := r.table.Count(); n != 1 || !r.e.BulkDone() {
		t.Fatalf("%d flows, bulk done %v: the copy in progress did not complete", n, r.e.BulkDone())
	}
}
