//go:build race

package sessionsync

// raceOn: the race detector slows the tests about tenfold.
const raceOn = true
