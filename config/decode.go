package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize is the largest configuration file Load reads.
const MaxFileSize = 1 << 20

// maxErrors bounds how many errors one parse reports.
const maxErrors = 100

// List length limits not covered by exported constants.
const (
	maxAddresses   = 64
	maxMonitor     = 64
	maxPingIfaces  = 64
	maxPingTargets = 64
	maxSyncPaths   = 256
	maxIgnore      = 256
)

// Load reads, parses, defaults and validates the configuration file at
// path. It also checks the key file in cluster.password_file when the key
// is in use (the rules of ChannelKey: a private regular file of root,
// at least MinKeyLen bytes). On failure the error is an *Errors holding
// every problem found.
func Load(path string) (*Config, error) {
	return load(path, nil)
}

// Local names the node's own directories, which hagentd knows from its
// flags and the configuration file does not.
type Local struct {
	// StateDir is hagentd's persistent state (--state-dir).
	StateDir string
	// RunDir is hagentd's runtime state (--run-dir).
	RunDir string
}

// LoadLocal is Load plus the checks that need the node's own paths: no
// cluster.sync.paths entry may be, contain or lie inside the
// configuration file, the key file, the state directory or the runtime
// directory, or a peer could rewrite this node's configuration, key or
// state (TestSyncPathsCoverLocal). hagentd uses it for --check, at start
// and on reload.
func LoadLocal(path string, l Local) (*Config, error) {
	return load(path, &l)
}

func load(path string, l *Local) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, &Errors{{File: path, Msg: err.Error()}}
	}
	d := newDecoder(path)
	c := d.parseConfig(data)
	if c != nil {
		d.checkPasswordFile(&c.Cluster)
		if l != nil {
			d.checkLocalPaths(c, path, *l)
		}
	}
	return d.result(c)
}

// Parse parses, defaults and validates a configuration held in data; path
// only names it in errors and in Config.Path. Unlike Load it does not look
// at the password file. On failure the error is an *Errors.
func Parse(path string, data []byte) (*Config, error) {
	d := newDecoder(path)
	return d.result(d.parseConfig(data))
}

// ParseCluster parses, defaults and validates a cluster section on its own,
// as MarshalCluster writes it (the keys found under cluster: in a file).
// name only names the data in errors; key paths start with "cluster.".
// On failure the error is an *Errors.
func ParseCluster(name string, data []byte) (Cluster, error) {
	d := newDecoder(name)
	c := DefaultCluster()
	root := d.document(data)
	if root == nil {
		return Cluster{}, d.errorsOrNil()
	}
	if r := resolve(root); r == nil || r.Kind != yaml.MappingNode {
		d.errAt(posOf(root), "", "want a mapping of cluster keys, got %s", describe(root))
		return Cluster{}, d.errorsOrNil()
	}
	d.lines["cluster"] = posOf(root)
	d.cluster("cluster", root, &c)
	d.validateCluster("cluster", &c)
	if err := d.errorsOrNil(); err != nil {
		return Cluster{}, err
	}
	return c, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, unwrapPath(err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("file is larger than %d bytes", MaxFileSize)
	}
	return data, nil
}

// unwrapPath drops the path from an *fs.PathError, which Error already
// prints in front of the message.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// decoder walks a yaml.Node tree against the schema, collecting errors and
// the line of every key it meets.
type decoder struct {
	file   string
	errs   []*placedError
	lines  map[string]pos  // key path → place of the key (or list item)
	bad    map[string]bool // key paths whose value did not decode
	known  map[string]bool // every schema key path offered (for tests)
	syntax bool            // the YAML did not parse
}

func newDecoder(file string) *decoder {
	return &decoder{
		file:  file,
		lines: map[string]pos{},
		bad:   map[string]bool{},
		known: map[string]bool{},
	}
}

func (d *decoder) result(c *Config) (*Config, error) {
	if err := d.errorsOrNil(); err != nil {
		return nil, err
	}
	return c, nil
}

// errorsOrNil returns the errors sorted by place as an *Errors, or a nil
// error (never a typed nil).
func (d *decoder) errorsOrNil() error {
	if len(d.errs) == 0 {
		return nil
	}
	sort.SliceStable(d.errs, func(i, j int) bool {
		a, b := d.errs[i], d.errs[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.col < b.col
	})
	es := make(Errors, 0, min(len(d.errs), maxErrors+1))
	for _, e := range d.errs {
		if len(es) == maxErrors {
			es = append(es, &Error{File: d.file, Line: e.Line,
				Msg: fmt.Sprintf("too many errors; only the first %d are shown", maxErrors)})
			break
		}
		es = append(es, &e.Error)
	}
	return &es
}

// placedError is an error with the column it was found at, to order
// errors found on one line.
type placedError struct {
	Error
	col int
}

// errAt records an error at an explicit place.
func (d *decoder) errAt(at pos, key, format string, args ...any) {
	if len(d.errs) > 2*maxErrors {
		return
	}
	d.errs = append(d.errs, &placedError{Error{File: d.file, Line: at.line, Key: key, Msg: fmt.Sprintf(format, args...)}, at.col})
}

// errorf records a validation error about key, at the line of the key or
// of its nearest present ancestor. It is dropped when the key or one of
// its ancestors already failed to decode, so one mistake gives one error.
func (d *decoder) errorf(key, format string, args ...any) {
	if !d.isBad(key) {
		d.errAt(d.lineOf(key), key, format, args...)
	}
}

// isBad reports whether key or one of its ancestors failed to decode.
func (d *decoder) isBad(key string) bool {
	for p := key; p != ""; p = parentPath(p) {
		if d.bad[p] {
			return true
		}
	}
	return false
}

// lineOf returns the line of key, or of its nearest ancestor that was
// present in the input, or 1.
func (d *decoder) lineOf(key string) pos {
	for p := key; p != ""; p = parentPath(p) {
		if at, ok := d.lines[p]; ok {
			return at
		}
	}
	return pos{line: 1}
}

// pos is a place in the input; col orders errors on one line.
type pos struct{ line, col int }

func posOf(n *yaml.Node) pos { return pos{n.Line, n.Column} }

// parentPath strips the last ".key" or "[index]" from a key path.
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func indexKey(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

var (
	yamlLineRE      = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	unknownAnchorRE = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)
)

// document parses data into the root node of its single YAML document.
// It returns nil after recording an error when the YAML is malformed, and
// an empty mapping node for an empty document.
func (d *decoder) document(data []byte) (root *yaml.Node) {
	defer func() {
		// The YAML library is not supposed to panic, but a configuration
		// parser must never take the daemon down.
		if r := recover(); r != nil {
			d.syntax = true
			d.errAt(pos{}, "", "cannot parse YAML: %v", r)
			root = nil
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: 1, Column: 1}
		}
		d.syntaxError(err, data)
		return nil
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		d.syntax = true
		d.errAt(posOf(&next), "", "more than one YAML document; want one")
		return nil
	} else if !errors.Is(err, io.EOF) {
		d.syntaxError(err, data)
		return nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: 1, Column: 1}
	}
	return doc.Content[0]
}

func (d *decoder) syntaxError(err error, data []byte) {
	d.syntax = true
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if isParserProblem(m[2]) {
			// yaml.v3 reports parser (not scanner) problems with a
			// 0-based line: that of the construct being parsed.
			line++
		}
		d.errAt(pos{line: line}, "", "%s", m[2])
		return
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	if isParserProblem(msg) {
		line = 1 // yaml.v3 leaves out "line 0"
	} else if strings.Contains(msg, "UTF-8") {
		for i := 0; i < len(data); {
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size <= 1 {
				line = 1 + bytes.Count(data[:i], []byte("\n"))
				break
			}
			i += size
		}
	} else if m := unknownAnchorRE.FindStringSubmatch(msg); m != nil {
		if i := bytes.Index(data, []byte("*"+m[1])); i >= 0 {
			line = 1 + bytes.Count(data[:i], []byte("\n"))
		}
	}
	d.errAt(pos{line: line}, "", "%s", msg)
}

// isParserProblem reports whether msg is one of the YAML parser's (as
// opposed to scanner's) problem texts.
func isParserProblem(msg string) bool {
	for _, p := range []string{"did not find expected ", "found duplicate %", "found incompatible YAML document", "found undefined tag handle"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// parseConfig decodes and validates a whole file. It returns nil only for
// malformed YAML.
func (d *decoder) parseConfig(data []byte) *Config {
	root := d.document(data)
	if root == nil {
		return nil
	}
	c := &Config{
		ControlSocket: DefaultControlSocket,
		LogFormat:     DefaultLogFormat,
		LogLevel:      DefaultLogLevel,
		Node:          Node{Priority: DefaultNodePriority, VCluster2: NodeVCluster{Priority: DefaultNodePriority}, Mgmt: NodeMgmt{Table: DefaultMgmtTable}},
		Cluster:       DefaultCluster(),
		Path:          d.file,
	}
	if r := resolve(root); r == nil || r.Kind != yaml.MappingNode {
		d.errAt(posOf(root), "", "want a mapping of keys at the top level, got %s", describe(root))
		return c
	}
	d.top(root, c)
	if c.Node.Name == "" || c.Node.Serial == "" {
		name, serial := defaultIdentity()
		if c.Node.Name == "" {
			c.Node.Name = name
		}
		if c.Node.Serial == "" {
			c.Node.Serial = serial
		}
	}
	d.validate(c)
	return c
}

// field decodes the value of one key; path is the key's dotted path.
type field func(path string, v *yaml.Node)

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node holds, for type errors.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "null"
		}
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		return strconv.Quote(v)
	}
	return "an unsupported node"
}

// typeErr records that the value at path is not of the wanted kind.
func (d *decoder) typeErr(path string, n *yaml.Node, want string) {
	d.bad[path] = true
	d.errAt(d.lineOf(path), path, "want %s, got %s", want, describe(n))
}

// mapping walks a mapping node, calling the field of each known key.
// Unknown and duplicate keys are errors; null values keep the default.
func (d *decoder) mapping(path string, n *yaml.Node, fields map[string]field) {
	for k := range fields {
		d.known[joinKey(path, k)] = true
	}
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		if n != nil {
			d.typeErr(path, n, "a mapping")
		}
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := resolve(n.Content[i]), resolve(n.Content[i+1])
		if kn == nil || vn == nil {
			continue
		}
		if kn.Kind != yaml.ScalarNode || isNull(kn) {
			d.errAt(posOf(kn), path, "want a key name, got %s", describe(kn))
			continue
		}
		key := joinKey(path, kn.Value)
		if first, dup := seen[kn.Value]; dup {
			d.errAt(posOf(kn), key, "duplicate key (first at line %d)", first)
			continue
		}
		seen[kn.Value] = kn.Line
		f, ok := fields[kn.Value]
		if !ok {
			if kn.Value == "<<" {
				d.errAt(posOf(kn), key, "merge keys are not supported")
			} else if s := suggest(kn.Value, fields); s != "" {
				d.errAt(posOf(kn), key, "unknown key (did you mean %s?)", s)
			} else {
				d.errAt(posOf(kn), key, "unknown key")
			}
			continue
		}
		d.lines[key] = posOf(kn)
		if isNull(vn) {
			continue
		}
		f(key, vn)
	}
}

// suggest returns the known key closest to an unknown one, if close.
func suggest(key string, fields map[string]field) string {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	best, bestDist := "", 3
	for _, k := range names {
		dist := editDistance(norm(key), k)
		if len(key) >= 3 && strings.HasPrefix(k, norm(key)) {
			dist = 1 // an abbreviation
		}
		if dist < bestDist {
			best, bestDist = k, dist
		}
	}
	return best
}

// editDistance is the Levenshtein distance, for short strings.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// seq walks a sequence node of at most max items, calling item for each
// with the item's key path. The line of every item is recorded.
func (d *decoder) seq(path string, n *yaml.Node, max int, what string, item func(path string, v *yaml.Node)) {
	d.known[path+"[]"] = true
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.typeErr(path, n, "a list")
		return
	}
	if len(n.Content) > max {
		d.bad[path] = true
		d.errAt(d.lineOf(path), path, "%d %s; at most %d allowed", len(n.Content), what, max)
		return
	}
	for i, v := range n.Content {
		p := indexKey(path, i)
		d.lines[p] = posOf(v) // where the item (or its alias) is written
		if v = resolve(v); v == nil {
			continue
		}
		item(p, v)
	}
}

// str decodes any non-null scalar as its text.
func (d *decoder) str(path string, n *yaml.Node, out *string) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || isNull(n) {
		d.typeErr(path, n, "a string")
		return
	}
	if !utf8.ValidString(n.Value) {
		d.bad[path] = true
		d.errAt(d.lineOf(path), path, "not valid UTF-8 text")
		return
	}
	if strings.IndexByte(n.Value, 0) >= 0 {
		d.bad[path] = true
		d.errAt(d.lineOf(path), path, "contains a NUL character")
		return
	}
	*out = n.Value
}

func (d *decoder) boolean(path string, n *yaml.Node, out *bool) {
	n = resolve(n)
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		d.typeErr(path, n, "true or false")
		return
	}
	*out = b
}

func (d *decoder) integer(path string, n *yaml.Node, out *int) {
	n = resolve(n)
	var i int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
		d.typeErr(path, n, "an integer")
		return
	}
	*out = int(i)
}

func (d *decoder) duration(path string, n *yaml.Node, out *time.Duration) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		d.typeErr(path, n, `a duration such as "200ms"`)
		return
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		d.typeErr(path, n, `a duration such as "200ms"`)
		return
	}
	*out = v
}

// ethertype accepts a YAML integer (0x8890, 34960) or a string holding one.
func (d *decoder) ethertype(path string, n *yaml.Node, out *uint16) {
	n = resolve(n)
	const want = "an Ethertype such as 0x8890"
	if n.Kind != yaml.ScalarNode {
		d.typeErr(path, n, want)
		return
	}
	var v uint64
	switch n.ShortTag() {
	case "!!int":
		var i int64
		if n.Decode(&i) != nil || i < 0 {
			d.typeErr(path, n, want)
			return
		}
		v = uint64(i)
	case "!!str":
		u, err := strconv.ParseUint(strings.TrimSpace(n.Value), 0, 64)
		if err != nil {
			d.typeErr(path, n, want)
			return
		}
		v = u
	default:
		d.typeErr(path, n, want)
		return
	}
	if v > 0xFFFF {
		d.bad[path] = true
		d.errAt(d.lineOf(path), path, "%#x is out of range 0x0600-0xffff", v)
		return
	}
	*out = uint16(v)
}

// addrList decodes a list of IP addresses (an invalid Addr stands in for
// one that did not parse, so indexes stay aligned).
func (d *decoder) addrList(path string, n *yaml.Node, max int, what, example string, out *[]netip.Addr) {
	var list []netip.Addr
	d.seq(path, n, max, what, func(p string, v *yaml.Node) { list = append(list, d.addr(p, v, example)) })
	*out = list
}

// addr decodes an IP address; the invalid Addr when it is not one.
func (d *decoder) addr(path string, n *yaml.Node, example string) netip.Addr {
	var s string
	d.str(path, n, &s)
	if d.bad[path] {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		d.typeErr(path, n, "an IP address such as "+example)
	}
	return a
}

func (d *decoder) strList(path string, n *yaml.Node, max int, what string, out *[]string) {
	var list []string
	d.seq(path, n, max, what, func(p string, v *yaml.Node) {
		var s string
		d.str(p, v, &s)
		list = append(list, s)
	})
	*out = list
}

func (d *decoder) top(n *yaml.Node, c *Config) {
	d.mapping("", n, map[string]field{
		"control_socket": func(p string, v *yaml.Node) { d.str(p, v, &c.ControlSocket) },
		"log_format":     func(p string, v *yaml.Node) { d.str(p, v, &c.LogFormat) },
		"log_level":      func(p string, v *yaml.Node) { d.str(p, v, &c.LogLevel) },
		"metrics_listen": func(p string, v *yaml.Node) { d.str(p, v, &c.MetricsListen) },
		"node":           func(p string, v *yaml.Node) { d.node(p, v, &c.Node) },
		"cluster":        func(p string, v *yaml.Node) { d.cluster(p, v, &c.Cluster) },
	})
}

func (d *decoder) node(path string, n *yaml.Node, c *Node) {
	d.mapping(path, n, map[string]field{
		"name":     func(p string, v *yaml.Node) { d.str(p, v, &c.Name) },
		"serial":   func(p string, v *yaml.Node) { d.str(p, v, &c.Serial) },
		"priority": func(p string, v *yaml.Node) { d.integer(p, v, &c.Priority) },
		"override": func(p string, v *yaml.Node) { d.boolean(p, v, &c.Override) },
		"realtime": func(p string, v *yaml.Node) { d.boolean(p, v, &c.Realtime) },
		"vcluster2": func(p string, v *yaml.Node) {
			d.mapping(p, v, map[string]field{
				"priority": func(p string, v *yaml.Node) { d.integer(p, v, &c.VCluster2.Priority) },
				"override": func(p string, v *yaml.Node) { d.boolean(p, v, &c.VCluster2.Override) },
			})
		},
		"mgmt": func(p string, v *yaml.Node) {
			m := &c.Mgmt
			d.mapping(p, v, map[string]field{
				"addresses": func(p string, v *yaml.Node) { d.prefixList(p, v, MaxMgmtAddresses, "10.8.0.11/24", &m.Addresses) },
				"gateway":   func(p string, v *yaml.Node) { m.Gateway = d.addr(p, v, "10.8.0.1") },
				"table":     func(p string, v *yaml.Node) { d.integer(p, v, &m.Table) },
			})
		},
	})
}

func (d *decoder) cluster(path string, n *yaml.Node, c *Cluster) {
	dur := func(out *time.Duration) field { return func(p string, v *yaml.Node) { d.duration(p, v, out) } }
	num := func(out *int) field { return func(p string, v *yaml.Node) { d.integer(p, v, out) } }
	deferSet := false // session_pickup.defer's default depends on the mode
	defer func() {
		if !deferSet {
			c.SessionPickup.Defer = DefaultDefer(c.Mode)
		}
	}()
	d.mapping(path, n, map[string]field{
		"group_name":    func(p string, v *yaml.Node) { d.str(p, v, &c.GroupName) },
		"group_id":      num(&c.GroupID),
		"password_file": func(p string, v *yaml.Node) { d.str(p, v, &c.PasswordFile) },
		"auth":          func(p string, v *yaml.Node) { d.boolean(p, v, &c.Auth) },
		"mode":          func(p string, v *yaml.Node) { d.str(p, v, &c.Mode) },
		"vcluster":      num(&c.VCluster),
		"hbdev": func(p string, v *yaml.Node) {
			c.HBDevs = nil
			d.seq(p, v, MaxHBDevs, "hbdevs", func(p string, v *yaml.Node) {
				var h HBDev
				d.mapping(p, v, map[string]field{
					"name":     func(p string, v *yaml.Node) { d.str(p, v, &h.Name) },
					"priority": num(&h.Priority),
					"direct":   func(p string, v *yaml.Node) { d.boolean(p, v, &h.Direct) },
				})
				c.HBDevs = append(c.HBDevs, h)
			})
		},
		"hb_interval":        dur(&c.HBInterval),
		"hb_lost_threshold":  num(&c.HBLostThreshold),
		"hello_holddown":     dur(&c.HelloHolddown),
		"uptime_diff_margin": dur(&c.UptimeDiffMargin),
		"failover_hold_time": dur(&c.FailoverHoldTime),
		"monitor_holddown":   dur(&c.MonitorHolddown),
		"override_wait_time": dur(&c.OverrideWaitTime),
		"link_failed_signal": dur(&c.LinkFailedSignal),
		"carrier_debounce":   dur(&c.CarrierDebounce),
		"eth_type": func(p string, v *yaml.Node) {
			et := func(out *uint16) field { return func(p string, v *yaml.Node) { d.ethertype(p, v, out) } }
			d.mapping(p, v, map[string]field{
				"ha":      et(&c.EthType.HA),
				"hc":      et(&c.EthType.HC),
				"l2ep":    et(&c.EthType.L2EP),
				"session": et(&c.EthType.Session),
			})
		},
		"transparent":    func(p string, v *yaml.Node) { d.boolean(p, v, &c.Transparent) },
		"interfaces":     func(p string, v *yaml.Node) { d.interfaces(p, v, &c.Interfaces) },
		"monitor":        func(p string, v *yaml.Node) { d.strList(p, v, maxMonitor, "monitored interfaces", &c.Monitor) },
		"pingserver":     func(p string, v *yaml.Node) { d.pingserver(p, v, &c.PingServer) },
		"checks":         func(p string, v *yaml.Node) { d.checks(p, v, &c.Checks) },
		"mgmt_interface": func(p string, v *yaml.Node) { d.str(p, v, &c.MgmtInterface) },
		"vcluster2": func(p string, v *yaml.Node) {
			vc := &c.VCluster2
			d.mapping(p, v, map[string]field{
				"enabled":    func(p string, v *yaml.Node) { d.boolean(p, v, &vc.Enabled) },
				"interfaces": func(p string, v *yaml.Node) { d.interfaces(p, v, &vc.Interfaces) },
				"monitor":    func(p string, v *yaml.Node) { d.strList(p, v, maxMonitor, "monitored interfaces", &vc.Monitor) },
				"pingserver": func(p string, v *yaml.Node) { d.pingserver(p, v, &vc.PingServer) },
			})
		},
		"unicast_hb": func(p string, v *yaml.Node) {
			u := &c.UnicastHB
			d.mapping(p, v, map[string]field{
				"enabled": func(p string, v *yaml.Node) { d.boolean(p, v, &u.Enabled) },
				"peers": func(p string, v *yaml.Node) {
					d.addrList(p, v, MaxMembers(ModeFGSP), "peers", "10.99.1.1", &u.Peers)
				},
				"port":         num(&u.Port),
				"sync_port":    num(&u.SyncPort),
				"session_port": num(&u.SessionPort),
				"priority":     num(&u.Priority),
			})
		},
		"arps":          num(&c.ARPs),
		"arps_interval": dur(&c.ARPsInterval),
		"arps_refresh":  dur(&c.ARPsRefresh),
		"sync": func(p string, v *yaml.Node) {
			s := &c.Sync
			d.mapping(p, v, map[string]field{
				"enabled": func(p string, v *yaml.Node) { d.boolean(p, v, &s.Enabled) },
				"paths":   func(p string, v *yaml.Node) { d.strList(p, v, maxSyncPaths, "paths", &s.Paths) },
				"period":  dur(&s.Period),
				"on_change": func(p string, v *yaml.Node) {
					s.OnChange = d.stringMap(p, v, maxSyncPaths)
				},
			})
		},
		"session_pickup": func(p string, v *yaml.Node) {
			sp := &c.SessionPickup
			d.mapping(p, v, map[string]field{
				"enabled":        func(p string, v *yaml.Node) { d.boolean(p, v, &sp.Enabled) },
				"connectionless": func(p string, v *yaml.Node) { d.boolean(p, v, &sp.Connectionless) },
				"expectation":    func(p string, v *yaml.Node) { d.boolean(p, v, &sp.Expectation) },
				"nat":            func(p string, v *yaml.Node) { d.boolean(p, v, &sp.NAT) },
				"delay":          dur(&sp.Delay),
				"defer": func(p string, v *yaml.Node) {
					deferSet = true
					d.duration(p, v, &sp.Defer)
				},
				"sync_dev": func(p string, v *yaml.Node) {
					d.strList(p, v, MaxHBDevs, "session sync devices", &sp.SyncDev)
				},
				"down_until_synced": func(p string, v *yaml.Node) {
					d.strList(p, v, MaxInterfaces, "interfaces", &sp.DownUntilSynced)
				},
				"ignore": func(p string, v *yaml.Node) {
					sp.Ignore = nil
					d.seq(p, v, maxIgnore, "prefixes", func(p string, v *yaml.Node) {
						var s string
						d.str(p, v, &s)
						var pfx netip.Prefix
						if !d.bad[p] {
							var err error
							if pfx, err = netip.ParsePrefix(s); err != nil {
								if a, aerr := netip.ParseAddr(s); aerr == nil {
									pfx, err = a.Prefix(a.BitLen())
								}
							}
							if err != nil {
								d.typeErr(p, v, "a prefix such as 10.9.1.0/24 or an address")
							}
						}
						sp.Ignore = append(sp.Ignore, pfx.Masked())
					})
				},
			})
		},
		"hooks": func(p string, v *yaml.Node) {
			h := &c.Hooks
			d.mapping(p, v, map[string]field{
				"primary":   func(p string, v *yaml.Node) { d.str(p, v, &h.Primary) },
				"secondary": func(p string, v *yaml.Node) { d.str(p, v, &h.Secondary) },
				"fault":     func(p string, v *yaml.Node) { d.str(p, v, &h.Fault) },
				"timeout":   dur(&h.Timeout),
				"env":       func(p string, v *yaml.Node) { d.strList(p, v, MaxHookEnv, "variable names", &h.Env) },
			})
		},
	})
}

// stringMap decodes a mapping of free string keys to string values. Entry
// key paths are path["key"]. An empty mapping gives nil.
func (d *decoder) stringMap(path string, n *yaml.Node, max int) map[string]string {
	d.known[path+"[]"] = true
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.typeErr(path, n, "a mapping")
		return nil
	}
	if len(n.Content)/2 > max {
		d.bad[path] = true
		d.errAt(d.lineOf(path), path, "%d entries; at most %d allowed", len(n.Content)/2, max)
		return nil
	}
	var out map[string]string
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := resolve(n.Content[i]), resolve(n.Content[i+1])
		if kn == nil || vn == nil {
			continue
		}
		var k string
		d.str(path, kn, &k)
		if d.bad[path] {
			return nil
		}
		key := path + "[" + strconv.Quote(k) + "]"
		if first, dup := seen[k]; dup {
			d.errAt(posOf(kn), key, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k] = kn.Line
		d.lines[key] = posOf(kn)
		var v string
		d.str(key, vn, &v)
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

// interfaces decodes a list of data interfaces (cluster.interfaces,
// cluster.vcluster2.interfaces).
func (d *decoder) interfaces(path string, n *yaml.Node, out *[]Interface) {
	*out = nil
	d.seq(path, n, MaxInterfaces, "interfaces", func(p string, v *yaml.Node) {
		var ifc Interface
		d.mapping(p, v, map[string]field{
			"name":      func(p string, v *yaml.Node) { d.str(p, v, &ifc.Name) },
			"addresses": func(p string, v *yaml.Node) { d.prefixList(p, v, maxAddresses, "10.9.0.100/24", &ifc.Addresses) },
		})
		*out = append(*out, ifc)
	})
}

// prefixList decodes a list of addresses with their prefix length (an
// invalid Prefix stands in for one that did not parse, so indexes stay
// aligned).
func (d *decoder) prefixList(path string, n *yaml.Node, max int, example string, out *[]netip.Prefix) {
	*out = nil
	d.seq(path, n, max, "addresses", func(p string, v *yaml.Node) {
		var s string
		d.str(p, v, &s)
		if d.bad[p] {
			*out = append(*out, netip.Prefix{})
			return
		}
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			d.typeErr(p, v, "an address with its prefix length such as "+example)
		}
		*out = append(*out, pfx)
	})
}

// pingserver decodes a pingserver mapping (cluster.pingserver,
// cluster.vcluster2.pingserver).
func (d *decoder) pingserver(path string, n *yaml.Node, ps *PingServer) {
	dur := func(out *time.Duration) field { return func(p string, v *yaml.Node) { d.duration(p, v, out) } }
	d.mapping(path, n, map[string]field{
		"interfaces": func(p string, v *yaml.Node) {
			d.strList(p, v, maxPingIfaces, "interfaces", &ps.Interfaces)
		},
		"targets": func(p string, v *yaml.Node) {
			d.addrList(p, v, maxPingTargets, "targets", "10.9.0.254", &ps.Targets)
		},
		"interval":           dur(&ps.Interval),
		"failover_threshold": func(p string, v *yaml.Node) { d.integer(p, v, &ps.FailoverThreshold) },
		"flip_timeout":       dur(&ps.FlipTimeout),
	})
}
