package config

import (
	"fmt"
	"reflect"
	"strings"
)

// ReloadClass is what a running agent does with a changed key on reload
// (Key.Reload).
type ReloadClass string

const (
	// ReloadLive: the new value is applied at once.
	ReloadLive ReloadClass = "live"
	// ReloadRestart: the agent keeps running with the value it has and
	// reports the key as waiting for a restart.
	ReloadRestart ReloadClass = "restart"
	// ReloadPerKey: a mapping of fixed keys; each key inside it has its
	// own class.
	ReloadPerKey ReloadClass = "per key"
)

// ReloadKeys returns the keys a reload compares, in table order: every key
// of Keys of class live or restart that is not inside a list item or a
// free mapping ([] or [PATH] in its path). A list or a free mapping is
// compared whole; the keys inside it have its class (TestKeysReloadClass),
// and every field of Config is reached by exactly one of these keys
// (TestReloadKeysCoverConfig).
func ReloadKeys() []Key {
	var out []Key
	for _, k := range Keys {
		if k.Reload != ReloadPerKey && !strings.Contains(k.Path, "[") {
			out = append(out, k)
		}
	}
	return out
}

// KeyField returns the field of c that holds the key at path, a path of
// ReloadKeys; it can be set. Each dotted part names a field by the same
// letters ignoring case and underscores (hb_interval: HBInterval), or for
// a list with a plural s (hbdev: HBDevs).
func KeyField(c *Config, path string) (reflect.Value, error) {
	v := reflect.ValueOf(c).Elem()
	for _, part := range strings.Split(path, ".") {
		f, ok := fieldOf(v, part)
		if !ok {
			return reflect.Value{}, fmt.Errorf("config: key %s: %s has no field for %q", path, v.Type(), part)
		}
		v = f
	}
	return v, nil
}

// fieldOf returns the field of the struct v named after the key part.
func fieldOf(v reflect.Value, part string) (reflect.Value, bool) {
	if v.Kind() != reflect.Struct {
		return reflect.Value{}, false
	}
	name := strings.ReplaceAll(part, "_", "")
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if strings.EqualFold(f.Name, name) || (f.Type.Kind() == reflect.Slice && strings.EqualFold(f.Name, name+"s")) {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// KeepRunning compares next with running key by key (ReloadKeys) and sets
// every key of class restart whose value differs back to its running value
// in next. It returns those keys in table order: they wait for a restart.
// Keys of class live keep next's value; any other class counts as restart
// (a key without one, which TestKeysReloadClass rules out, is not applied
// live by mistake). A key that cannot be resolved (which
// TestReloadKeysCoverConfig rules out) is returned too.
func KeepRunning(running, next *Config) []string {
	var pending []string
	for _, k := range ReloadKeys() {
		if k.Reload == ReloadLive {
			continue
		}
		r, err1 := KeyField(running, k.Path)
		n, err2 := KeyField(next, k.Path)
		if err1 != nil || err2 != nil {
			pending = append(pending, k.Path)
			continue
		}
		if !sameValue(r, n) {
			n.Set(r)
			pending = append(pending, k.Path)
		}
	}
	return pending
}

// sameValue reports whether two values of one key are equal. An absent and
// an empty list or mapping are the same: a cluster section decoded from
// the primary may hold either.
func sameValue(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !sameValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		for it := a.MapRange(); it.Next(); {
			w := b.MapIndex(it.Key())
			if !w.IsValid() || !sameValue(it.Value(), w) {
				return false
			}
		}
		return true
	case reflect.Struct:
		if a.Type().Comparable() {
			return a.Equal(b)
		}
		for i := range a.NumField() {
			if !sameValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	}
	return a.Equal(b)
}
