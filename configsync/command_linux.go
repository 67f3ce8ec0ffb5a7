package configsync

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts the command in its own process group and makes the
// context cancellation kill the whole group, so a timed-out on_change
// command leaves no children behind.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
