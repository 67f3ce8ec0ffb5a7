package heartbeat

import "testing"

func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		name     string
		password []byte
	}{{"hmac", testPassword}, {"unauthenticated", nil}} {
		b.Run(bc.name, func(b *testing.B) {
			c := NewCodec(bc.password, testGroup)
			f := testFrame()
			buf := make([]byte, 0, MaxFrameLen)
			b.ReportAllocs()
			for b.Loop() {
				f.Seq++
				var err error
				if buf, err = c.Append(buf[:0], &f); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct {
		name     string
		password []byte
	}{{"hmac", testPassword}, {"unauthenticated", nil}} {
		b.Run(bc.name, func(b *testing.B) {
			c := NewCodec(bc.password, testGroup)
			wire := mustAppend(b, c, testFrame())
			var f Frame
			b.ReportAllocs()
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				if err := c.Decode(wire, &f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReplayGuardCheck(b *testing.B) {
	var g ReplayGuard
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		seq++
		if err := g.Check("FGVM01TM19000001", 1, seq); err != nil {
			b.Fatal(err)
		}
	}
}
