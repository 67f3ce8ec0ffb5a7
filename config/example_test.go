package config_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/hagent/hagent/config"
)

func ExampleLoad() {
	dir, err := os.MkdirTemp("", "hagent-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("correct horse battery staple\n"), 0o600); err != nil {
		fmt.Println(err)
		return
	}
	file := filepath.Join(dir, "hagent.yaml")
	yaml := `node:
  name: node-a
  priority: 200
cluster:
  group_id: 10
  password_file: ` + key + `
  hbdev: [{name: ha1, priority: 40}, {name: ha2, priority: 50}]
  interfaces:
    - {name: port1, addresses: [10.9.0.100/24]}
`
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		fmt.Println(err)
		return
	}

	c, err := config.Load(file)
	if err != nil {
		fmt.Println(err) // every problem, one per line: FILE:LINE: KEY: MSG
		return
	}
	pw, _ := c.Cluster.Password()
	fmt.Println("node:", c.Node.Name, "priority", c.Node.Priority)
	fmt.Println("group:", c.Cluster.GroupID, "hb_interval", c.Cluster.HBInterval)
	fmt.Printf("heartbeat ethertype: %#04x\n", c.Cluster.HeartbeatEtherType())
	fmt.Println("sync channel prefers:", c.Cluster.HBDevsByPriority()[0].Name)
	fmt.Println("password bytes:", len(pw))
	// Output:
	// node: node-a priority 200
	// group: 10 hb_interval 200ms
	// heartbeat ethertype: 0x8890
	// sync channel prefers: ha2
	// password bytes: 28
}

func ExampleParse() {
	_, err := config.Parse("hagent.yaml", []byte(`node:
  name: node-a
cluster:
  password_file: /etc/hagent/key
  hbdev: [{name: ha1, priority: 300}]
  hb_interval: 200
  hb_intervall: 1s
`))
	fmt.Println(err)
	// Output:
	// hagent.yaml:5: cluster.hbdev[0].priority: 300 is out of range 0-255
	// hagent.yaml:6: cluster.hb_interval: want a duration such as "200ms", got "200"
	// hagent.yaml:7: cluster.hb_intervall: unknown key (did you mean hb_interval?)
}

func ExampleMarshalCluster() {
	c := config.DefaultCluster()
	c.GroupID = 10
	c.PasswordFile = "/etc/hagent/key"
	c.HBDevs = []config.HBDev{{Name: "ha1", Priority: 50}}
	out, err := config.MarshalCluster(c)
	if err != nil {
		fmt.Println(err)
		return
	}
	// The primary sends these bytes; a secondary reads them back.
	back, err := config.ParseCluster("from-primary", out)
	fmt.Println(err == nil, back.HBDevs[0].Name, back.HBInterval)
	// Output:
	// true ha1 200ms
}
