package testbin

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

var hodeiBin string

func TestMain(m *testing.M) { os.Exit(Main(m, &hodeiBin, (*testing.M).Run)) }

// TestBinary: the binary Main gives is hodei's, and static.
func TestBinary(t *testing.T) {
	out, err := exec.Command(hodeiBin, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", hodeiBin, err)
	}
	if !strings.HasPrefix(string(out), "hodei ") {
		t.Errorf("%s version printed %q", hodeiBin, out)
	}
	if !isStatic(hodeiBin) {
		t.Errorf("%s is not static", hodeiBin)
	}
	if isStatic("/bin/sh") {
		t.Error("/bin/sh taken for a static binary")
	}
}
