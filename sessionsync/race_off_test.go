//go:build !race

package sessionsync

const raceOn = false
