// Package control is hagentd's operator interface: a unix socket (mode 0600)
// speaking one JSON request and one JSON response per connection, and the
// types of what travels on it (the status object, docs/reference.md §3;
// history,
// checksums, exposure). agentctl is its client.
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hagent/hagent/internal/paths"
)

// DefaultSocket is where hagentd listens unless control_socket says otherwise.
const DefaultSocket = paths.Socket

// Commands understood by the server.
const (
	CmdStatus         = "status"
	CmdFailoverSet    = "failover-set"
	CmdFailoverUnset  = "failover-unset"
	CmdFailoverStatus = "failover-status"
	CmdHistory        = "history"
	CmdSynchronize    = "synchronize"
	CmdChecksum       = "checksum"
	CmdExposure       = "exposure"
	CmdSessions       = "sessions"
	// CmdSessionsVerify compares this member's session table with its
	// primary's (`ha sessions verify`): []sessionsync.VerifyResult.
	CmdSessionsVerify = "sessions-verify"
)

// Request is one operator command.
type Request struct {
	Cmd string `json:"cmd"`
	// VCluster selects the virtual cluster of the ha failover commands
	// (1 or 2); 0 is the node's first (its only one on a single-vcluster
	// node).
	VCluster int `json:"vcluster,omitempty"`
}

// Response carries the result of a Request: Error, or the command's data.
type Response struct {
	Error string          `json:"error,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// Handler answers one request. It is called from the connection's goroutine.
type Handler func(Request) (any, error)

// Server serves a Handler on a unix socket.
type Server struct {
	path string
	ln   net.Listener
	h    Handler
}

// Listen creates the socket at path with mode 0600 (its directory 0700 if
// it has to be made). A stale socket left by a dead agent is replaced; a
// socket that still answers is an error (another agent runs).
func Listen(path string, h Handler) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another hagentd is running", path)
	}
	_ = os.Remove(path)
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &Server{path: path, ln: ln, h: h}, nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Serve accepts connections until Close.
func (s *Server) Serve() error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go s.serve(c)
	}
}

func (s *Server) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	s.answer(c, c)
}

// maxRequest bounds what is read of a request: a request is a few dozen
// bytes of JSON; nothing past the bound is read (FuzzAnswer).
const maxRequest = 64 << 10

// answer reads one request from r, calls the handler if it decodes, and
// writes one response to w. Malformed input is answered with an error and
// never reaches the handler.
func (s *Server) answer(r io.Reader, w io.Writer) {
	var req Request
	if err := json.NewDecoder(io.LimitReader(r, maxRequest)).Decode(&req); err != nil {
		_ = json.NewEncoder(w).Encode(Response{Error: "bad request: " + err.Error()})
		return
	}
	var resp Response
	data, err := s.h(req)
	if err != nil {
		resp.Error = err.Error()
	} else if data != nil {
		raw, err := json.Marshal(data)
		if err != nil {
			resp.Error = err.Error()
		}
		resp.Data = raw
	}
	_ = json.NewEncoder(w).Encode(resp)
}

// Close stops the server and removes the socket.
func (s *Server) Close() error {
	err := s.ln.Close()
	_ = os.Remove(s.path)
	return err
}

// ErrNotRunning means nothing listens on the socket.
var ErrNotRunning = errors.New("hagentd is not running")

// Call sends one request to the agent at path and decodes the reply's data
// into out (if non-nil).
func Call(path string, cmd string, out any, timeout time.Duration) error {
	return Do(path, Request{Cmd: cmd}, out, timeout)
}

// Do is Call with a whole Request.
func Do(path string, req Request, out any, timeout time.Duration) error {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (no agent on %s)", ErrNotRunning, path)
		}
		return fmt.Errorf("cannot reach hagentd on %s: %w", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return err
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return fmt.Errorf("reading hagentd's answer: %w", err)
	}
	if resp.Error != "" {
		return errors.New(resp.Error)
	}
	if out != nil && len(resp.Data) > 0 {
		return json.Unmarshal(resp.Data, out)
	}
	return nil
}
