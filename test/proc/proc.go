// Package proc reads what the benchmarks and the chaos campaign measure of
// a process from /proc: its resident memory, its CPU time, and the
// processes of a given executable and command line.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ClkTck is USER_HZ, the unit of utime and stime in /proc/PID/stat (and so
// of CPUTicks); it is 100 on every Linux architecture Go supports.
const ClkTck = 100

// FindPIDs returns the processes whose executable's base name is exe and
// whose command line contains every one of args.
func FindPIDs(exe string, args ...string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		argv := strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00")
		if filepath.Base(argv[0]) != exe {
			continue
		}
		all := strings.Join(argv, " ")
		ok := true
		for _, a := range args {
			if !strings.Contains(all, a) {
				ok = false
			}
		}
		if ok {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// RSSKB returns VmRSS of the process in kB.
func RSSKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

// CPUTicks returns utime+stime of the process (all its threads) in clock
// ticks (1/100 s).
func CPUTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatTicks(string(b))
}

// parseStatTicks reads fields 14 and 15 (utime, stime) of a stat line;
// the command name in parentheses may contain spaces.
func parseStatTicks(s string) (int64, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	u, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return 0, err
	}
	st, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		return 0, err
	}
	return u + st, nil
}
