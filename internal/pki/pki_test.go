package pki

import (
	"crypto"
	"strings"
	"testing"
	"time"
)

func mustCA(t *testing.T) *CA {
	t.Helper()
	ca, err := Ephemeral("test CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func issue(t *testing.T, ca *CA, key crypto.Signer, id string, from time.Time, ttl time.Duration) []byte {
	t.Helper()
	csr, err := NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.SignWorker(csr, id, from, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return EncodeCert(c)
}

// TestCheckWorkerCert: a worker takes only a certificate that chains to
// its bundle, names it, certifies its own key and is valid now.
func TestCheckWorkerCert(t *testing.T) {
	ca, other := mustCA(t), mustCA(t)
	key, otherKey := mustKey(t), mustKey(t)
	now := time.Now()
	for _, tc := range []struct {
		name    string
		cert    []byte
		wantErr string
	}{
		{"good", issue(t, ca, key, "w1", now, time.Hour), ""},
		{"another worker", issue(t, ca, key, "w2", now, time.Hour), `names worker "w2"`},
		{"another key", issue(t, ca, otherKey, "w1", now, time.Hour), "not for this worker's key"},
		{"another CA", issue(t, other, key, "w1", now, time.Hour), "does not verify"},
		{"expired", issue(t, ca, key, "w1", now.Add(-3*time.Hour), time.Hour), "does not verify"},
		{"not PEM", []byte("junk"), "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := CheckWorkerCert(tc.cert, key, ca.PEM, "w1", now)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tc.wantErr == "" && c.Leaf == nil:
				t.Fatal("no leaf")
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestParseCARefusesAMismatchedKey: a CA certificate with another key is
// an error that says so.
func TestParseCARefusesAMismatchedKey(t *testing.T) {
	ca := mustCA(t)
	k, err := EncodeKey(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseCA(ca.PEM, k); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("err = %v, want a mismatch", err)
	}
	own, err := EncodeKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseCA(ca.PEM, own); err != nil {
		t.Errorf("its own key: %v", err)
	}
}

// TestServerCertificateNamesItsHosts: IP addresses and names land in the
// right SANs, and the certificate serves, not authenticates clients.
func TestServerCertificateNamesItsHosts(t *testing.T) {
	ca := mustCA(t)
	c, err := ca.IssueServer([]string{"127.0.0.1", "::1", "localhost", "hodei.internal"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"127.0.0.1", "::1", "localhost", "hodei.internal"} {
		if err := c.Leaf.VerifyHostname(h); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	if err := c.Leaf.VerifyHostname("other.example"); err == nil {
		t.Error("names other.example")
	}
	if _, ok := WorkerID(c.Leaf); ok {
		t.Error("a server certificate names a worker")
	}
}
