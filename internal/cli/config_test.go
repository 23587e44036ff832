package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServerFromTheConfigFile: the configuration file names the server
// when HODEI_SERVER does not, and HODEI_SERVER and --server win over it.
func TestServerFromTheConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hodei", "config.json")
	if err := SaveConfig(path, Config{Server: "127.0.0.1:7443", CA: "pem"}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v, mode %v; want 0600", err, st.Mode())
	}
	e, _, _ := testEnv(t, nil, map[string]string{"HODEI_CONFIG": path})
	if addr, _, err := e.parseJobArgs("run", "", []string{"true"}, false); err != nil || addr != "127.0.0.1:7443" {
		t.Errorf("addr = %q, %v; want 127.0.0.1:7443 from the configuration file", addr, err)
	}
	e, _, _ = testEnv(t, nil, map[string]string{"HODEI_CONFIG": path, "HODEI_SERVER": "127.0.0.1:1"})
	if addr, _, err := e.parseJobArgs("run", "", []string{"true"}, false); err != nil || addr != "127.0.0.1:1" {
		t.Errorf("addr = %q, %v; want HODEI_SERVER to win over the file", addr, err)
	}
}

// TestBadConfigFileIsReported: a file that is not JSON is named in a
// warning and ignored.
func TestBadConfigFileIsReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte("server: x"), 0o600); err != nil {
		t.Fatal(err)
	}
	e, _, errOut := testEnv(t, nil, map[string]string{"HODEI_CONFIG": path})
	addr, _, err := e.parseJobArgs("run", "", []string{"true"}, false)
	if err != nil || addr != DefaultServer {
		t.Errorf("addr = %q, %v; want the default", addr, err)
	}
	if !strings.Contains(errOut.String(), path) {
		t.Errorf("stderr = %q, want the file named", errOut.String())
	}
}
