package vmac

import (
	"bytes"
	"testing"
)

func TestMAC(t *testing.T) {
	tests := []struct {
		name           string
		group, vc, idx int
		want           string
		wantErr        bool
	}{
		{name: "spec example vc1", group: 10, vc: 1, idx: 3, want: "00:09:0f:09:0a:03"},
		{name: "spec example vc2", group: 10, vc: 2, idx: 3, want: "00:09:0f:09:0a:23"},
		{name: "group 0", group: 0, vc: 1, idx: 0, want: "00:09:0f:09:00:00"},
		{name: "group 255 idx 15", group: 255, vc: 1, idx: 15, want: "00:09:0f:09:ff:0f"},
		{name: "group 255 vc2 idx 15", group: 255, vc: 2, idx: 15, want: "00:09:0f:09:ff:2f"},
		{name: "spec example group 300", group: 300, vc: 1, idx: 0, want: "e0:23:ff:fc:2c:00"},
		{name: "group 256", group: 256, vc: 2, idx: 1, want: "e0:23:ff:fc:00:21"},
		{name: "group 511", group: 511, vc: 1, idx: 9, want: "e0:23:ff:fc:ff:09"},
		{name: "group 512", group: 512, vc: 1, idx: 10, want: "e0:23:ff:fd:00:0a"},
		{name: "group 767 vc2", group: 767, vc: 2, idx: 11, want: "e0:23:ff:fd:ff:2b"},
		{name: "group 768", group: 768, vc: 1, idx: 0, want: "e0:23:ff:fe:00:00"},
		{name: "group 1023 vc2 idx 15", group: 1023, vc: 2, idx: 15, want: "e0:23:ff:fe:ff:2f"},
		{name: "idx 16", group: 10, vc: 1, idx: 16, wantErr: true},
		{name: "idx -1", group: 10, vc: 1, idx: -1, wantErr: true},
		{name: "group 1024", group: 1024, vc: 1, idx: 0, wantErr: true},
		{name: "group -1", group: -1, vc: 1, idx: 0, wantErr: true},
		{name: "vc 3", group: 10, vc: 3, idx: 0, wantErr: true},
		{name: "vc 0", group: 10, vc: 0, idx: 0, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MAC(tt.group, tt.vc, tt.idx)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("MAC(%d, %d, %d) = %v, want error", tt.group, tt.vc, tt.idx, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("MAC(%d, %d, %d): %v", tt.group, tt.vc, tt.idx, err)
			}
			if got.String() != tt.want {
				t.Errorf("MAC(%d, %d, %d) = %v, want %s", tt.group, tt.vc, tt.idx, got, tt.want)
			}
			if got[0]&1 != 0 {
				t.Errorf("MAC %v is multicast", got)
			}
		})
	}
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		// Zero-padded so that sorted order is numeric order.
		out[n-1-i] = "port" + string(rune('a'+i/10)) + string(rune('0'+i%10))
	}
	return out
}

func TestAssign(t *testing.T) {
	tests := []struct {
		name    string
		names   []string
		group   int
		vc      int
		want    map[string]string
		wantErr bool
	}{
		{
			name:  "sorted by name, not by order given",
			names: []string{"port3", "port1", "port2"},
			group: 10, vc: 1,
			want: map[string]string{"port1": "00:09:0f:09:0a:00", "port2": "00:09:0f:09:0a:01", "port3": "00:09:0f:09:0a:02"},
		},
		{
			name:  "vcluster 2",
			names: []string{"wan", "lan"},
			group: 600, vc: 2,
			want: map[string]string{"lan": "e0:23:ff:fd:58:20", "wan": "e0:23:ff:fd:58:21"},
		},
		{name: "16 interfaces ok", names: names(16), group: 1, vc: 1},
		{name: "17 interfaces", names: names(17), group: 1, vc: 1, wantErr: true},
		{name: "duplicate", names: []string{"a", "b", "a"}, group: 1, vc: 1, wantErr: true},
		{name: "empty name", names: []string{""}, group: 1, vc: 1, wantErr: true},
		{name: "bad group", names: []string{"a"}, group: 1024, vc: 1, wantErr: true},
		{name: "bad vcluster", names: []string{"a"}, group: 1, vc: 3, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Assign(tt.names, tt.group, tt.vc)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Assign = %v, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.names) {
				t.Fatalf("Assign returned %d MACs for %d names", len(got), len(tt.names))
			}
			for name, want := range tt.want {
				if got[name].String() != want {
					t.Errorf("%s: got %v, want %s", name, got[name], want)
				}
			}
			seen := map[string]bool{}
			for name, mac := range got {
				if seen[mac.String()] {
					t.Errorf("%s: MAC %v assigned twice", name, mac)
				}
				seen[mac.String()] = true
			}
		})
	}
}

func TestAssignLastIndex(t *testing.T) {
	ns := names(16)
	got, err := Assign(ns, 10, 2)
	if err != nil {
		t.Fatal(err)
	}
	// names(16) lists the names in reverse sorted order, so ns[0] sorts last.
	want, _ := MAC(10, 2, 15)
	if got[ns[0]].String() != want.String() {
		t.Errorf("last name got %v, want %v", got[ns[0]], want)
	}
	first, _ := MAC(10, 2, 0)
	if !bytes.Equal(got[ns[15]], first) {
		t.Errorf("first name got %v, want %v", got[ns[15]], first)
	}
}
