package job

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoFiles lists the repository's tracked files with the given suffix,
// generated code excluded, as paths from the repository root.
func repoFiles(t *testing.T, suffixes ...string) (root string, files []string) {
	t.Helper()
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git checkout: %v", err)
	}
	root = strings.TrimSpace(string(out))
	out, err = exec.Command("git", "-C", root, "ls-files").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "api/gen/") || strings.HasPrefix(f, "internal/store/db/") {
			continue
		}
		for _, s := range suffixes {
			if strings.HasSuffix(f, s) {
				files = append(files, f)
				break
			}
		}
	}
	return root, files
}

// longFuncs may exceed maxFuncLines: each is a flat list (table cases,
// conformance subtests, wiring in order) that reads best in one piece.
var longFuncs = map[string]bool{
	"internal/cli/spec_test.go:TestParseJobArgs":                   true, // table of cases
	"internal/provider/providertest/suite.go:Run":                  true, // the conformance subtests in order
	"internal/eventbus/deadletter_test.go:TestDeadLetterAndReplay": true, // one scenario, step by step
}

const (
	maxFileLines = 600
	maxFuncLines = 100
)

// TestNoHubs: no hand-written Go file over maxFileLines lines and no
// function over maxFuncLines, but for the flat lists of longFuncs. A file
// that grows past it has more than one reason to change.
func TestNoHubs(t *testing.T) {
	if testing.Short() {
		t.Skip("parses the repository")
	}
	root, files := repoFiles(t, ".go")
	for _, f := range files {
		fs := token.NewFileSet()
		file, err := parser.ParseFile(fs, filepath.Join(root, f), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n := fs.File(file.Pos()).LineCount(); n > maxFileLines {
			t.Errorf("%s: %d lines, more than %d", f, n, maxFileLines)
		}
		for _, d := range file.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			n := fs.Position(fn.End()).Line - fs.Position(fn.Pos()).Line + 1
			if n > maxFuncLines && !longFuncs[f+":"+fn.Name.Name] {
				t.Errorf("%s: func %s is %d lines, more than %d", f, fn.Name.Name, n, maxFuncLines)
			}
		}
	}
}

// TestTextSpeaksOfTheProduct: no tracked text tells how the code was
// developed; history lives in git and in docs/performance.md by date and
// commit.
func TestTextSpeaksOfTheProduct(t *testing.T) {
	if testing.Short() {
		t.Skip("reads the repository")
	}
	banned := regexp.MustCompile(`(?i)\bsess[i]on [0-9]|th[i]s session|earlier in the sess[i]on|later [i]ssues?\b`)
	root, files := repoFiles(t, ".go", ".md", ".sh", ".proto", ".sql", ".yml", ".yaml", "Makefile", ".ci/run")
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if banned.MatchString(line) {
				t.Errorf("%s:%d: %s", f, i+1, strings.TrimSpace(line))
			}
		}
	}
}
