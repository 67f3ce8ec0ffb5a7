package l2chan

// replayWindow rejects reused and too-old nonce counters of one sender
// epoch, tolerating reordering within replayWindowBits.
type replayWindow struct {
	max  uint64 // highest accepted counter (0 = none yet)
	bits [replayWindowBits / 64]uint64
}

const replayWindowBits = 1024

// check reports whether counter n would be accepted; it does not record it.
func (w *replayWindow) check(n uint64) bool {
	if n == 0 {
		return false
	}
	if n > w.max {
		return true
	}
	if w.max-n >= replayWindowBits {
		return false
	}
	i := n % replayWindowBits
	return w.bits[i/64]&(1<<(i%64)) == 0
}

// mark records counter n, which check accepted.
func (w *replayWindow) mark(n uint64) {
	if n > w.max {
		if n-w.max >= replayWindowBits {
			w.bits = [replayWindowBits / 64]uint64{}
		} else {
			for c := w.max + 1; c < n; c++ {
				i := c % replayWindowBits
				w.bits[i/64] &^= 1 << (i % 64)
			}
		}
		w.max = n
	}
	i := n % replayWindowBits
	w.bits[i/64] |= 1 << (i % 64)
}
