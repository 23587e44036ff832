package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ClientConfig is the client configuration file: where the server is,
// the PEM bundle of the CAs its certificate chains to, and the API token
// calls carry. `hodei dev` writes it; HODEI_SERVER, HODEI_CA_FILE,
// HODEI_TOKEN and the flags --server and --token override its fields.
type ClientConfig struct {
	Server string `json:"server,omitempty"`
	CA     string `json:"ca,omitempty"`
	Token  string `json:"token,omitempty"`
}

// ConfigPath is the client configuration file: HODEI_CONFIG, else
// $HOME/.config/hodei/config.json; "" when neither is set. env looks
// variables up.
func ConfigPath(env func(string) string) string {
	if p := env("HODEI_CONFIG"); p != "" {
		return p
	}
	if home := env("HOME"); home != "" {
		return filepath.Join(home, ".config", "hodei", "config.json")
	}
	return ""
}

// LoadConfig reads the configuration file at path; a missing file is an
// empty configuration. A file that users other than its owner may read
// or write is refused: it holds a token.
func LoadConfig(path string) (ClientConfig, error) {
	var c ClientConfig
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("client configuration %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return c, fmt.Errorf("client configuration %s: %w", path, err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return c, fmt.Errorf("client configuration %s: mode %04o lets other users read or change it, and it holds an API token: run chmod 600 %s", path, m, path)
	}
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("client configuration %s: %w (want {\"server\": \"host:port\", \"ca\": \"PEM\", \"token\": \"...\"})", path, err)
	}
	return c, nil
}

// WriteConfig writes c to path with mode 0600 (its directory 0700 when
// it creates it), replacing the file at once.
func WriteConfig(path string, c ClientConfig) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("client configuration: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.json")
	if err != nil {
		return fmt.Errorf("client configuration: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600; Chmod keeps it so whatever the umask.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("client configuration: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("client configuration: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("client configuration: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("client configuration: %w", err)
	}
	return nil
}

// clientSettings are the configuration file's fields with the
// environment applied over them; the flags apply over these.
func (e *env) clientSettings() ClientConfig {
	if e.settings != nil {
		return *e.settings
	}
	var c ClientConfig
	if path := ConfigPath(e.Env); path != "" {
		var err error
		if c, err = LoadConfig(path); err != nil && e.envErr == nil {
			e.envErr = err
		}
	}
	if v := e.Env("HODEI_SERVER"); v != "" {
		c.Server = v
	}
	if v := e.Env("HODEI_TOKEN"); v != "" {
		c.Token = v
	}
	if p := e.Env("HODEI_CA_FILE"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil && e.envErr == nil {
			e.envErr = fmt.Errorf("HODEI_CA_FILE: %w", err)
		}
		c.CA = string(b)
	}
	c.Token = strings.TrimSpace(c.Token)
	e.settings = &c
	return c
}
