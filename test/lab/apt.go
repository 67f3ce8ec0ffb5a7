package lab

import (
	"fmt"
	"os"
	"os/exec"
)

// AptInstall installs Debian packages with apt-get (no recommends, no
// prompts), running apt-get update first only when the install fails (a
// fresh machine has no package lists).
func AptInstall(pkgs ...string) error {
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("%v are not installed and apt-get is not available", pkgs)
	}
	install := func() ([]byte, error) {
		cmd := exec.Command("apt-get", append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	if _, err := install(); err == nil {
		return nil
	}
	if out, err := exec.Command("apt-get", "update").CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get update: %v: %s", err, lastLines(string(out), 5))
	}
	if out, err := install(); err != nil {
		return fmt.Errorf("apt-get install %v: %v: %s", pkgs, err, lastLines(string(out), 5))
	}
	return nil
}
