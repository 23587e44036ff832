// Package testbin gives tests the hodei binary, which they run as agents,
// servers and jobs, and the test run's CA: servers started by the tests
// sign with it, and agents, the CLI and tests' clients trust it.
package testbin

import (
	"debug/elf"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/pki"
)

// Main sets *path to the hodei binary and runs m's tests with run (m.Run,
// or storetest.Main), returning its exit code. The binary is
// HODEI_TEST_BINARY when that is a static one, else one built static for
// this run and removed after it: Docker workers mount it.
//
// Main also makes the run's CA (see CA) and points the environment at it,
// for every process the tests start: HODEI_CA_CERT_FILE and
// HODEI_CA_KEY_FILE (servers sign with it), HODEI_CA_FILE (agents and the
// CLI trust it) and HODEI_CONFIG (a configuration file of the run's own).
func Main(m *testing.M, path *string, run func(*testing.M) int) int {
	cleanup, err := setupCA()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test CA:", err)
		return 1
	}
	defer cleanup()
	// go test points GOCOVERDIR at a directory of its own; the hodei
	// processes the tests start write their coverage counters where
	// scripts/cover.sh wants them.
	if d := os.Getenv("HODEI_TEST_COVERDIR"); d != "" {
		os.Setenv("GOCOVERDIR", d)
	}
	if b := os.Getenv("HODEI_TEST_BINARY"); b != "" && isStatic(b) {
		*path = b
		return run(m)
	}
	dir, err := os.MkdirTemp("", "hodei-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "build hodei:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	*path = filepath.Join(dir, "hodei")
	build := exec.Command("go", "build", "-o", *path, "github.com/hodei-dev/hodei/cmd/hodei")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build hodei: %v\n%s", err, out)
		return 1
	}
	return run(m)
}

// isStatic reports whether path is an executable without an ELF
// interpreter (one that runs in a scratch image).
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return !slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
}

var testCA *pki.CA

// CA is the test run's CA (set by Main).
func CA() *pki.CA { return testCA }

// setupCA makes the run's CA, writes it to files and points the
// environment at them.
func setupCA() (cleanup func(), err error) {
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	ca, err := pki.NewCA(key, "Hodei test CA", time.Now(), 24*time.Hour)
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hodei-ca")
	if err != nil {
		return nil, err
	}
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(certFile, ca.PEM, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	for k, v := range map[string]string{"HODEI_CA_CERT_FILE": certFile, "HODEI_CA_KEY_FILE": keyFile, "HODEI_CA_FILE": certFile,
		"HODEI_CONFIG": filepath.Join(dir, "config.json")} {
		os.Setenv(k, v)
	}
	testCA = ca
	return func() { os.RemoveAll(dir) }, nil
}

// Client returns an HTTP/2 client over TLS that trusts the run's CA, and
// the base URL of addr for it.
func Client(addr string) (*http.Client, string) {
	cfg, err := pki.ClientTLS(testCA.PEM, nil)
	if err != nil {
		panic(err)
	}
	return pki.HTTPClient(cfg), "https://" + addr
}
