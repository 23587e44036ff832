package runner

import (
	"context"
	"os"
	"syscall"
	"testing"
)

// BenchmarkRunTrue runs `true` from 32 goroutines and reports the CPU
// this process spends per run (cpu-us/op), apart from the processes'.
func BenchmarkRunTrue(b *testing.B) {
	spec := Spec{Argv: []string{"true"}, Env: []string{"PATH=" + os.Getenv("PATH"), "HOME=/root", "HODEI_JOB_ID=x", "HODEI_ATTEMPT=1"}}
	var r0, r1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res := Run(context.Background(), spec, nil); res.ExitCode != 0 {
				b.Fatalf("%+v", res)
			}
		}
	})
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := (r1.Utime.Nano() + r1.Stime.Nano()) - (r0.Utime.Nano() + r0.Stime.Nano())
	b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-us/op")
}
