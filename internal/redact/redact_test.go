package redact

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
)

var shapes = map[string]string{
	"plain":      "hunter2-pass",
	"spaces":     `a b "c" 'd'`,
	"unicode":    "pässwörd-秘密",
	"multi-line": "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34\n-----END KEY-----",
	"json":       `{"user":"u","pass":"p<&>"}`,
	"4 bytes":    "x9Q!",
	"4 KiB":      strings.Repeat("0123456789abcdef", 256),
}

// encodings is how a job may print v, as the leak tests do.
func encodings(v string) map[string]string {
	j, _ := json.Marshal(v)
	return map[string]string{
		"raw":         v,
		"base64":      base64.StdEncoding.EncodeToString([]byte(v)),
		"base64 +1":   base64.StdEncoding.EncodeToString([]byte("x" + v + "y")),
		"base64 +2":   base64.URLEncoding.EncodeToString([]byte("xy" + v)),
		"uri":         percent([]byte(v), "%%%02X", "-._~"),
		"uri jq 1.6":  percent([]byte(v), "%%%02X", "-._~!*'()"),
		"query":       url.QueryEscape(v),
		"json":        string(j),
		"inside line": strings.Repeat("a", 1000) + v + strings.Repeat("z", 1000),
	}
}

// TestStreamMasksEveryEncodingAtEverySplit feeds each shape in each
// encoding through a Stream split at every offset (two reads) and checks
// that the output holds none of the secret's forms but holds the mask.
func TestStreamMasksEveryEncodingAtEverySplit(t *testing.T) {
	for name, v := range shapes {
		set := NewSet([]Secret{{Name: "s", Value: []byte(v)}})
		forms := Variants([]byte(v))
		for enc, text := range encodings(v) {
			text = "before " + text + " after\n"
			step := 1
			if len(text) > 300 {
				step = 97
			}
			for split := 0; split <= len(text); split += step {
				var out bytes.Buffer
				st := NewStream(set, func(p []byte) { out.Write(p) })
				st.Write([]byte(text[:split]))
				st.Write([]byte(text[split:]))
				st.Flush()
				got := out.String()
				for _, f := range forms {
					if len(f) >= MinPattern && strings.Contains(got, string(f)) {
						t.Fatalf("%s/%s split %d: output holds a form of the secret: %q", name, enc, split, got)
					}
				}
				if !strings.Contains(got, "[REDACTED:s]") || !strings.HasPrefix(got, "before ") || !strings.HasSuffix(got, " after\n") {
					t.Fatalf("%s/%s split %d: output %q", name, enc, split, got)
				}
			}
		}
	}
}

// TestStreamHoldsBackOnlyPossibleStarts: output that cannot begin a match
// is passed on at once; a possible start is held, at most MaxLen-1 bytes.
func TestStreamHoldsBackOnlyPossibleStarts(t *testing.T) {
	set := NewSet([]Secret{{Name: "s", Value: []byte("supersecret")}})
	var out bytes.Buffer
	st := NewStream(set, func(p []byte) { out.Write(p) })
	st.Write([]byte("hello world\n"))
	if out.String() != "hello world\n" {
		t.Fatalf("held back plain output: %q", out.String())
	}
	st.Write([]byte("x supers"))
	if out.String() != "hello world\nx " {
		t.Fatalf("got %q, want the possible start held", out.String())
	}
	st.Write([]byte("ecret!"))
	st.Flush()
	if want := "hello world\nx [REDACTED:s]!"; out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
	if st.Redactions() != 1 {
		t.Fatalf("redactions %d", st.Redactions())
	}
}

func TestRedactLeavesShortAndOtherOutputAlone(t *testing.T) {
	set := NewSet([]Secret{{Name: "a", Value: []byte("abcd")}, {Name: "b", Value: []byte("wxyz-1234")}})
	in := []byte("a ab abc abd wxyz-123 abcdwxyz-1234")
	got, n := set.Redact(in)
	if want := "a ab abc abd wxyz-123 [REDACTED:a][REDACTED:b]"; string(got) != want || n != 2 {
		t.Fatalf("got %q (%d), want %q", got, n, want)
	}
}

func BenchmarkStream(b *testing.B) {
	var secrets []Secret
	for i := range 5 {
		secrets = append(secrets, Secret{Name: fmt.Sprint("s", i), Value: []byte(fmt.Sprintf("secret-value-%d-xyzzy", i))})
	}
	set := NewSet(secrets)
	var chunk []byte
	for i := 0; len(chunk) < 32<<10; i++ {
		chunk = fmt.Appendf(chunk, "%d\n", i)
	}
	st := NewStream(set, func([]byte) {})
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		st.Write(chunk)
	}
}
