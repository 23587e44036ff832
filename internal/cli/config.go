package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Config is the client configuration file: the server's address, the
// trust bundle its certificate chains to (PEM) and an API token.
// HODEI_SERVER, HODEI_CA_FILE, HODEI_TOKEN and flags override it.
type Config struct {
	Server string `json:"server,omitempty"`
	CA     string `json:"ca,omitempty"`
	Token  string `json:"token,omitempty"`
}

// ConfigPath is where the configuration file is: HODEI_CONFIG, else
// ~/.config/hodei/config.json ("" when there is no home either).
func ConfigPath(getenv func(string) string) string {
	if p := getenv("HODEI_CONFIG"); p != "" {
		return p
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "hodei", "config.json")
	}
	return ""
}

// LoadConfig reads the configuration file at path; a missing file is an
// empty configuration.
func LoadConfig(path string) (Config, error) {
	var c Config
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// SaveConfig writes c to path (mode 0600, its directory 0700), replacing
// it atomically.
func SaveConfig(path string, c Config) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// config is the configuration file of this process's environment; a bad
// file is reported once and ignored.
func (e *env) config() Config {
	if e.cfg != nil {
		return *e.cfg
	}
	c, err := LoadConfig(ConfigPath(e.Env))
	if err != nil {
		fmt.Fprintf(e.Err, "hodei: ignoring the configuration file: %v\n", err)
	}
	e.cfg = &c
	return c
}
