package main

import "golang.org/x/sys/unix"

// peerPid is the pid of the process at the other end of the unix socket fd
// (SO_PEERCRED: the listener's, for a connecting client); 0 if unknown.
func peerPid(fd uintptr) int {
	cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0
	}
	return int(cred.Pid)
}
