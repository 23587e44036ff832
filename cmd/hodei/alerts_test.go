package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// registeredSeries are the hodei_* names the code registers (by
// prometheus Opts or NewDesc).
func registeredSeries(t *testing.T) map[string]bool {
	t.Helper()
	defined := map[string]bool{}
	nameRe := regexp.MustCompile(`(?:Name:\s+|NewDesc\()"(hodei_[a-z_]+)"`)
	err := filepath.WalkDir("../../internal", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		for _, m := range nameRe.FindAllStringSubmatch(string(b), -1) {
			defined[m[1]] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return defined
}

// TestAlertRulesUseRealMetrics: every hodei_* series an alert rule or a
// dashboard uses is a metric the code registers (histogram and summary
// suffixes allowed) and is documented in docs/metrics.md.
func TestAlertRulesUseRealMetrics(t *testing.T) {
	docs, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	defined := registeredSeries(t)
	files, err := filepath.Glob("../../deploy/grafana/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in deploy/grafana (%v)", err)
	}
	files = append(files, "../../deploy/prometheus/alerts.yml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		used := regexp.MustCompile(`hodei_[a-z_]+`).FindAllString(string(b), -1)
		if len(used) == 0 {
			t.Fatalf("no hodei metric in %s", f)
		}
		seen := map[string]bool{}
		for _, m := range used {
			base := m
			for _, suffix := range []string{"_sum", "_count", "_bucket"} {
				if b, ok := strings.CutSuffix(m, suffix); ok && defined[b] {
					base = b
				}
			}
			if seen[base] {
				continue
			}
			seen[base] = true
			if !defined[base] {
				t.Errorf("%s uses %s, which the code does not register", filepath.Base(f), m)
			}
			if !strings.Contains(string(docs), "`"+base) {
				t.Errorf("%s (in %s) is not documented in docs/metrics.md", base, filepath.Base(f))
			}
		}
	}
}
