package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestAlertRulesUseRealMetrics: every hodei_* series an alert rule uses is
// a metric the code registers (histogram suffixes allowed) and is
// documented in docs/metrics.md.
func TestAlertRulesUseRealMetrics(t *testing.T) {
	rules, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	docs, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	nameRe := regexp.MustCompile(`Name:\s+"(hodei_[a-z_]+)"`)
	err = filepath.WalkDir("../../internal", func(path string, d os.DirEntry, err error) error {
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
	used := regexp.MustCompile(`hodei_[a-z_]+`).FindAllString(string(rules), -1)
	if len(used) == 0 {
		t.Fatal("no hodei metric in the alert rules")
	}
	for _, m := range used {
		base := m
		for _, suffix := range []string{"_sum", "_count", "_bucket"} {
			if b, ok := strings.CutSuffix(m, suffix); ok && defined[b] {
				base = b
			}
		}
		if !defined[base] {
			t.Errorf("alert rules use %s, which the code does not register", m)
		}
		if !strings.Contains(string(docs), "`"+base) {
			t.Errorf("%s is not documented in docs/metrics.md", base)
		}
	}
}
