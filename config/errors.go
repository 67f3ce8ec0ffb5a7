package config

import (
	"strconv"
	"strings"
)

// Error is one problem found in a configuration.
type Error struct {
	// File is the file (or name) the configuration came from.
	File string
	// Line is the 1-based line of the offending key, or of its parent
	// mapping when the key is missing; 0 when unknown.
	Line int
	// Key is the dotted key path, such as cluster.hbdev[1].priority;
	// empty for errors not tied to a key (syntax errors).
	Key string
	// Msg says what is wrong.
	Msg string
}

// Error returns "FILE:LINE: KEY: MSG", leaving out the line when it is 0
// and the key when it is empty.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	if e.File != "" || e.Line > 0 {
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a configuration, in line order.
// Load, Parse and ParseCluster return a non-empty *Errors as their error.
type Errors []*Error

// Error returns one error per line.
func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap returns the individual errors, so errors.As can find an *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// As lets errors.As fill a target of type *Errors from a returned *Errors.
func (es *Errors) As(target any) bool {
	if t, ok := target.(*Errors); ok && es != nil {
		*t = *es
		return true
	}
	return false
}
