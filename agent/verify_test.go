package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/sessionsync"
)

// TestAgentSessionsVerify: `ha sessions verify` on the secondary of an
// in-memory pair says in sync once its copy is in, and names a flow whose
// mark was changed behind the engine's back; on the primary it says
// there is nobody to compare with. Fails without the command (unknown
// command) or the comparison.
func TestAgentSessionsVerify(t *testing.T) {
	a, b := startSessPair(t)
	for i := 0; i < 50; i++ {
		a.table.Put(testFlow(i))
	}
	verify := func(n *sessNode) ([]sessionsync.VerifyResult, string, error) {
		v, err := n.a.Handle(control.Request{Cmd: control.CmdSessionsVerify})
		if err != nil {
			return nil, "", err
		}
		rs := v.([]sessionsync.VerifyResult)
		var out strings.Builder
		control.FormatVerify(&out, rs, 0)
		return rs, out.String(), nil
	}
	waitFor(t, 10*time.Second, func() error {
		if n, _ := b.table.Count(); n != 50 {
			return fmt.Errorf("b has %d flows", n)
		}
		_, out, err := verify(b)
		if err != nil {
			return err
		}
		if out != "verify: in sync (50 flows compared)\n" {
			return fmt.Errorf("verify: %q", out)
		}
		return nil
	})
	f := testFlow(7)
	f.Mark = 0x42
	b.table.Put(f)          // a secondary ignores its table's events: nothing repairs it
	time.Sleep(time.Second) // a's bound between two verifies it answers
	rs, out, err := verify(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(out)
	if len(rs) != 1 || rs[0].Peer != "a" || rs[0].Differing != 1 ||
		!strings.Contains(out, "differs: "+f.String()) || !strings.Contains(out, "mark: here 00000042, on a 00000000") {
		t.Fatalf("verify after a changed mark: %+v\n%s", rs, out)
	}
	if _, _, err := verify(a); err == nil || !strings.Contains(err.Error(), "no primary to compare with") {
		t.Fatalf("verify on the primary: %v", err)
	}
	if st := b.status(t); st.Sessions == nil || len(st.Sessions.Verify) != 1 {
		t.Fatalf("status: the last verify not kept: %+v", st.Sessions)
	}
}
