package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDependencies keeps the CLI on the generated API: no other internal
// package, and only the libraries it is meant to use.
func TestDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := []string{
		"github.com/hodei-dev/hodei/internal/cli",
		"github.com/hodei-dev/hodei/api/gen/",
		"connectrpc.com/connect",
		"google.golang.org/protobuf/",
		"sigs.k8s.io/yaml",
		"go.yaml.in/yaml/",
	}
	for _, pkg := range strings.Fields(string(out)) {
		ok := false
		for _, prefix := range allowed {
			if pkg == strings.TrimSuffix(prefix, "/") || strings.HasPrefix(pkg, prefix) {
				ok = true
				break
			}
		}
		if !ok {
			t.Errorf("internal/cli depends on %s", pkg)
		}
	}
}

// TestNoEnvironment checks that the package reads the environment only
// through IO.Env.
func TestNoEnvironment(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, call := range []string{"os.Getenv(", "os.LookupEnv(", "os.Environ(", "os.ExpandEnv(", "ProxyFromEnvironment"} {
			if strings.Contains(string(src), call) {
				t.Errorf("%s uses %s; the environment comes only through IO.Env", name, call)
			}
		}
	}
}
