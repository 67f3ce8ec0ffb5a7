package cluster

import (
	"fmt"
	"testing"
	"time"
)

// TestMemberLimitPerMode: active-passive refuses a fifth member exactly as
// before (ErrClusterFull, also with MaxMembers unset), mode fgsp accepts
// members up to the 16th and refuses the 17th, and a limit above
// MaxMembers is cut to it.
func TestMemberLimitPerMode(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit int // Config.MaxMembers
		want  int // members formed, this node included
	}{
		{"a-p, unset", 0, 4},
		{"a-p", MaxMembersFGCP, 4},
		{"fgsp", MaxMembersFGSP, 16},
		{"above the largest", 100, MaxMembers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := labConfig()
			cfg.Name, cfg.Serial, cfg.MaxMembers = "a", "S-00", tc.limit
			m := New(cfg, t0)
			adv := func(i int) Event {
				s := fmt.Sprintf("S-%02d", i)
				return Event{Type: EventHeartbeat, Time: t0, Advert: Advert{Name: s, Serial: s, Role: RoleSecondary}}
			}
			for i := 1; i < tc.want; i++ {
				if err := m.Step(adv(i)); err != nil {
					t.Fatalf("member %d: %v", i+1, err)
				}
			}
			if err := m.Step(adv(tc.want)); err != ErrClusterFull {
				t.Fatalf("member %d: %v, want ErrClusterFull", tc.want+1, err)
			}
			if n := len(m.Status().Members); n != tc.want {
				t.Fatalf("%d members, want %d", n, tc.want)
			}
			// A known member is still heard, and the limit survives a
			// reload that leaves it out.
			if err := m.Step(adv(1)); err != nil {
				t.Fatalf("known member: %v", err)
			}
			cfg.MaxMembers = MaxMembers
			m.UpdateConfig(cfg, t0)
			if err := m.Step(adv(tc.want)); err != ErrClusterFull {
				t.Fatalf("after a reload: %v, want ErrClusterFull", err)
			}
		})
	}
}

// TestSixteenMembersElectOne: 16 members (mode fgsp's limit) elect one
// primary that every member names, and elect the next one when it fails.
func TestSixteenMembersElectOne(t *testing.T) {
	const members = 16
	base := labConfig()
	base.MaxMembers = MaxMembersFGSP
	var specs []nodeSpec
	for i := range members {
		specs = append(specs, nodeSpec{name: fmt.Sprintf("n%02d", i), priority: uint8(200 - i)})
	}
	s := newSim(t, base, specs...)
	s.run(5 * time.Second)
	s.checkSingle("n00")
	for _, name := range s.order {
		if n := len(s.nodes[name].m.Status().Members); n != members {
			t.Fatalf("%s knows %d members, want %d", name, n, members)
		}
	}
	s.kill("n00")
	s.run(5 * time.Second)
	s.checkSingle("n01")
}
