package udplink

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
)

// Datagram sources of a FuzzRecv program (the selector byte modulo 3).
const (
	fuzzFromPeer      = iota // the peer's Link.Send (its bound port)
	fuzzFromStranger         // an address that is not a peer
	fuzzFromPeerOther        // the peer's address, another port (accepted: peers are addresses)
	fuzzSources
)

// fuzzRecvBuf is the receiver's buffer: smaller than the largest datagram
// of a program, so truncation is part of what is fuzzed.
const fuzzRecvBuf = 1024

// FuzzRecv fuzzes the receive side of a Link: a program of datagrams,
// each from the peer, from a stranger or from the peer's address on
// another port, with fuzzed contents and sizes (0 to 2047 bytes), goes
// over loopback to a Link; then the Link is read until an end marker
// from the peer. Every datagram from a peer address comes out once, in
// order, byte for byte (cut to the buffer), from the peer's stand-in MAC;
// no stranger's datagram ever does, and each one is counted once (Foreign
// and OnForeign). What comes out is then decoded as a heartbeat, as the
// agent's receiver does; nothing may panic.
func FuzzRecv(f *testing.F) {
	// Seeds: selector, 2-byte length, then that many bytes of content
	// (padded with the selector byte when the program runs out).
	f.Add([]byte{fuzzFromPeer, 0, 5, 'h', 'e', 'l', 'l', 'o'})                         // one datagram from the peer
	f.Add([]byte{fuzzFromStranger, 0, 6, 'f', 'o', 'r', 'g', 'e', 'd'})                // one from a stranger: dropped
	f.Add([]byte{fuzzFromPeer, 0, 0, fuzzFromStranger, 0, 0, fuzzFromPeerOther, 0, 0}) // empty datagrams from each
	f.Add([]byte{fuzzFromPeer, 0x07, 0xff, 'H', 'A', 1, 0})                            // 2047 bytes: cut to the buffer
	codec := heartbeat.NewCodec([]byte("fuzz-password"), 10)
	frame, err := codec.Append(nil, &heartbeat.Frame{GroupID: 10, VCluster: 1, Role: 2, Serial: "SN-a", Node: "a", Epoch: 1, Seq: 1})
	if err != nil {
		f.Fatal(err)
	}
	seed := []byte{fuzzFromPeer, 0, byte(len(frame))}
	f.Add(append(append(seed, frame...), fuzzFromStranger, 0, byte(len(frame)))) // a heartbeat, then a stranger's copy

	var foreign atomic.Uint64
	a, b := pair(f, func(netip.AddrPort) { foreign.Add(1) })
	stranger, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3)}, net.UDPAddrFromAddrPort(b.LocalAddr()))
	if err != nil {
		f.Fatal(err)
	}
	defer stranger.Close()
	other, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, net.UDPAddrFromAddrPort(b.LocalAddr()))
	if err != nil {
		f.Fatal(err)
	}
	defer other.Close()
	buf := make([]byte, fuzzRecvBuf)
	marker := []byte("end-of-program-0")
	var round uint64

	f.Fuzz(func(t *testing.T, prog []byte) {
		round++
		binary.BigEndian.PutUint64(marker[len(marker)-8:], round)
		var want [][]byte
		strangers := 0
		for n := 0; n < 32 && len(prog) >= 3; n++ {
			src, size := prog[0]%fuzzSources, int(binary.BigEndian.Uint16(prog[1:3]))%2048
			prog = prog[3:]
			d := bytes.Repeat([]byte{byte(src)}, size)
			prog = prog[copy(d, prog):]
			var err error
			switch src {
			case fuzzFromPeer:
				err = a.Send(d)
				want = append(want, d)
			case fuzzFromStranger:
				_, err = stranger.Write(d)
				strangers++
			case fuzzFromPeerOther:
				_, err = other.Write(d)
				want = append(want, d)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		before, beforeCB := b.Foreign(), foreign.Load()
		if err := a.Send(marker); err != nil {
			t.Fatal(err)
		}
		if err := b.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		var fr heartbeat.Frame
		for i := 0; ; i++ {
			n, from, err := b.Recv(buf)
			if err != nil {
				t.Fatalf("datagram %d: %v (lost on loopback?)", i, err)
			}
			if !bytes.Equal(from, HardwareAddr(netip.MustParseAddr("127.0.0.1"))) {
				t.Fatalf("datagram %d from %v, not the peer", i, from)
			}
			_ = codec.Decode(buf[:n], &fr)
			if i == len(want) {
				if !bytes.Equal(buf[:n], marker) {
					t.Fatalf("after the %d datagrams of the peer: %q, want the end marker", i, buf[:n])
				}
				break
			}
			if w := want[i][:min(len(want[i]), len(buf))]; !bytes.Equal(buf[:n], w) {
				t.Fatalf("datagram %d: %d bytes %q, want %d bytes %q", i, n, buf[:min(n, 32)], len(w), w[:min(len(w), 32)])
			}
		}
		// Everything sent before the marker has been read: every
		// stranger's datagram was counted, none returned.
		if got, cb := b.Foreign()-before, foreign.Load()-beforeCB; got != uint64(strangers) || cb != got {
			t.Fatalf("%d foreign datagrams counted (OnForeign %d) during the read, %d sent", got, cb, strangers)
		}
	})
}
