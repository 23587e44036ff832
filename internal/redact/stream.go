package redact

// Stream redacts one output stream chunk by chunk: a match split across
// two chunks is caught, because the tail of a chunk that could begin a
// match (at most MaxLen-1 bytes) is held back until the next chunk or
// Flush. Not safe for concurrent use.
type Stream struct {
	set   *Set
	out   func([]byte)
	held  []byte
	in    []byte // held + the new chunk
	red   []byte // the redacted output of one Write
	count int64
}

// NewStream returns a stream over set that passes redacted bytes to out,
// which must not retain them.
func NewStream(set *Set, out func([]byte)) *Stream { return &Stream{set: set, out: out} }

// Write redacts p (not retained) and passes on what can no longer be part
// of a match.
func (st *Stream) Write(p []byte) {
	data := p
	if len(st.held) > 0 {
		st.in = append(append(st.in[:0], st.held...), p...)
		data = st.in
	}
	last := 0
	red := st.red[:0]
	hold := st.set.scan(data, func(start, end, name int) {
		red = append(append(red, data[last:start]...), st.set.repl[name]...)
		last = end
		st.count++
	})
	hold = max(hold, last)
	if last > 0 {
		red = append(red, data[last:hold]...)
		st.out(red)
		st.red = red
	} else if hold > 0 {
		st.out(data[:hold])
	}
	st.held = append(st.held[:0], data[hold:]...)
}

// Flush redacts and passes on the held-back bytes: the output ended, so
// no match can complete any more.
func (st *Stream) Flush() {
	if len(st.held) == 0 {
		return
	}
	red, n := st.set.Redact(st.held)
	st.count += int64(n)
	st.out(red)
	st.held = st.held[:0]
}

// Redactions is the number of matches masked so far.
func (st *Stream) Redactions() int64 { return st.count }
