package agent

import (
	"context"
	"errors"
	"time"

	"github.com/hagent/hagent/sessionsync"
)

// sessionsVerifyTimeout bounds `ha sessions verify` (agentctl waits 10 s
// by default; a primary of a large table may take longer: --timeout).
const sessionsVerifyTimeout = 25 * time.Second

// sessionsVerify answers `ha sessions verify`: this member's table
// compared with its primary's (sessionsync/verify.go). Safe in any
// goroutine: it does not wait for the run loop (TestAgentSessionsVerify).
func (a *Agent) sessionsVerify() ([]sessionsync.VerifyResult, error) {
	if a.sess == nil {
		return nil, errors.New("session pickup is disabled")
	}
	ctx, cancel := context.WithTimeout(context.Background(), sessionsVerifyTimeout)
	defer cancel()
	return a.sess.e.Verify(ctx)
}
