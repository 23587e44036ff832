package cli

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

// silentServer accepts connections and never reads nor writes; it returns
// its address.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestSilentServerFailsFast: against a server that accepts the connection
// and never answers, commands fail after the connect timeout (flag or
// environment) with a message naming the server, unary and streaming ones
// alike.
func TestSilentServerFailsFast(t *testing.T) {
	addr := silentServer(t)
	for _, tc := range []struct {
		args []string
		env  string
		code int
		want string
	}{
		{[]string{"job", "get", "x", "--connect-timeout", "500ms"}, "", ExitError, "500ms"},
		{[]string{"job", "get", "x"}, "1s", ExitError, "1s"},
		{[]string{"run", "--connect-timeout", "500ms", "--", "true"}, "", ExitPlatform, "500ms"},
		{[]string{"job", "logs", "x", "--connect-timeout", "500ms"}, "", ExitError, "500ms"},
		{[]string{"job", "submit", "--connect-timeout", "500ms", "--timeout", "1h", "--", "true"}, "", ExitError, "500ms"},
	} {
		var out, errOut bytes.Buffer
		env := map[string]string{"HODEI_SERVER": addr, "HODEI_CONNECT_TIMEOUT": tc.env}
		start := time.Now()
		code := Main(t.Context(), tc.args, IO{Out: &out, Err: &errOut, Env: func(k string) string { return env[k] }})
		took := time.Since(start)
		want := "hodei: server " + addr + " did not answer within " + tc.want + "\n"
		if code != tc.code || errOut.String() != want {
			t.Errorf("%q: exit %d, stderr %q; want %d, %q", tc.args, code, errOut.String(), tc.code, want)
		}
		if took > 5*time.Second {
			t.Errorf("%q: took %s", tc.args, took)
		}
	}
}

func TestBadConnectTimeoutIsAUsageError(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"job", "get", "x", "--connect-timeout", "0s"}, "", "flag -connect-timeout: want a positive duration"},
		{[]string{"job", "get", "x"}, "soon", `HODEI_CONNECT_TIMEOUT="soon": want a positive duration`},
	} {
		var errOut bytes.Buffer
		code := Main(t.Context(), tc.args, IO{Err: &errOut, Env: func(k string) string {
			if k == "HODEI_CONNECT_TIMEOUT" {
				return tc.env
			}
			return ""
		}})
		if code != ExitUsage || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, errOut.String(), ExitUsage, tc.want)
		}
	}
}
