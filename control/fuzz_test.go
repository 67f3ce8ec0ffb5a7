package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// countingReader counts what the server reads of a request.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// FuzzAnswer fuzzes the control socket's request decoder (Server.answer)
// with the bytes a client writes. It may not panic; it reads at most
// maxRequest bytes, however many are sent; the handler is called exactly
// when those bytes start with a JSON request (an independent decode says
// so), with that request, and never otherwise; and the answer is exactly
// one line holding one JSON Response: the handler's result, or "bad
// request: …" for anything else.
func FuzzAnswer(f *testing.F) {
	for _, seed := range []string{
		`{"cmd":"status"}`,                                  // ha status
		`{"cmd":"failover-set","vcluster":2}`,               // ha failover set, vcluster 2
		`{"cmd":"failover-set","vcluster":-9}`,              // a vcluster the handler refuses
		`{"cmd":"error"}`,                                   // the handler's error
		`null`,                                              // decodes: the empty request
		`{"cmd":"status"}{"cmd":"history"}`,                 // one request per connection: the second is not read as one
		`{"cmd":"status"`,                                   // cut short
		`{"cmd":1}`,                                         // wrong type
		`{"vcluster":1e400}`,                                // number out of range
		`{"cmd":"a\xff\xfe"}`,                               // invalid UTF-8
		`{"cmd":"status","cmd":"history","x":[]}`,           // duplicate and unknown keys
		strings.Repeat("[", 20000),                          // nesting past the decoder's depth limit
		`{"cmd":"` + strings.Repeat("a", maxRequest) + `"}`, // longer than maxRequest
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var got *Request
		s := &Server{h: func(r Request) (any, error) {
			if got != nil {
				t.Fatal("handler called twice")
			}
			got = &r
			switch r.Cmd {
			case "error":
				return nil, errors.New("refused")
			case CmdStatus:
				return &Status{Node: r.Cmd}, nil
			}
			return map[string]any{"cmd": r.Cmd, "vcluster": r.VCluster}, nil
		}}
		cr := &countingReader{r: bytes.NewReader(in)}
		var out bytes.Buffer
		s.answer(cr, &out)
		if cr.n > maxRequest {
			t.Fatalf("read %d bytes of the request, over %d", cr.n, maxRequest)
		}
		var want Request
		decodes := json.NewDecoder(bytes.NewReader(in[:min(len(in), maxRequest)])).Decode(&want) == nil
		switch {
		case decodes && got == nil:
			t.Fatalf("%q decodes to %+v but the handler was not called", in, want)
		case !decodes && got != nil:
			t.Fatalf("%q does not decode but the handler got %+v", in, *got)
		case decodes && *got != want:
			t.Fatalf("%q: the handler got %+v, want %+v", in, *got, want)
		}
		line, rest, ok := bytes.Cut(out.Bytes(), []byte("\n"))
		if !ok || len(rest) != 0 {
			t.Fatalf("answer %q: not exactly one line", out.Bytes())
		}
		var resp Response
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&resp); err != nil {
			t.Fatalf("answer %q: %v", line, err)
		}
		if !decodes && !strings.HasPrefix(resp.Error, "bad request: ") {
			t.Fatalf("answer to %q: %+v, want a bad request", in, resp)
		}
		if decodes && (resp.Error == "") == (got.Cmd == "error") {
			t.Fatalf("answer to %+v: %+v", *got, resp)
		}
	})
}
