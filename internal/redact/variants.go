package redact

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// Variants is a value and the forms a job may print it in: the value; each
// line of a multi-line value, with the forms of each line (jq -R encodes
// line by line); its base64 in the standard and URL alphabets
// at the three alignments it can have inside a longer encoded text (the
// characters that depend on the value alone); its percent encoding
// (everything but unreserved characters, upper and lower case hex, with
// and without "!*'()" as jq's @uri writes it in its versions) and its query encoding (space as '+'); and its JSON
// string escaping (with and without HTML escaping, as Go and jq write it).
func Variants(v []byte) [][]byte {
	out := forms(v)
	if bytes.ContainsAny(v, "\r\n") {
		for _, line := range strings.FieldsFunc(string(v), func(r rune) bool { return r == '\n' || r == '\r' }) {
			if len(line) >= MinPattern {
				out = append(out, forms([]byte(line))...)
			}
		}
	}
	return out
}

// forms is v and its encoded forms.
func forms(v []byte) [][]byte {
	out := [][]byte{v}
	add := func(b []byte) {
		for _, o := range out {
			if bytes.Equal(o, b) {
				return
			}
		}
		out = append(out, b)
	}
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		for k := range 3 {
			add(base64Core(enc, v, k))
		}
	}
	for _, keep := range []string{"-._~", "-._~!*'()"} {
		add([]byte(percent(v, "%%%02X", keep)))
		add([]byte(percent(v, "%%%02x", keep)))
	}
	add([]byte(url.QueryEscape(string(v))))
	for _, html := range []bool{true, false} {
		var b bytes.Buffer
		e := json.NewEncoder(&b)
		e.SetEscapeHTML(html)
		_ = e.Encode(string(v))
		add(bytes.TrimSuffix(bytes.TrimPrefix(bytes.TrimSuffix(b.Bytes(), []byte("\n")), []byte(`"`)), []byte(`"`)))
	}
	return out
}

// base64Core is the part of the encoding of v, preceded by k bytes, that
// depends on v's bytes alone: the characters whose six bits all come from
// v, whatever comes before and after it.
func base64Core(enc *base64.Encoding, v []byte, k int) []byte {
	full := enc.EncodeToString(append(make([]byte, k), v...))
	from := (8*k + 5) / 6
	to := 8 * (k + len(v)) / 6
	if to <= from || to > len(full) {
		return nil
	}
	return []byte(full[from:to])
}

// percent encodes every byte of v but letters, digits and the bytes of
// keep with format ("%%%02X"). RFC 3986 keeps "-._~"; jq 1.6's @uri and
// JavaScript's encodeURIComponent also keep "!*'()".
func percent(v []byte, format, keep string) string {
	var b strings.Builder
	for _, c := range v {
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte(keep, c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, format, c)
		}
	}
	return b.String()
}
