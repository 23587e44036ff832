package pgembed

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const defaultOSUser = "postgres"

// osUser is the unprivileged account initdb and postgres run as when the
// current process is root.
type osUser struct {
	name     string
	uid, gid uint32
}

func (u *osUser) credential() *syscall.Credential {
	// Groups is empty on purpose: the child gets no supplementary groups.
	return &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{}}
}

// lookupOrCreateUser resolves name, creating it as a system account without
// a home directory when it does not exist.
func lookupOrCreateUser(ctx context.Context, name string, log *slog.Logger) (*osUser, error) {
	u, err := lookupUser(name)
	if err == nil {
		return u, nil
	}
	var unknown user.UnknownUserError
	if !errors.As(err, &unknown) {
		return nil, err
	}

	log.Info("creating os user for postgres", slog.String("user", name))
	attempts := [][]string{
		{"useradd", "--system", "--no-create-home", name},
		{"adduser", "--system", "--no-create-home", "--group", name}, // Debian adduser
		{"adduser", "-S", "-H", "-D", name},                          // BusyBox adduser
	}
	var errs []error
	for _, argv := range attempts {
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w: %s", argv[0], err, strings.TrimSpace(string(out))))
		}
		// Re-check even on failure: a concurrent Start may have created it.
		if u, lerr := lookupUser(name); lerr == nil {
			return u, nil
		}
		if err == nil {
			break
		}
	}
	return nil, fmt.Errorf("create os user %q: %w", name, errors.Join(errs...))
}

func lookupUser(name string) (*osUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("look up os user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("os user %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("os user %q: gid %q: %w", name, u.Gid, err)
	}
	if uid == 0 {
		return nil, fmt.Errorf("os user %q is root; postgres refuses to run as root", name)
	}
	return &osUser{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
}

// chownTree gives every file under root to u, skipping the walk when root
// is already owned by u.
func chownTree(root string, u *osUser) error {
	if owned(root, u) {
		return nil
	}
	err := filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(u.uid), int(u.gid))
	})
	if err != nil {
		return fmt.Errorf("chown %s: %w", root, err)
	}
	return nil
}

func owned(path string, u *osUser) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == u.uid && st.Gid == u.gid
}

// checkTraversable reports an error when u cannot reach dir because one of
// its ancestors lacks search permission for u. It looks at mode bits only
// (no ACLs), which matches what postgres will hit in practice.
func checkTraversable(dir string, u *osUser) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		perm := fi.Mode().Perm()
		var can bool
		switch {
		case st.Uid == u.uid:
			can = perm&0o100 != 0
		case st.Gid == u.gid:
			can = perm&0o010 != 0
		default:
			can = perm&0o001 != 0
		}
		if !can {
			return fmt.Errorf("directory %s (mode %v) is not searchable by os user %q; chmod o+x it or use another DataDir", p, perm, u.name)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
