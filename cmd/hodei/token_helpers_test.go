package main

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hodei-dev/hodei/internal/agent"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/cli"
	"github.com/hodei-dev/hodei/internal/store"
)

// Every API call of these tests carries an admin token: for servers, one
// per database, created in it (as `hodei token create --database` does);
// for `hodei dev`, the one it writes into the test's client configuration
// file.
var apiTokens = struct {
	sync.Mutex
	byDB    map[string]string        // database URL -> admin token
	byAddr  map[string]func() string // server address -> its current token
	configs map[*testing.T]string    // test -> its HODEI_CONFIG
}{byDB: map[string]string{}, byAddr: map[string]func() string{}, configs: map[*testing.T]string{}}

// dbToken returns the admin token of the database at url, creating it
// the first time.
func dbToken(t *testing.T, url string) string {
	t.Helper()
	tok, err := dbTokenErr(url)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func dbTokenErr(url string) (string, error) {
	apiTokens.Lock()
	defer apiTokens.Unlock()
	if tok, ok := apiTokens.byDB[url]; ok {
		return tok, nil
	}
	st, err := store.Open(context.Background(), store.Config{URL: url})
	if err != nil {
		return "", err
	}
	defer st.Close()
	_, tok, err := st.CreateToken(context.Background(), "test-admin", []string{string(auth.Admin)}, 0)
	if err != nil {
		return "", err
	}
	apiTokens.byDB[url] = tok
	return tok, nil
}

// testConfig is the client configuration file of a test: every `hodei
// dev` it starts writes there, every CLI command it runs reads it.
func testConfig(t *testing.T) string {
	apiTokens.Lock()
	defer apiTokens.Unlock()
	if p, ok := apiTokens.configs[t]; ok {
		return p
	}
	p := t.TempDir() + "/config.json"
	apiTokens.configs[t] = p
	t.Cleanup(func() {
		apiTokens.Lock()
		delete(apiTokens.configs, t)
		apiTokens.Unlock()
	})
	return p
}

// serveToken records the token of the server at addr.
func serveToken(addr string, token func() string) {
	apiTokens.Lock()
	apiTokens.byAddr[addr] = token
	apiTokens.Unlock()
}

// configToken reads the token of the client configuration at path.
func configToken(path string) func() string {
	return func() string {
		c, _ := cli.LoadConfig(path)
		return c.Token
	}
}

// tokenFor is the current token of the server at addr ("" if unknown).
func tokenFor(addr string) string {
	apiTokens.Lock()
	f := apiTokens.byAddr[addr]
	apiTokens.Unlock()
	if f == nil {
		return ""
	}
	return f()
}

// registerPlatform sets up the token of a `hodei dev|server` about to
// start with args and env, and returns env with HODEI_CONFIG added for
// dev.
func registerPlatform(t *testing.T, env []string, args []string) []string {
	t.Helper()
	addr := ""
	if i := slices.Index(args, "--listen"); i >= 0 && i+1 < len(args) {
		addr = args[i+1]
	}
	switch {
	case len(args) > 0 && args[0] == "dev":
		cfg := ""
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, "HODEI_CONFIG="); ok {
				cfg = v
			}
		}
		if cfg == "" {
			cfg = testConfig(t)
			env = append(env, "HODEI_CONFIG="+cfg)
		}
		serveToken(addr, configToken(cfg))
	case len(args) > 0 && args[0] == "server":
		for _, kv := range env {
			if url, ok := strings.CutPrefix(kv, "HODEI_DATABASE_URL="); ok {
				// Made at the first call: the database may not be up yet.
				serveToken(addr, func() string {
					tok, _ := dbTokenErr(url) // none yet: the call is refused and says so
					return tok
				})
			}
		}
	}
	return env
}

// cliEnv is the environment of a CLI command talking to addr.
func cliEnv(addr string) []string {
	env := []string{"HODEI_SERVER=" + addr, "HODEI_CONFIG=/nonexistent/hodei-config.json"}
	if tok := tokenFor(addr); tok != "" {
		env = append(env, "HODEI_TOKEN="+tok)
	}
	return env
}

// apiClient is an HTTP client for the API of the server at addr: each
// request carries the server's current token.
func apiClient(addr string) *http.Client {
	hc := agent.HTTPClient()
	hc.Transport = tokenTransport{base: hc.Transport, addr: addr}
	return hc
}

type tokenTransport struct {
	base http.RoundTripper
	addr string
}

func (tt tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tokenFor(tt.addr))
	return tt.base.RoundTrip(r)
}
