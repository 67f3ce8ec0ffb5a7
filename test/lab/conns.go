package lab

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// connHealth is what a load (TCPLoad, TCPStream) keeps of one client
// connection: the longest gap in its traffic and how it failed.
type connHealth struct {
	c       net.Conn
	maxGap  atomic.Int64 // ns
	reset   atomic.Bool  // ECONNRESET or EPIPE
	errMsg  atomic.Value // string: the first error
	stopped atomic.Bool  // closed by Stop: errors from now on are ours
}

// fail records err unless the load is stopping.
func (h *connHealth) fail(err error) {
	if h.stopped.Load() {
		return
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		h.reset.Store(true)
	}
	if h.errMsg.Load() == nil {
		h.errMsg.Store(err.Error())
	}
}

// connSet is a load's server listener, stop signal and goroutines.
type connSet struct {
	ln   net.Listener
	stop chan struct{}
	wg   sync.WaitGroup
}

// close stops the load (idempotent): marks conns stopped, closes the
// listener and every connection, and waits for the goroutines.
func (s *connSet) close(conns []*connHealth) {
	select {
	case <-s.stop:
		return
	default:
	}
	for _, h := range conns {
		h.stopped.Store(true)
	}
	close(s.stop)
	if s.ln != nil {
		s.ln.Close()
	}
	for _, h := range conns {
		h.c.Close()
	}
	s.wg.Wait()
}

// resetStalls forgets the gaps seen so far (to measure one failover).
func resetStalls(conns []*connHealth) {
	for _, h := range conns {
		h.maxGap.Store(0)
	}
}
