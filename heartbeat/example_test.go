package heartbeat_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/hagent/hagent/heartbeat"
)

// Two nodes exchange one authenticated heartbeat over an in-memory hbdev;
// the receiver verifies it and drops the copy that arrives on a second
// hbdev as a duplicate.
func Example() {
	password := []byte("s3cret")
	const group = 10
	net := heartbeat.NewMemNetwork()
	aLinks := []heartbeat.Link{net.Link("ha1", "node-a", "ha1"), net.Link("ha2", "node-a", "ha2")}
	bLinks := []heartbeat.Link{net.Link("ha1", "node-b", "ha1"), net.Link("ha2", "node-b", "ha2")}

	// Sender: one frame, the same bytes on every hbdev.
	tx := heartbeat.NewCodec(password, group)
	f := heartbeat.Frame{
		GroupID: group, VCluster: 1, Role: 3, Priority: 200,
		Epoch: uint64(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()), Seq: 1,
		Node: "node-a", Serial: "A0001", Primary: "node-a",
	}
	wire, err := tx.Append(make([]byte, 0, heartbeat.MaxFrameLen), &f)
	if err != nil {
		panic(err)
	}
	for _, l := range aLinks {
		_ = l.Send(wire)
	}

	// Receiver: authenticate, then check for replays.
	rx := heartbeat.NewCodec(password, group)
	var guard heartbeat.ReplayGuard
	buf := make([]byte, 1500)
	for _, l := range bLinks {
		n, _, err := l.Recv(buf)
		if err != nil {
			panic(err)
		}
		var got heartbeat.Frame
		if err := rx.Decode(buf[:n], &got); err != nil {
			fmt.Println(l.Name(), "dropped:", err)
			continue
		}
		switch err := guard.Check(got.Serial, got.Epoch, got.Seq); {
		case err == nil:
			fmt.Printf("%s: %s is %d, thinks %q is primary\n", l.Name(), got.Node, got.Role, got.Primary)
		case errors.Is(err, heartbeat.ErrDuplicate):
			fmt.Printf("%s: duplicate of seq %d\n", l.Name(), got.Seq)
		default:
			fmt.Println(l.Name(), "dropped:", err)
		}
	}
	// Output:
	// ha1: node-a is 3, thinks "node-a" is primary
	// ha2: duplicate of seq 1
}
