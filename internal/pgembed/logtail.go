package pgembed

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
)

const (
	logTailLines   = 64
	maxLogLineSize = 4 << 10
)

// logTail is an io.Writer that splits postgres output into lines, keeps the
// last logTailLines of them for error messages and forwards each line to a
// logger at debug level. It is safe for concurrent use.
type logTail struct {
	log *slog.Logger

	mu      sync.Mutex
	lines   []string // ring buffer
	next    int      // index of the oldest line once the ring is full
	partial []byte   // incomplete trailing line
}

func newLogTail(log *slog.Logger) *logTail {
	return &logTail{log: log, lines: make([]string, 0, logTailLines)}
}

func (t *logTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.partial = append(t.partial, p...)
			if len(t.partial) > maxLogLineSize {
				t.addLocked(string(t.partial))
				t.partial = t.partial[:0]
			}
			break
		}
		t.partial = append(t.partial, p[:i]...)
		t.addLocked(string(t.partial))
		t.partial = t.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (t *logTail) addLocked(line string) {
	line = strings.TrimRight(line, "\r")
	t.log.Debug("postgres log", slog.String("line", line))
	if len(t.lines) < logTailLines {
		t.lines = append(t.lines, line)
		return
	}
	t.lines[t.next] = line
	t.next = (t.next + 1) % logTailLines
}

// String returns the retained lines, oldest first, including any incomplete
// trailing line.
func (t *logTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	for i := range t.lines {
		b.WriteString(t.lines[(t.next+i)%len(t.lines)])
		b.WriteByte('\n')
	}
	b.Write(t.partial)
	return strings.TrimRight(b.String(), "\n")
}

// discardLogger returns l, or a logger that drops everything when l is nil.
func discardLogger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}
