//go:build unix

package runner

import (
	"context"
	"strconv"
	"syscall"
	"testing"
)

// BenchmarkBatcherWrite feeds the batcher 32 KiB reads of 25-byte lines
// (reads ending inside a line, as from a pipe) and reports the CPU this
// process spends per line (cpu-ns/line: steadier than the elapsed time on
// a busy machine).
func BenchmarkBatcherWrite(b *testing.B) {
	var data []byte
	for i := 0; len(data) < 1<<20; i++ {
		data = strconv.AppendInt(append(data, "line "...), int64(i), 10)
		for len(data)%25 != 24 {
			data = append(data, 'x')
		}
		data = append(data, '\n')
	}
	lines := int64(len(data) / 25)
	b.ReportAllocs()
	var r0, r1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	for b.Loop() {
		bt := NewBatcher(BatcherConfig{}, func(context.Context, Batch) error { return nil })
		done := make(chan error, 1)
		go func() { done <- bt.Run(context.Background()) }()
		for p := data; len(p) > 0; {
			n := min(len(p), readBufferSize)
			bt.Write(StreamStdout, p[:n])
			p = p[n:]
		}
		bt.Close()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := (r1.Utime.Nano() + r1.Stime.Nano()) - (r0.Utime.Nano() + r0.Stime.Nano())
	b.ReportMetric(float64(cpu)/float64(int64(b.N)*lines), "cpu-ns/line")
}
