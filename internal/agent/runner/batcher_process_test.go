//go:build unix

package runner

import (
	"os"
	"testing"
	"time"
)

// TestBatcherSendsThePartialLineOfARunningProcess: a process that prints
// the start of a line and then waits has that start sent while it still
// runs, and its output reads back from the batches byte for byte.
func TestBatcherSendsThePartialLineOfARunningProcess(t *testing.T) {
	t.Parallel()
	r := recorder{sent: make(chan Batch, 16)}
	b := NewBatcher(BatcherConfig{FlushInterval: 50 * time.Millisecond}, r.send)
	errc := startRun(t.Context(), b)
	done := make(chan Result, 1)
	go func() {
		spec := Spec{Argv: []string{"sh", "-c", "printf 'waiting...'; sleep 2; echo ' done'"}, Env: []string{"PATH=" + os.Getenv("PATH")}}
		done <- Run(t.Context(), spec, b.Write)
	}()

	select {
	case batch := <-r.sent:
		if len(batch.Lines) != 1 || string(batch.Lines[0].Data) != "waiting..." || !batch.Lines[0].Partial {
			t.Errorf("first batch %+v, want the partial line \"waiting...\"", batch.Lines)
		}
	case res := <-done:
		t.Fatalf("process ended (%+v) before its partial line was sent", res)
	case <-time.After(10 * time.Second):
		t.Fatal("partial line not sent within 10s")
	}

	if res := <-done; res.ExitCode != 0 || res.Err != nil {
		t.Fatalf("process: %+v", res)
	}
	b.Close()
	waitRun(t, errc)
	_, batches := r.result()
	var out []byte
	for _, batch := range batches {
		for _, l := range batch.Lines {
			out = append(out, l.Data...)
			if !l.Partial {
				out = append(out, '\n')
			}
		}
	}
	if want := "waiting... done\n"; string(out) != want {
		t.Errorf("output read back %q, want %q", out, want)
	}
}
