package config

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// parentKey returns the nearest key of Keys that holds path (the list or
// mapping it is in), or "" at the top level.
func parentKey(path string) string {
	for {
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return ""
		}
		path = path[:i]
		for _, k := range Keys {
			if k.Path == path {
				return path
			}
		}
	}
}

// TestKeysReloadClass fails when a key of Keys has no reload class, so a
// key added to the table without saying whether a reload applies it
// cannot go unnoticed; and when the classes do not nest: per key is for
// mappings of fixed keys only, and a key inside a list or a mapping that
// is not per key has the class of that list or mapping (it is compared
// with it, whole).
func TestKeysReloadClass(t *testing.T) {
	class := map[string]ReloadClass{}
	for _, k := range Keys {
		class[k.Path] = k.Reload
	}
	for _, k := range Keys {
		switch k.Reload {
		case ReloadLive, ReloadRestart:
		case ReloadPerKey:
			inside := false
			for _, c := range Keys {
				inside = inside || strings.HasPrefix(c.Path, k.Path+".")
			}
			if k.Type != "mapping" || !inside {
				t.Errorf("%s is %q but no mapping of keys listed in Keys", k.Path, k.Reload)
			}
		default:
			t.Errorf("%s: reload class %q; say whether a reload applies it (ReloadLive) or it waits for a restart (ReloadRestart)", k.Path, k.Reload)
			continue
		}
		p := parentKey(k.Path)
		if p == "" {
			continue
		}
		if pc := class[p]; pc != ReloadPerKey && pc != k.Reload {
			t.Errorf("%s is %q inside %s, which is %q and compared whole", k.Path, k.Reload, p, pc)
		}
	}
}

// TestReloadKeysCoverConfig fails when a key that reload compares has no
// field in Config, when two keys reach the same field, or when a field of
// Config (but Path, which is not a key) is reached by no key: then
// agent.Reload would never compare it.
func TestReloadKeysCoverConfig(t *testing.T) {
	var c Config
	base := reflect.ValueOf(&c).Elem()
	// A struct and its first field share an address: a field is its
	// address and its type.
	type field struct {
		at uintptr
		t  reflect.Type
	}
	reached := map[field]string{}
	for _, k := range ReloadKeys() {
		f, err := KeyField(&c, k.Path)
		if err != nil {
			t.Error(err)
			continue
		}
		at := field{f.Addr().Pointer(), f.Type()}
		if o, ok := reached[at]; ok {
			t.Errorf("%s and %s reach the same field", o, k.Path)
		}
		reached[at] = k.Path
	}
	var walk func(v reflect.Value, name string)
	walk = func(v reflect.Value, name string) {
		for i := range v.NumField() {
			f, fn := v.Field(i), name+"."+v.Type().Field(i).Name
			if fn == "Config.Path" {
				continue
			}
			if _, ok := reached[field{f.Addr().Pointer(), f.Type()}]; ok {
				continue
			}
			if f.Kind() != reflect.Struct {
				t.Errorf("field %s is reached by no key of config.ReloadKeys", fn)
				continue
			}
			walk(f, fn)
		}
	}
	walk(base, "Config")
	if len(reached) < 60 {
		t.Errorf("only %d keys compared", len(reached))
	}
}

// TestKeepRunningEmptyLists: an absent and an empty list or mapping are the
// same value, so a section decoded from the primary with monitor: [] does
// not make a running agent ask for a restart; a changed item does.
func TestKeepRunningEmptyLists(t *testing.T) {
	running := Default()
	next := running
	next.Cluster.Monitor = []string{}
	next.Cluster.Sync.OnChange = map[string]string{}
	next.Cluster.Interfaces = []Interface{}
	if p := KeepRunning(&running, &next); len(p) != 0 {
		t.Errorf("empty for absent: %v waits for a restart", p)
	}
	running.Cluster.Interfaces = []Interface{{Name: "port1", Addresses: []netip.Prefix{netip.MustParsePrefix("10.9.0.100/24")}}}
	next = running
	next.Cluster.Interfaces = []Interface{{Name: "port1", Addresses: []netip.Prefix{netip.MustParsePrefix("10.9.0.101/24")}}}
	if p := KeepRunning(&running, &next); !slices.Equal(p, []string{"cluster.interfaces"}) {
		t.Errorf("a changed cluster address: %v waits for a restart, want [cluster.interfaces]", p)
	}
	if got := next.Cluster.Interfaces[0].Addresses[0].String(); got != "10.9.0.100/24" {
		t.Errorf("next holds %s, want the running 10.9.0.100/24", got)
	}
}
