// Package kaimport reads a keepalived.conf and writes the hagent.yaml of
// its VRRP part (hagentd import keepalived). It never runs anything from
// the file and does not follow include: the parser turns text into a tree
// of statements (parse.go), the converter maps the directives it knows to
// hagent keys and lists every other one, with its line, as a Note
// (convert.go).
package kaimport

import (
	"fmt"
	"strings"
)

// Bounds of the parser: an input, a nesting depth and a statement count
// beyond them is refused with an error, never a panic or an unbounded
// allocation (FuzzParse). A real keepalived.conf is a few kilobytes.
const (
	MaxInput      = 4 << 20
	MaxDepth      = 32
	MaxStatements = 100_000
)

// Stmt is one statement: its words on one line (Name is the first),
// and the statements of its block when a { follows.
type Stmt struct {
	Line     int
	Name     string
	Args     []string
	Block    bool
	Children []*Stmt
}

// token is a word, "{" or "}" with its line; quoted marks a word that
// was in double quotes (so "{" inside quotes is a word).
type token struct {
	line   int
	text   string
	quoted bool
}

// tokenize splits keepalived.conf text into words, braces and line
// numbers. A word beginning with # or ! starts a comment to the end of
// the line; double quotes group words (keepalived's quoting for scripts).
func tokenize(src string) []token {
	var out []token
	line := 1
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '#' || c == '!':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == '{' || c == '}':
			out = append(out, token{line: line, text: string(c)})
			i++
		case c == '"':
			j := i + 1
			for j < len(src) && src[j] != '"' && src[j] != '\n' {
				j++
			}
			out = append(out, token{line: line, text: src[i+1 : j], quoted: true})
			i = j
			if i < len(src) && src[i] == '"' {
				i++
			}
		default:
			j := i
			for j < len(src) && !strings.ContainsRune(" \t\r\f\v\n{}\"", rune(src[j])) {
				j++
			}
			out = append(out, token{line: line, text: src[i:j]})
			i = j
		}
	}
	return out
}

// Parse parses keepalived.conf text into its top-level statements. An
// unbalanced } or an unclosed { is an error with its line.
func Parse(src string) ([]*Stmt, error) {
	if len(src) > MaxInput {
		return nil, fmt.Errorf("input of %d bytes, more than %d", len(src), MaxInput)
	}
	toks := tokenize(src)
	p := &parser{toks: toks}
	stmts, err := p.block(0)
	if err != nil {
		return nil, err
	}
	if p.i < len(toks) {
		return nil, fmt.Errorf("line %d: } without a block to close", toks[p.i].line)
	}
	return stmts, nil
}

type parser struct {
	toks []token
	i    int
	n    int // statements so far
}

// block reads statements until a } (left unread) or the end.
func (p *parser) block(depth int) ([]*Stmt, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("line %d: blocks nested deeper than %d", p.toks[p.i-1].line, MaxDepth)
	}
	var out []*Stmt
	for p.i < len(p.toks) {
		t := p.toks[p.i]
		if !t.quoted && t.text == "}" {
			return out, nil
		}
		if !t.quoted && t.text == "{" {
			// An anonymous block (keepalived has none): parse and keep it
			// under an empty name so it is reported.
			p.i++
			s := &Stmt{Line: t.line, Block: true}
			if err := p.children(s, depth); err != nil {
				return nil, err
			}
			out = append(out, s)
			continue
		}
		if p.n++; p.n > MaxStatements {
			return nil, fmt.Errorf("line %d: more than %d statements", t.line, MaxStatements)
		}
		s := &Stmt{Line: t.line, Name: t.text}
		p.i++
		for p.i < len(p.toks) && p.toks[p.i].line == t.line {
			w := p.toks[p.i]
			if !w.quoted && (w.text == "{" || w.text == "}") {
				break
			}
			s.Args = append(s.Args, w.text)
			p.i++
		}
		// A { on the same line or, as keepalived also accepts, on the next
		// one opens the statement's block.
		if p.i < len(p.toks) && !p.toks[p.i].quoted && p.toks[p.i].text == "{" {
			p.i++
			s.Block = true
			if err := p.children(s, depth); err != nil {
				return nil, err
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// children reads s's block after its { and the closing }.
func (p *parser) children(s *Stmt, depth int) error {
	kids, err := p.block(depth + 1)
	if err != nil {
		return err
	}
	if p.i >= len(p.toks) {
		return fmt.Errorf("line %d: %s { is never closed", s.Line, s.Name)
	}
	p.i++ // the }
	s.Children = kids
	return nil
}
