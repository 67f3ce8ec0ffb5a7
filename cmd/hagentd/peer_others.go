//go:build !linux

package main

// peerPid is 0 (unknown): peer credentials are read on Linux only.
func peerPid(fd uintptr) int { return 0 }
