package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestQuietStreamOutlivesTheConnectTimeout: the connect timeout bounds
// the server's first answer only: events tail, quiet for three times the
// timeout, is still following and prints the next event.
func TestQuietStreamOutlivesTheConnectTimeout(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	var out, errb syncBuffer
	tail := exec.Command(hodeiBin, "events", "tail", "--type", "JobCreated", "--connect-timeout", "1s")
	tail.Env = append(os.Environ(), cliEnv(p.addr)...)
	tail.Stdout, tail.Stderr = &out, &errb
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { tail.Wait(); close(done) }()
	t.Cleanup(func() {
		tail.Process.Kill()
		<-done
	})
	select {
	case <-done:
		t.Fatalf("events tail exited: %s", errb.String())
	case <-time.After(3 * time.Second):
	}
	r := p.hodei(t, "job", "submit", "--", "true")
	if r.code != 0 {
		t.Fatalf("job submit: %d %s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	eventually(t, 10*time.Second, "the JobCreated event of "+id, func() bool { return strings.Contains(out.String(), id) })
	if errb.String() != "" {
		t.Errorf("events tail stderr: %q", errb.String())
	}
}
