// Package secret holds what the server needs to keep secret values: the
// key-encryption keys (a Keyring read from a file that is not in the
// database), the AES-256-GCM envelope every stored value is sealed in,
// the rules for secret names and values, and the canary of an attempt.
//
// A value is sealed under a fresh data key; the data key is sealed under
// the keyring's current key-encryption key. Both seals are AES-256-GCM
// with random 96-bit nonces and bind the secret's name and version as
// additional data, so a sealed value copied onto another row does not
// open. Rotating the key re-seals the data keys only.
package secret

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// KeySize is the size of a key-encryption key and of a data key: AES-256.
const KeySize = 32

// ErrNoKey is returned when a sealed value names a key the keyring lacks.
var ErrNoKey = errors.New("key-encryption key not in the key file")

// Keyring is the key-encryption keys of a key file: the current one seals,
// any of them opens. Safe for concurrent use.
type Keyring struct {
	mu      sync.RWMutex
	path    string
	current string
	keys    map[string][]byte
}

// keyLine is one line of a key file: an id and 64 hex digits.
var keyLine = regexp.MustCompile(`^([a-z0-9]{1,32}) ([0-9a-f]{64})$`)

// LoadKeyring reads the key file at path: one key per line, "ID HEX"
// (the first line is the current key). With create, a missing file is
// created with one new random key, readable by its owner only.
func LoadKeyring(path string, create bool) (*Keyring, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		k := &Keyring{path: path, keys: map[string][]byte{}}
		id, key := newKey()
		k.current, k.keys[id] = id, key
		if err := k.write([]string{id}); err != nil {
			return nil, err
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secret key file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secret key file %s: mode %v lets others read it; chmod 600", path, fi.Mode().Perm())
	}
	k := &Keyring{path: path, keys: map[string][]byte{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		m := keyLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("secret key file %s: line %d: want \"ID HEX\" (an id of [a-z0-9] and 64 hex digits)", path, n)
		}
		key, _ := hex.DecodeString(m[2])
		if k.current == "" {
			k.current = m[1]
		}
		k.keys[m[1]] = key
	}
	if k.current == "" {
		return nil, fmt.Errorf("secret key file %s: holds no key", path)
	}
	return k, nil
}

func newKey() (string, []byte) {
	id := make([]byte, 4)
	rand.Read(id)
	key := make([]byte, KeySize)
	rand.Read(key)
	return hex.EncodeToString(id), key
}

// write writes the keys ids (the first current) to the file, atomically.
func (k *Keyring) write(ids []string) error {
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, "%s %s\n", id, hex.EncodeToString(k.keys[id]))
	}
	tmp := filepath.Join(filepath.Dir(k.path), "."+filepath.Base(k.path)+".tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write secret key file: %w", err)
	}
	if err := os.Rename(tmp, k.path); err != nil {
		return fmt.Errorf("write secret key file: %w", err)
	}
	return nil
}

// Current is the id of the key new values are sealed under.
func (k *Keyring) Current() string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current
}

// Rotate adds a new current key and writes the file with it first and the
// older keys after it, so that values sealed under either still open
// while they are re-sealed. It returns the new key's id.
func (k *Keyring) Rotate() (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	id, key := newKey()
	ids := []string{id}
	for old := range k.keys {
		ids = append(ids, old)
	}
	k.keys[id] = key
	if err := k.write(ids); err != nil {
		delete(k.keys, id)
		return "", err
	}
	k.current = id
	return id, nil
}

// Retire removes every key but the current one from the file and the
// keyring, once nothing is sealed under them.
func (k *Keyring) Retire() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.write([]string{k.current}); err != nil {
		return err
	}
	for id := range k.keys {
		if id != k.current {
			clear(k.keys[id])
			delete(k.keys, id)
		}
	}
	return nil
}

func (k *Keyring) key(id string) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	key, ok := k.keys[id]
	if !ok {
		return nil, fmt.Errorf("key %s: %w", id, ErrNoKey)
	}
	return key, nil
}

// Sealed is a value as stored: sealed under a data key, which is sealed
// under the key-encryption key KeyID. Neither holds anything in clear.
type Sealed struct {
	KeyID      string
	WrappedKey []byte // nonce || AES-GCM(KEK, data key)
	Ciphertext []byte // nonce || AES-GCM(data key, value)
}

// aad binds a seal to the secret's name and version.
func aad(name string, version int32) []byte {
	return fmt.Appendf(nil, "hodei-secret\x00%s\x00%d", name, version)
}

// Seal seals value for secret name at version under the current key.
func (k *Keyring) Seal(name string, version int32, value []byte) (Sealed, error) {
	id := k.Current()
	kek, err := k.key(id)
	if err != nil {
		return Sealed{}, err
	}
	dek := make([]byte, KeySize)
	rand.Read(dek)
	defer clear(dek)
	ad := aad(name, version)
	ct, err := gcmSeal(dek, value, ad)
	if err != nil {
		return Sealed{}, err
	}
	wrapped, err := gcmSeal(kek, dek, ad)
	if err != nil {
		return Sealed{}, err
	}
	return Sealed{KeyID: id, WrappedKey: wrapped, Ciphertext: ct}, nil
}

// Open returns the value of s, sealed for secret name at version.
func (k *Keyring) Open(name string, version int32, s Sealed) ([]byte, error) {
	kek, err := k.key(s.KeyID)
	if err != nil {
		return nil, err
	}
	ad := aad(name, version)
	dek, err := gcmOpen(kek, s.WrappedKey, ad)
	if err != nil {
		return nil, fmt.Errorf("open data key of secret %s: %w", name, err)
	}
	defer clear(dek)
	v, err := gcmOpen(dek, s.Ciphertext, ad)
	if err != nil {
		return nil, fmt.Errorf("open secret %s: %w", name, err)
	}
	return v, nil
}

// Rewrap re-seals the data key of s under the current key; the value's
// own ciphertext is unchanged.
func (k *Keyring) Rewrap(name string, version int32, s Sealed) (Sealed, error) {
	kek, err := k.key(s.KeyID)
	if err != nil {
		return Sealed{}, err
	}
	ad := aad(name, version)
	dek, err := gcmOpen(kek, s.WrappedKey, ad)
	if err != nil {
		return Sealed{}, fmt.Errorf("open data key of secret %s: %w", name, err)
	}
	defer clear(dek)
	id := k.Current()
	cur, err := k.key(id)
	if err != nil {
		return Sealed{}, err
	}
	wrapped, err := gcmSeal(cur, dek, ad)
	if err != nil {
		return Sealed{}, err
	}
	return Sealed{KeyID: id, WrappedKey: wrapped, Ciphertext: s.Ciphertext}, nil
}

// Canary is the canary value of the attempt with fencing token token: a
// value derived from the current key that no job is given, so any replica
// can tell it without storing it. It is 24 characters of base64url.
func (k *Keyring) Canary(token int64) string {
	kek, err := k.key(k.Current())
	if err != nil {
		return ""
	}
	m := hmac.New(sha256.New, kek)
	fmt.Fprintf(m, "hodei-canary\x00%d", token)
	return "hc_" + base64.RawURLEncoding.EncodeToString(m.Sum(nil))[:21]
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func gcmSeal(key, plain, ad []byte) ([]byte, error) {
	g, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize(), g.NonceSize()+len(plain)+g.Overhead())
	rand.Read(nonce)
	return g.Seal(nonce, nonce, plain, ad), nil
}

func gcmOpen(key, sealed, ad []byte) ([]byte, error) {
	g, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < g.NonceSize() {
		return nil, errors.New("sealed value too short")
	}
	return g.Open(nil, sealed[:g.NonceSize()], sealed[g.NonceSize():], ad)
}
