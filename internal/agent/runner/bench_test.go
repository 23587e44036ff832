package runner

import (
	"context"
	"os"
	"syscall"
	"testing"
)

// BenchmarkRunTrue runs `true` from 16 goroutines per core and reports
// the CPU this process spends per run (cpu-us/op) and the processes' own
// (child-cpu-us/op).
func BenchmarkRunTrue(b *testing.B) {
	spec := Spec{Argv: []string{"true"}, Env: []string{"PATH=" + os.Getenv("PATH"), "HOME=/root", "HODEI_JOB_ID=x", "HODEI_ATTEMPT=1"}}
	var r0, r1, c0, c1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c0)
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res := Run(context.Background(), spec, nil); res.ExitCode != 0 {
				b.Fatalf("%+v", res)
			}
		}
	})
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c1)
	cpu := (r1.Utime.Nano() + r1.Stime.Nano()) - (r0.Utime.Nano() + r0.Stime.Nano())
	child := (c1.Utime.Nano() + c1.Stime.Nano()) - (c0.Utime.Nano() + c0.Stime.Nano())
	b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-us/op")
	b.ReportMetric(float64(child)/1e3/float64(b.N), "child-cpu-us/op")
}
