package kaimport

import (
	"fmt"
	"io"
	"os"
)

// Usage is the synopsis of the import subcommand.
const Usage = "usage: hagentd import keepalived [FILE]   (FILE or standard input; hagent.yaml on standard output)"

// Command runs `hagentd import keepalived [FILE]` (args are what follows
// "import"): the YAML on stdout, one line per directive not translated on
// stderr. It returns the exit status: 0 converted, 1 unreadable or
// unparsable input, 2 usage.
func Command(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) < 1 || len(args) > 2 || args[0] != "keepalived" {
		fmt.Fprintln(stderr, Usage)
		return 2
	}
	name, in := "standard input", stdin
	if len(args) == 2 && args[1] != "-" {
		f, err := os.Open(args[1])
		if err != nil {
			fmt.Fprintf(stderr, "hagentd import: %v\n", err)
			return 1
		}
		defer f.Close()
		name, in = args[1], f
	}
	data, err := io.ReadAll(io.LimitReader(in, MaxInput+1))
	if err != nil {
		fmt.Fprintf(stderr, "hagentd import: %s: %v\n", name, err)
		return 1
	}
	res, err := Convert(string(data))
	if err != nil {
		fmt.Fprintf(stderr, "hagentd import: %s: %v\n", name, err)
		return 1
	}
	for _, n := range res.Notes {
		fmt.Fprintf(stderr, "%s:%d: %s\n", name, n.Line, n.Msg)
	}
	fmt.Fprint(stdout, res.YAML)
	return 0
}
