// Package paths names the places on disk that hagentd and agentctl agree
// on by default: the configuration file, the state and runtime directories
// (systemd's StateDirectory=hagent and RuntimeDirectory=hagent) and the
// control socket. It imports nothing, so agentctl can name them without
// linking the daemon (TestAgentctlDoesNotLinkTheDaemon in cmd/agentctl).
package paths

const (
	// Config is the configuration file hagentd reads unless -c says
	// otherwise.
	Config = "/etc/hagent/hagent.yaml"
	// StateDir keeps what must survive reboots: the heartbeat epoch and
	// the sync generation.
	StateDir = "/var/lib/hagent"
	// RunDir keeps runtime-only state (the interfaces' permanent MACs, the
	// run-directory lock) and the control socket; it is cleared at boot.
	RunDir = "/run/hagent"
	// Socket is where hagentd listens unless control_socket says
	// otherwise, and where agentctl connects unless -s or HAGENT_SOCKET
	// say otherwise.
	Socket = RunDir + "/hagent.sock"
)
