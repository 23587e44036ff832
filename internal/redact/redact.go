// Package redact masks secret values in job output: every value of an
// attempt and its encodings (Variants) are replaced by [REDACTED:NAME].
// The agent runs a Stream per output stream before its log batcher, so
// that a value split across two reads is still caught; the server runs
// Set.Redact over every stored line as a second line of defence.
//
// Matching is one pass over the bytes whatever the number of patterns:
// every pattern is at least MinPattern bytes long, a bitset of hashes of
// the patterns' first four bytes filters positions, and only positions
// that pass are compared with the patterns starting with those bytes,
// longest first (leftmost, then longest match wins).
package redact

import (
	"bytes"
	"encoding/binary"
	"slices"
)

// MinPattern is the shortest pattern a Set matches; shorter variants of a
// value are not used (values themselves are at least this long).
const MinPattern = 4

// Secret is a value to mask, and the name its mask shows.
type Secret struct {
	Name  string
	Value []byte
}

type pattern struct {
	b    []byte
	name int // index into Set.repl
}

// Set is the compiled patterns of some secrets. It is immutable and safe
// for concurrent use.
type Set struct {
	repl     [][]byte // [REDACTED:NAME] per secret
	byPrefix map[uint32][]pattern
	filter   []uint64
	short    map[string]bool // proper prefixes of 1-3 bytes of every pattern
	maxLen   int
}

const filterBits = 1 << 16

func hash(k uint32) uint32 { return (k * 0x9E3779B1) >> 16 }

// NewSet compiles the patterns of secrets: each value and its Variants.
// Values shorter than MinPattern are skipped.
func NewSet(secrets []Secret) *Set {
	s := &Set{byPrefix: map[uint32][]pattern{}, filter: make([]uint64, filterBits/64), short: map[string]bool{}}
	seen := map[string]bool{}
	for i, sec := range secrets {
		s.repl = append(s.repl, []byte("[REDACTED:"+sec.Name+"]"))
		for _, v := range Variants(sec.Value) {
			if len(v) < MinPattern || seen[string(v)] {
				continue
			}
			seen[string(v)] = true
			k := binary.LittleEndian.Uint32(v)
			s.byPrefix[k] = append(s.byPrefix[k], pattern{b: v, name: i})
			h := hash(k)
			s.filter[h/64] |= 1 << (h % 64)
			for n := 1; n < MinPattern; n++ {
				s.short[string(v[:n])] = true
			}
			s.maxLen = max(s.maxLen, len(v))
		}
	}
	for k, ps := range s.byPrefix {
		slices.SortFunc(ps, func(a, b pattern) int { return len(b.b) - len(a.b) })
		s.byPrefix[k] = ps
	}
	return s
}

// MaxLen is the length of the longest pattern: a Stream holds back less.
func (s *Set) MaxLen() int { return s.maxLen }

// scan finds the matches in b: it calls match(start, end, name) for each,
// leftmost first and not overlapping, and returns the start of the
// longest tail of b that is a proper prefix of a pattern (len(b) when
// none): the bytes a stream must hold back.
func (s *Set) scan(b []byte, match func(start, end, name int)) (hold int) {
	hold = len(b)
	n := len(b)
	for i := 0; i+MinPattern <= n; i++ {
		k := binary.LittleEndian.Uint32(b[i:])
		h := hash(k)
		if s.filter[h/64]&(1<<(h%64)) == 0 {
			continue
		}
		for _, p := range s.byPrefix[k] {
			if bytes.HasPrefix(b[i:], p.b) {
				match(i, i+len(p.b), p.name)
				i += len(p.b) - 1
				goto next
			}
			if bytes.HasPrefix(p.b, b[i:]) {
				return i // a match may complete with the next bytes
			}
		}
	next:
	}
	for j := max(0, n-(MinPattern-1)); j < n; j++ {
		if s.short[string(b[j:])] {
			return j
		}
	}
	return hold
}

// Redact returns b with every match replaced (b itself when there is
// none) and the number of matches.
func (s *Set) Redact(b []byte) ([]byte, int) {
	var out []byte
	last, count := 0, 0
	s.scan(b, func(start, end, name int) {
		out = append(append(out, b[last:start]...), s.repl[name]...)
		last = end
		count++
	})
	if count == 0 {
		return b, 0
	}
	return append(out, b[last:]...), count
}

// Contains reports whether b holds a match.
func (s *Set) Contains(b []byte) bool {
	_, n := s.Redact(b)
	return n > 0
}

// Names lists the names of the secrets matched in b, in order of first
// match.
func (s *Set) Names(b []byte) []string {
	var names []string
	s.scan(b, func(_, _, name int) {
		n := string(s.repl[name][len("[REDACTED:") : len(s.repl[name])-1])
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	})
	return names
}
