package config

import (
	"errors"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// tableKey maps a Keys path to the decoder's normalized form.
func tableKey(p string) string { return strings.ReplaceAll(p, "[PATH]", "[]") }

// TestKeysMatchDecoder fails when the decoder accepts a key that Keys (and
// so hagent.yaml(5)) does not list, or Keys lists one the decoder does not
// accept. List items of scalars ("monitor[]") are not keys.
func TestKeysMatchDecoder(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := newDecoder("testdata/example.yaml")
	d.parseConfig(data)
	if err := d.errorsOrNil(); err != nil {
		t.Fatal(err)
	}
	code := map[string]bool{}
	for k := range d.known {
		if n := normalizeKey(k); !strings.HasSuffix(n, "[]") {
			code[n] = true
		}
	}
	table := map[string]bool{}
	for _, k := range Keys {
		n := tableKey(k.Path)
		if table[n] {
			t.Errorf("Keys lists %s twice", k.Path)
		}
		table[n] = true
		if k.Type == "" || k.Doc == "" {
			t.Errorf("%s: Type and Doc are required", k.Path)
		}
	}
	for k := range code {
		if !table[k] {
			t.Errorf("the decoder accepts %s, which config.Keys (hagent.yaml(5)) does not list", k)
		}
	}
	for k := range table {
		if !code[k] && !strings.HasSuffix(k, "[]") {
			t.Errorf("config.Keys lists %s, which the decoder does not accept", k)
		}
	}
}

// minimal is the smallest valid file; the probes below set one key in it.
const minimal = "cluster:\n  password_file: /etc/hagent/key\n  hbdev: [{name: ha1}]\n"

// withKey returns minimal with the key at path (list items: the first)
// set to the YAML value val, and the concrete key path.
func withKey(t *testing.T, path string, val any) ([]byte, string) {
	t.Helper()
	var root map[string]any
	if err := yaml.Unmarshal([]byte(minimal), &root); err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(path, ".")
	var m = root
	for i, p := range parts {
		list := strings.HasSuffix(p, "[]")
		p = strings.TrimSuffix(p, "[]")
		if i == len(parts)-1 {
			if _, skip := val.(omitted); !skip {
				m[p] = val
			}
			break
		}
		if list {
			items, _ := m[p].([]any)
			if len(items) == 0 {
				items = []any{listSeed(path)}
				m[p] = items
			}
			m = items[0].(map[string]any)
			continue
		}
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	out, err := yaml.Marshal(root)
	if err != nil {
		t.Fatal(err)
	}
	return out, strings.ReplaceAll(path, "[]", "[0]")
}

// omitted, given to withKey, leaves the key out (the list items on the
// way are still created).
type omitted struct{}

// listSeed is what a list item that withKey creates holds besides the
// probed key, so that the item is valid without it: a health check needs
// a name and exactly one of command, memory and systemd.
func listSeed(path string) map[string]any {
	switch {
	case strings.HasPrefix(path, "cluster.checks[].memory"):
		return map[string]any{"name": "probe"}
	case strings.HasPrefix(path, "cluster.checks[]."):
		return map[string]any{"name": "probe", "command": "true"}
	}
	return map[string]any{}
}

// keyErrors returns the messages of the errors Parse reports for key.
func keyErrors(t *testing.T, data []byte, key string) []string {
	t.Helper()
	_, err := Parse("probe.yaml", data)
	var es Errors
	if err != nil && !errors.As(err, &es) {
		t.Fatalf("Parse: %v", err)
	}
	var out []string
	for _, e := range es {
		if e.Key == key {
			out = append(out, e.Msg)
		} else {
			t.Errorf("probe of %s: unrelated error %v\n%s", key, e, data)
		}
	}
	return out
}

// TestKeysDefaults checks every literal default of Keys: writing it
// explicitly must give the same configuration as leaving the key out.
func TestKeysDefaults(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	n := 0
	for _, k := range Keys {
		if k.Default == "" || strings.HasPrefix(k.Default, "(") {
			continue
		}
		// The base is the same file without the key (with the list item
		// it is in, if any).
		baseData, _ := withKey(t, k.Path, omitted{})
		base, err := Parse("probe.yaml", baseData)
		if err != nil {
			t.Fatalf("%s: %v", k.Path, err)
		}
		var v any
		if err := yaml.Unmarshal([]byte(k.Default), &v); err != nil {
			t.Errorf("%s: default %q is not YAML: %v", k.Path, k.Default, err)
			continue
		}
		data, _ := withKey(t, k.Path, v)
		c, err := Parse("probe.yaml", data)
		if err != nil {
			t.Errorf("%s: default %s is rejected: %v", k.Path, k.Default, err)
			continue
		}
		if !reflect.DeepEqual(c, base) {
			t.Errorf("%s: %s is not the default (the configuration differs when it is written)", k.Path, k.Default)
		}
		n++
	}
	if n < 30 {
		t.Errorf("only %d defaults checked", n)
	}
}

// TestKeysRanges checks every integer and duration range of Keys against
// validation: both ends are accepted, one step past either end is not.
func TestKeysRanges(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	n := 0
	for _, k := range Keys {
		if k.Type != "integer" && k.Type != "duration" {
			continue
		}
		rng := k.Range
		if rest, off := strings.CutPrefix(rng, "0s or "); off && k.Type == "duration" {
			// 0s (off) is accepted beside the range.
			data, key := withKey(t, k.Path, "0s")
			if msgs := keyErrors(t, data, key); len(msgs) > 0 {
				t.Errorf("%s: 0s is documented as accepted (%s) but rejected: %v", k.Path, k.Range, msgs)
			}
			rng = rest
		}
		lo, hi, ok := strings.Cut(rng, "-")
		if !ok {
			t.Errorf("%s: range %q is not LOW-HIGH", k.Path, k.Range)
			continue
		}
		var in, out []any
		if k.Type == "integer" {
			l, err1 := strconv.Atoi(lo)
			h, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				t.Errorf("%s: range %q is not LOW-HIGH", k.Path, k.Range)
				continue
			}
			in, out = []any{l, h}, []any{l - 1, h + 1}
		} else {
			l, err1 := time.ParseDuration(lo)
			h, err2 := time.ParseDuration(hi)
			if err1 != nil || err2 != nil {
				t.Errorf("%s: range %q is not LOW-HIGH", k.Path, k.Range)
				continue
			}
			in = []any{l.String(), h.String()}
			out = []any{(l - 1).String(), (h + 1).String()}
		}
		for _, v := range in {
			data, key := withKey(t, k.Path, v)
			if msgs := keyErrors(t, data, key); len(msgs) > 0 {
				t.Errorf("%s: %v is inside the documented range %s but rejected: %v", k.Path, v, k.Range, msgs)
			}
		}
		for _, v := range out {
			data, key := withKey(t, k.Path, v)
			if msgs := keyErrors(t, data, key); len(msgs) == 0 {
				t.Errorf("%s: %v is outside the documented range %s but accepted", k.Path, v, k.Range)
			}
		}
		n++
	}
	if n < 15 {
		t.Errorf("only %d ranges checked", n)
	}
}
