package secret

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeyringSealsRotatesAndRefusesMisuse: a value opens only for the
// name and version it was sealed for; after a rotation and re-wrap it
// opens under the new key alone; bad key files are refused.
func TestKeyringSealsRotatesAndRefusesMisuse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	k, err := LoadKeyring(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v, want mode 0600", fi, err)
	}
	value := []byte("hunter2-hunter2")
	s, err := k.Seal("db", 1, value)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s.Ciphertext, value) || bytes.Contains(s.WrappedKey, value) {
		t.Fatal("sealed value holds the value")
	}
	if got, err := k.Open("db", 1, s); err != nil || !bytes.Equal(got, value) {
		t.Fatalf("open: %q %v", got, err)
	}
	for _, bad := range []struct {
		name    string
		version int32
	}{{"other", 1}, {"db", 2}} {
		if _, err := k.Open(bad.name, bad.version, s); err == nil {
			t.Errorf("value sealed for db v1 opened as %s v%d", bad.name, bad.version)
		}
	}
	old := k.Current()
	if _, err := k.Rotate(); err != nil {
		t.Fatal(err)
	}
	both, _ := os.ReadFile(path)
	if n := strings.Count(string(both), "\n"); n != 2 {
		t.Fatalf("key file during rotation has %d keys, want the new and the old", n)
	}
	s2, err := k.Rewrap("db", 1, s)
	if err != nil || s2.KeyID == old || !bytes.Equal(s2.Ciphertext, s.Ciphertext) {
		t.Fatalf("rewrap: %+v %v", s2, err)
	}
	if err := k.Retire(); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Open("db", 1, s); !errors.Is(err, ErrNoKey) {
		t.Errorf("open under the retired key: %v, want ErrNoKey", err)
	}
	reloaded, err := LoadKeyring(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := reloaded.Open("db", 1, s2); err != nil || !bytes.Equal(got, value) {
		t.Fatalf("open after reload: %q %v", got, err)
	}
	if c1, c2 := k.Canary(7), k.Canary(8); c1 == c2 || c1 != reloaded.Canary(7) || len(c1) < 20 {
		t.Errorf("canaries %q %q: want distinct per attempt, the same on every replica", c1, c2)
	}

	for content, want := range map[string]string{
		"":                              "holds no key",
		"k1 abc\n":                      "line 1",
		"K1 " + strings.Repeat("0", 64): "line 1",
	} {
		p := filepath.Join(t.TempDir(), "key")
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := LoadKeyring(p, false); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("key file %q: %v, want %q", content, err, want)
		}
	}
	loose := filepath.Join(t.TempDir(), "key")
	os.WriteFile(loose, []byte("k1 "+strings.Repeat("0", 64)+"\n"), 0o644)
	if _, err := LoadKeyring(loose, false); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("key file readable by others: %v, want refused", err)
	}
	if _, err := LoadKeyring(filepath.Join(t.TempDir(), "missing"), false); err == nil {
		t.Error("a missing key file was accepted without create")
	}
}

func TestValidateValue(t *testing.T) {
	for v, ok := range map[string]bool{"abc": false, "abcd": true, "ab\x00d": false, strings.Repeat("x", MaxValueBytes+1): false} {
		if err := ValidateValue([]byte(v)); (err == nil) != ok || err != nil && strings.Contains(err.Error(), v) {
			t.Errorf("%.10q: %v, want ok=%v and no value in the error", v, err, ok)
		}
	}
}

// TestKeyringRefusesTamperedValues: a value whose ciphertext or wrapped
// key was altered or cut short does not open, and the error says which
// part failed; a value under a key the file lacks cannot be re-wrapped.
func TestKeyringRefusesTamperedValues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	// Blank lines are allowed; the first key is the current one.
	file := "\n k1 " + strings.Repeat("1", 64) + "\n\nk2 " + strings.Repeat("2", 64) + "\n"
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := LoadKeyring(path, false)
	if err != nil || k.Current() != "k1" {
		t.Fatalf("keyring %v, %v; want k1 current", k, err)
	}
	s, err := k.Seal("db", 1, []byte("hunter2-hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte) []byte {
		b = bytes.Clone(b)
		b[len(b)-1] ^= 1
		return b
	}
	for _, c := range []struct {
		name string
		s    Sealed
		want string
	}{
		{"ciphertext altered", Sealed{KeyID: s.KeyID, WrappedKey: s.WrappedKey, Ciphertext: flip(s.Ciphertext)}, "open secret db"},
		{"ciphertext cut short", Sealed{KeyID: s.KeyID, WrappedKey: s.WrappedKey, Ciphertext: s.Ciphertext[:4]}, "too short"},
		{"wrapped key altered", Sealed{KeyID: s.KeyID, WrappedKey: flip(s.WrappedKey), Ciphertext: s.Ciphertext}, "open data key of secret db"},
	} {
		if _, err := k.Open("db", 1, c.s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := k.Rewrap("db", 1, Sealed{KeyID: s.KeyID, WrappedKey: flip(s.WrappedKey), Ciphertext: s.Ciphertext}); err == nil || !strings.Contains(err.Error(), "open data key") {
		t.Errorf("rewrap of an altered wrapped key: %v", err)
	}
	if _, err := k.Rewrap("db", 1, Sealed{KeyID: "k9", WrappedKey: s.WrappedKey, Ciphertext: s.Ciphertext}); !errors.Is(err, ErrNoKey) {
		t.Errorf("rewrap under an unknown key: %v, want ErrNoKey", err)
	}
}

// TestKeyringKeepsItsKeysWhenTheFileCannotBeWritten: a rotation or a
// retirement whose key file cannot be written fails and changes nothing:
// the current key stays, and values still open.
func TestKeyringKeepsItsKeysWhenTheFileCannotBeWritten(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	if _, err := LoadKeyring(filepath.Join(dir, "key"), true); err == nil {
		t.Error("a key file was created in a missing directory")
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	k, err := LoadKeyring(filepath.Join(dir, "key"), true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := k.Seal("db", 1, []byte("hunter2-hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	cur := k.Current()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Rotate(); err == nil || !strings.Contains(err.Error(), "write secret key file") {
		t.Errorf("rotate without a directory: %v", err)
	}
	if err := k.Retire(); err == nil {
		t.Error("retire without a directory succeeded")
	}
	if k.Current() != cur || len(k.keys) != 1 {
		t.Errorf("after failed writes: current %s of %d keys, want %s alone", k.Current(), len(k.keys), cur)
	}
	if v, err := k.Open("db", 1, s); err != nil || string(v) != "hunter2-hunter2" {
		t.Errorf("open after failed writes: %q, %v", v, err)
	}
}
