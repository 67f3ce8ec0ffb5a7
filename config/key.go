package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// MinKeyLen is the shortest key accepted in cluster.password_file, in
// bytes once trailing CR/LF are trimmed: 16 bytes of the base64 the key
// command below writes carry 96 bits. Shorter keys are refused
// (TestKeyFileRules/short).
const MinKeyLen = 16

// The consequences of a weak setup, printed by hagentd --check and logged
// at start-up, so the two say the same.
const (
	// NoAuthNote says what cluster.auth: false means.
	NoAuthNote = "cluster.auth is false: heartbeats are not authenticated; anyone on a heartbeat segment " +
		"can forge a member, win the election and take the cluster addresses " +
		"(config sync and session pickup still use the key in password_file)"
	// KeyNote says what the key is worth.
	KeyNote = "the key in cluster.password_file is root on every member: whoever holds it can push " +
		"files under sync.paths, hook commands and connection-tracking entries; keep it on the members only"
)

// keyCommand returns the shell command that writes a good key to path.
func keyCommand(path string) string {
	return fmt.Sprintf("(umask 077; head -c 32 /dev/urandom | base64 > %s)", path)
}

// KeyInUse reports whether this cluster section reads its key file:
// heartbeat authentication (auth), config sync or session pickup.
func (c *Cluster) KeyInUse() bool {
	return c.Auth || c.Sync.Enabled || c.SessionPickup.Enabled
}

// Password returns the heartbeat authentication password: the key in
// PasswordFile (see ChannelKey for the rules it must meet), or nil, nil
// when Auth is false.
func (c *Cluster) Password() ([]byte, error) {
	if !c.Auth {
		return nil, nil
	}
	return c.ChannelKey()
}

// ChannelKey returns the key of the config sync and session pickup
// channels: the content of PasswordFile without its trailing CR/LF. Unlike
// Password it does not depend on Auth: cluster.auth: false turns off
// heartbeat authentication only, and these channels never run without a
// key (TestChannelKeyWithoutAuth). It fails when PasswordFile is not set
// and when the file breaks a rule of readKey.
func (c *Cluster) ChannelKey() ([]byte, error) {
	if c.PasswordFile == "" {
		return nil, errors.New("cluster.password_file is not set: config sync and session pickup do not run without a key")
	}
	return readKey(c.PasswordFile)
}

// readKey reads a key file the way ssh reads a private key. The file is
// opened with O_NOFOLLOW (a symbolic link as the last component is
// refused, not followed) and O_NONBLOCK (a FIFO cannot block the open),
// and the rules are checked on the open descriptor (fstat), so what is
// checked is what is read:
//   - a regular file;
//   - owned by root, or by the effective uid of the process when that is
//     not root (an agent run by a user in a test or a lab);
//   - no permission bit for group or others (mode & 0077 == 0);
//   - at most MaxPasswordFileSize bytes, and at least MinKeyLen once its
//     trailing CR/LF are trimmed.
//
// TestKeyFileRules proves each rule.
func readKey(path string) ([]byte, error) {
	f, err := openNoFollow(path)
	if err != nil {
		if isSymlinkErr(err, path) {
			return nil, fmt.Errorf("%s is a symbolic link; point password_file at the key file itself", path)
		}
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if uid, ok := fileOwner(fi); ok && uid != 0 && uid != os.Geteuid() {
		return nil, fmt.Errorf("%s is owned by uid %d; the key must be owned by root (chown root: %s)", path, uid, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o: group or others can read or write the key; like an ssh private key it must be private (chmod 600 %s)", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxPasswordFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxPasswordFileSize {
		return nil, fmt.Errorf("password file %s is larger than %d bytes", path, MaxPasswordFileSize)
	}
	b = bytes.TrimRight(b, "\r\n")
	switch {
	case len(b) == 0:
		return nil, fmt.Errorf("password file %s is empty; make a key with: %s", path, keyCommand(path))
	case len(b) < MinKeyLen:
		return nil, fmt.Errorf("password file %s holds %d bytes, fewer than %d; make a good key with: %s", path, len(b), MinKeyLen, keyCommand(path))
	}
	return b, nil
}

// isSymlinkErr reports whether err from an O_NOFOLLOW open of path means
// that path is a symbolic link (ELOOP), checked with Lstat so that a real
// loop in a directory component is reported as itself.
func isSymlinkErr(err error, path string) bool {
	if !errors.Is(err, errLoop) {
		return false
	}
	fi, lerr := os.Lstat(filepath.Clean(path))
	return lerr == nil && fi.Mode()&os.ModeSymlink != 0
}
