#!/bin/bash
# failed-output.sh LOG: what each failing test of a `go test -v` log printed
# (make integration shows only the progress lines and the figures; this is
# the rest, for the tests that failed). Log lines of the agents are left out.
awk '
/^=== (RUN|CONT|PAUSE)/ { name = $3; next }
/^[ \t]*--- FAIL/       { fail[$3] = 1 }
name != "" && !/^[ \t]+20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]T/ { out[name] = out[name] $0 "\n" }
END {
	for (n in fail) {
		printf "\n#### output of %s (failed)\n", n
		printf "%s", out[n]
	}
}' "$1" | head -400
