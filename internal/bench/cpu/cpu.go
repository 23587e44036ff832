// Package cpu reads the CPU time a benchmark and the PostgreSQL it started
// have used, from /proc.
package cpu

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// Use is CPU time (user + system) used so far: by this process, by its
// children that have exited (job processes), and by the PostgreSQL this
// process started (the postmaster, its live children, and its children
// that have exited, such as autovacuum workers).
type Use struct{ Self, Children, Postgres time.Duration }

// Sub returns the CPU used between v and u.
func (u Use) Sub(v Use) Use {
	return Use{u.Self - v.Self, u.Children - v.Children, u.Postgres - v.Postgres}
}

// procStat is what Now reads from /proc/<pid>/stat.
type procStat struct {
	comm           string
	ppid           int
	cpu, exitedCPU time.Duration // its own; its reaped children's
}

func readStat(pid string) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || end+2 > len(s) {
		return procStat{}, false
	}
	f := strings.Fields(s[end+2:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return procStat{}, false
	}
	ticks := func(fields ...string) time.Duration {
		var t int64
		for _, v := range fields {
			n, _ := strconv.ParseInt(v, 10, 64)
			t += n
		}
		return time.Duration(t) * 10 * time.Millisecond // USER_HZ = 100
	}
	ppid, _ := strconv.Atoi(f[1])
	// utime, stime, cutime, cstime are fields 14-17: f[11..14].
	return procStat{comm: s[open+1 : end], ppid: ppid, cpu: ticks(f[11], f[12]), exitedCPU: ticks(f[13], f[14])}, true
}

// Now reads the CPU used so far from /proc (Linux).
func Now() Use {
	var u Use
	if st, ok := readStat("self"); ok {
		u.Self, u.Children = st.cpu, st.exitedCPU
	}
	pg := map[int]procStat{}
	ds, _ := os.ReadDir("/proc")
	for _, d := range ds {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(d.Name()); ok && st.comm == "postgres" {
			pg[pid] = st
		}
	}
	me := os.Getpid()
	for _, p := range pg {
		switch {
		case p.ppid == me: // the postmaster
			u.Postgres += p.cpu + p.exitedCPU
		case pg[p.ppid].ppid == me: // a backend or auxiliary process
			u.Postgres += p.cpu
		}
	}
	return u
}
