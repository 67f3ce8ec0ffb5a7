package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse checks that Parse never panics, and that whatever it accepts
// survives a MarshalCluster / ParseCluster round trip unchanged.
// Seeds: testdata/example.yaml, every testdata/bad file, and the corpus in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/bad/*.yaml")
	seeds = append(seeds, "testdata/example.yaml")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(base))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			es, ok := err.(*Errors)
			if !ok || len(*es) == 0 {
				t.Fatalf("error is %T with %v", err, err)
			}
			return
		}
		// Anything Parse accepts must marshal and read back unchanged.
		out, err := MarshalCluster(c.Cluster)
		if err != nil {
			t.Fatalf("MarshalCluster of a valid cluster: %v", err)
		}
		back, err := ParseCluster("synced", out)
		if err != nil {
			t.Fatalf("ParseCluster of MarshalCluster output:\n%v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, c.Cluster) {
			t.Fatalf("round trip changed the cluster:\n got %+v\nwant %+v\n%s", back, c.Cluster, out)
		}
		again, err := MarshalCluster(back)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("marshal is not stable: %v\n%s\nvs\n%s", err, again, out)
		}
	})
}
