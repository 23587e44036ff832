package job

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/hodei-dev/hodei/"

// deps lists the non-standard packages pkg depends on.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", module+pkg).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// TestImportRules keeps the layering: the domain imports nothing of
// ours, and its proto mapping nothing of the store, the server or the bus;
// the agent never touches the database, the bus or the server; providers
// do not import each other; the event bus knows nothing of the server, the
// scheduler or the domain; the scheduler and the server do not import each
// other, nor the server the autoscaler; the dashboard imports nothing of
// ours.
func TestImportRules(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	for _, rule := range []struct {
		pkg       string
		forbidden []string
	}{
		{"internal/job", []string{module}},
		{"internal/jobpb", []string{module + "internal/store", module + "internal/server", module + "internal/eventbus"}},
		{"internal/agent", []string{module + "internal/store", module + "internal/eventbus", module + "internal/server", "github.com/jackc/pgx"}},
		{"internal/provider/process", []string{module + "internal/provider/docker", module + "internal/provider/kubernetes"}},
		{"internal/provider/docker", []string{module + "internal/provider/process", module + "internal/provider/kubernetes"}},
		{"internal/provider/kubernetes", []string{module + "internal/provider/process", module + "internal/provider/docker", module + "internal/store"}},
		// The test cluster and node are scaffolding: no provider runs on them.
		{"internal/provider/kubernetes/kubetest", []string{module + "internal/provider/", module + "internal/store"}},
		{"internal/eventbus", []string{module + "internal/server", module + "internal/scheduler", module + "internal/job"}},
		// Dispatch declares what it needs of the worker streams; cmd wires
		// the server's worker set into it.
		{"internal/scheduler", []string{module + "internal/server"}},
		{"internal/server", []string{module + "internal/autoscale", module + "internal/scheduler"}},
		// The dashboard reaches the API only over HTTP, as a browser does.
		{"internal/web", []string{module}},
		// Tracing is a leaf every component may use.
		{"internal/tracing", []string{module}},
	} {
		for _, d := range deps(t, rule.pkg) {
			if d == module+rule.pkg {
				continue
			}
			for _, f := range rule.forbidden {
				if strings.HasPrefix(d, f) {
					t.Errorf("%s depends on %s", rule.pkg, d)
				}
			}
		}
	}
}

// TestEveryPackageIsDocumented: each package has a doc comment.
func TestEveryPackageIsDocumented(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{.Doc}}", module+"...").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, doc, _ := strings.Cut(line, "\t")
		if doc == "" && !strings.Contains(pkg, "/api/gen/") && !strings.HasSuffix(pkg, "/store/db") {
			t.Errorf("package %s has no doc comment", pkg)
		}
	}
}
