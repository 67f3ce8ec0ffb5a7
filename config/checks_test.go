package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestSplitCommand(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{in: "test -e /run/x", want: []string{"test", "-e", "/run/x"}},
		{in: `  a  'b c'  "d e" f\ g `, want: []string{"a", "b c", "d e", "f g"}},
		{in: `echo $HOME;rm -rf /`, want: []string{"echo", "$HOME;rm", "-rf", "/"}}, // no expansion, no separators
		{in: `a 'it''s'`, want: []string{"a", "its"}},
		{in: `a ''`, want: []string{"a", ""}},
		{in: `a 'b`, bad: true},
		{in: `a \`, bad: true},
	} {
		got, err := SplitCommand(tc.in)
		if (err != nil) != tc.bad || !tc.bad && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitCommand(%q) = %q, %v; want %q (error %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestChecksValidation(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	for _, tc := range []struct{ yaml, err string }{
		{"checks: [{name: a, command: 'true'}]", ""},
		{"checks: [{name: a, memory: {threshold: 80%}}]", ""},
		{"checks: [{name: a, systemd: nginx.service}]", ""},
		{"checks: [{name: a}]", "exactly one of command, memory and systemd"},
		{"checks: [{name: a, command: 'true', systemd: x}]", "exactly one of"},
		{"checks: [{name: a, command: 'true'}, {name: a, command: 'false'}]", "already checks[0]"},
		{"checks: [{name: 'a b', command: 'true'}]", "made of"},
		{"checks: [{name: a, command: \"x 'y\"}]", "unbalanced"},
		{"checks: [{name: a, memory: {threshold: 100%}}]", "out of range 1-99"},
		{"checks: [{name: a, memory: {threshold: lots}}]", "percentage"},
		{"checks: [{name: a, systemd: ../x}]", "not a unit name"},
		{"checks: [{name: a, systemd: x, shell: true}]", "shell applies to command only"},
	} {
		_, err := Parse("c.yaml", []byte(minimal+"  "+tc.yaml+"\n"))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.yaml, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want %q", tc.yaml, err, tc.err)
		}
	}
	c, err := Parse("c.yaml", []byte(minimal+"  checks: [{name: m, memory: {}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := c.Cluster.Checks[0]
	if !got.Memory || got.MemoryThreshold != DefaultMemoryThreshold || got.Interval != DefaultCheckInterval ||
		got.Timeout != DefaultCheckTimeout || got.Fall != DefaultCheckFall || got.Rise != DefaultCheckRise {
		t.Errorf("defaults: %+v", got)
	}
}
