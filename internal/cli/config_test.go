package cli

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hodei-dev/hodei/internal/pki"
)

// TestClientSettingsPrecedence: flags over the environment over the
// configuration file over the defaults.
func TestClientSettingsPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.json")
	if err := WriteConfig(cfg, ClientConfig{Server: "file.example:7070", Token: "hodei_file", CA: "file-ca"}); err != nil {
		t.Fatal(err)
	}
	if err := WriteConfig(filepath.Join(dir, "home", ".config", "hodei", "config.json"), ClientConfig{Server: "home.example:3"}); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("env-ca"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name               string
		vars               map[string]string
		args               []string
		addr, token, caPEM string
	}{
		{"defaults without a file", map[string]string{"HODEI_CONFIG": filepath.Join(dir, "none.json")}, nil, DefaultServer, "", ""},
		{"the file", map[string]string{"HODEI_CONFIG": cfg}, nil, "file.example:7070", "hodei_file", "file-ca"},
		{"the file under HOME", map[string]string{"HOME": dir + "/home"}, nil, "home.example:3", "", ""},
		{"environment over the file", map[string]string{"HODEI_CONFIG": cfg, "HODEI_SERVER": "env.example:1", "HODEI_TOKEN": "hodei_env", "HODEI_CA_FILE": ca},
			nil, "env.example:1", "hodei_env", "env-ca"},
		{"flags over the environment", map[string]string{"HODEI_CONFIG": cfg, "HODEI_SERVER": "env.example:1", "HODEI_TOKEN": "hodei_env"},
			[]string{"--server", "flag.example:2", "--token", "hodei_flag"}, "flag.example:2", "hodei_flag", "file-ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _, _ := testEnv(t, nil, tc.vars)
			addr, _, err := e.parseJobArgs("run", "", append(tc.args, "true"), false)
			if err != nil {
				t.Fatal(err)
			}
			c := e.dial(addr)
			defer c.close()
			got := []string{addr, c.http.Transport.(bearer).token, e.clientSettings().CA}
			if diff := cmp.Diff([]string{tc.addr, tc.token, tc.caPEM}, got); diff != "" {
				t.Errorf("addr, token, ca (-want +got):\n%s", diff)
			}
		})
	}
}

// TestConfigFileReadableByOthersIsRefused: a configuration file other
// users may read is a usage error naming the file and the fix.
func TestConfigFileReadableByOthersIsRefused(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.json")
	if err := WriteConfig(cfg, ClientConfig{Token: "hodei_x"}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	e, _, errOut := testEnv(t, nil, map[string]string{"HODEI_CONFIG": cfg})
	code := e.main(t.Context(), []string{"job", "get", "x"})
	if code != ExitUsage || !strings.Contains(errOut.String(), cfg) || !strings.Contains(errOut.String(), "chmod 600") {
		t.Fatalf("exit %d, stderr %q; want a usage error naming %s and chmod 600", code, errOut.String(), cfg)
	}
}

// TestWriteConfigIsPrivate: the file is 0600, its new directory 0700, and
// it reads back.
func TestWriteConfigIsPrivate(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "hodei", "config.json")
	want := ClientConfig{Server: "127.0.0.1:7070", CA: "-----BEGIN CERTIFICATE-----\n", Token: "hodei_abc"}
	if err := WriteConfig(cfg, want); err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]os.FileMode{cfg: 0o600, filepath.Dir(cfg): 0o700} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %04o, want %04o", path, fi.Mode().Perm(), mode)
		}
	}
	got, err := LoadConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("read back (-want +got):\n%s", diff)
	}
}

// TestHelpDoesNotPrintTheToken: -h lists --token without its value.
func TestHelpDoesNotPrintTheToken(t *testing.T) {
	e, out, _ := testEnv(t, nil, map[string]string{"HODEI_TOKEN": "hodei_secret-value"})
	if code := e.main(t.Context(), []string{"job", "get", "-h"}); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(out.String(), "-token") || strings.Contains(out.String(), "secret-value") {
		t.Errorf("help:\n%s\nwant --token listed without the token's value", out.String())
	}
}

// TestCAPrecedence: the server's certificate is verified against
// --ca-file, else HODEI_CA_FILE, else the configuration file's ca.
func TestCAPrecedence(t *testing.T) {
	dir := t.TempDir()
	var cas [3]*pki.CA
	for i := range cas {
		ca, err := pki.Ephemeral("CA " + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		cas[i] = ca
	}
	fromFile, fromEnv, fromFlag := cas[0], cas[1], cas[2]
	cfg := filepath.Join(dir, "config.json")
	if err := WriteConfig(cfg, ClientConfig{CA: string(fromFile.PEM)}); err != nil {
		t.Fatal(err)
	}
	envCA := filepath.Join(dir, "env.pem")
	if err := os.WriteFile(envCA, fromEnv.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		vars map[string]string
		args []string
		want *pki.CA
	}{
		{"the file", map[string]string{"HODEI_CONFIG": cfg}, nil, fromFile},
		{"environment over the file", map[string]string{"HODEI_CONFIG": cfg, "HODEI_CA_FILE": envCA}, nil, fromEnv},
		{"flag over the environment", map[string]string{"HODEI_CONFIG": cfg, "HODEI_CA_FILE": envCA}, []string{"--ca-file", "flag.pem"}, fromFlag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _, errOut := testEnv(t, map[string]string{"flag.pem": string(fromFlag.PEM)}, tc.vars)
			if _, _, err := e.parseJobArgs("run", "", append(tc.args, "true"), false); err != nil {
				t.Fatal(err)
			}
			want := x509.NewCertPool()
			want.AddCert(tc.want.Cert)
			if got := e.clientTLS().RootCAs; got == nil || !got.Equal(want) {
				t.Errorf("trusted roots are not %s's (stderr %q)", tc.want.Cert.Subject.CommonName, errOut.String())
			}
		})
	}
}

// TestBadConfigFileIsAUsageError: a configuration file that is not the
// expected JSON, or an unreadable HODEI_CA_FILE, ends any command with a
// usage error naming the file, before anything is sent.
func TestBadConfigFileIsAUsageError(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unknown := write("unknown.json", `{"server": "x:1", "tokne": "hodei_x"}`)
	notJSON := write("yaml.json", "server: x:1\n")
	asDir := filepath.Join(dir, "dir.json")
	if err := os.Mkdir(asDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"HODEI_CONFIG": unknown}, "client configuration " + unknown + `: json: unknown field "tokne" (want {"server": "host:port", "ca": "PEM", "token": "..."})`},
		{map[string]string{"HODEI_CONFIG": notJSON}, "client configuration " + notJSON + ": invalid character"},
		{map[string]string{"HODEI_CONFIG": asDir}, "client configuration " + asDir + ": read " + asDir + ": is a directory"},
		{map[string]string{"HODEI_CONFIG": filepath.Join(dir, "none.json"), "HODEI_CA_FILE": filepath.Join(dir, "ca.pem")}, "HODEI_CA_FILE: open " + filepath.Join(dir, "ca.pem")},
	} {
		e, out, errOut := testEnv(t, nil, tc.vars)
		if code := e.main(t.Context(), []string{"job", "list"}); code != ExitUsage || !strings.Contains(errOut.String(), tc.want) || out.Len() != 0 {
			t.Errorf("%v: exit %d, stderr %q; want a usage error with %q", tc.vars, code, errOut.String(), tc.want)
		}
	}
	if err := WriteConfig(filepath.Join(unknown, "config.json"), ClientConfig{}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("WriteConfig under a file: %v, want an error", err)
	}
}

// TestUnreadableCAFile: a --ca-file that cannot be read, or holds no
// certificate, is reported, and the system's roots are used instead (the
// server's certificate then fails to verify, which says what is wrong).
func TestUnreadableCAFile(t *testing.T) {
	for _, tc := range []struct {
		files map[string]string
		want  string
	}{
		{nil, "hodei: --ca-file: open ca.pem: file does not exist\n"},
		{map[string]string{"ca.pem": "not a PEM file"}, "hodei: the CA bundle holds no PEM certificate\n"},
	} {
		e, _, errOut := testEnv(t, tc.files, map[string]string{"HODEI_CONFIG": filepath.Join(t.TempDir(), "none.json")})
		if _, _, err := e.parseJobArgs("run", "", []string{"--ca-file", "ca.pem", "true"}, false); err != nil {
			t.Fatal(err)
		}
		if got := e.clientTLS().RootCAs; got != nil || errOut.String() != tc.want {
			t.Errorf("--ca-file with %v: roots %v, stderr %q; want the system's roots and %q", tc.files, got, errOut.String(), tc.want)
		}
	}
}
