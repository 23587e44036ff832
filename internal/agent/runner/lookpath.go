//go:build unix

package runner

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// lookPath resolves file like a shell in the process's environment would:
// in env's PATH if it sets one, else in the caller's PATH. Relative PATH
// entries are ignored, as exec.LookPath refuses them too.
//
// Like a shell's command hash, it remembers where a name was found in a
// given PATH and returns that again without looking (remembered is then
// true): a caller that finds the file gone or no longer executable calls
// forgetPath and looks again. A newer file of the same name in an earlier
// PATH entry is not noticed (as in bash).
func lookPath(file string, env []string) (path string, remembered bool, err error) {
	if strings.Contains(file, "/") {
		return file, false, nil
	}
	pathList := searchPath(env)
	key := pathList + "\x00" + file
	if p, ok := pathHash.get(key); ok {
		return p, true, nil
	}
	for _, dir := range filepath.SplitList(pathList) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, file)
		if isExecutable(p) {
			pathHash.put(key, p)
			return p, false, nil
		}
	}
	return "", false, &exec.Error{Name: file, Err: exec.ErrNotFound}
}

// forgetPath drops what lookPath remembers for file in env.
func forgetPath(file string, env []string) { pathHash.del(searchPath(env) + "\x00" + file) }

// searchPath is the PATH a command is looked up in: env's, else ours.
func searchPath(env []string) string {
	if p, ok := envValue(env, "PATH"); ok {
		return p
	}
	return os.Getenv("PATH")
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// pathHash is lookPath's memory, bounded: when full it starts over.
var pathHash = hashTable{max: 1024}

type hashTable struct {
	mu  sync.Mutex
	m   map[string]string
	max int
}

func (h *hashTable) get(k string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.m[k]
	return v, ok
}

func (h *hashTable) del(k string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, k)
}

func (h *hashTable) put(k, v string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil || len(h.m) >= h.max {
		h.m = make(map[string]string)
	}
	h.m[k] = v
}
