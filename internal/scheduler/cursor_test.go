package scheduler

import (
	"testing"

	"github.com/google/uuid"

	"github.com/hodei-dev/hodei/internal/store"
)

func pos(priority int32, b byte) store.Cursor {
	return store.Cursor{Priority: priority, ID: uuid.UUID{15: b}}
}

// TestCursors: a claim's cursor is kept unless a job its workers can run
// may have become ready before it; then it moves back just before that
// job, or is dropped.
func TestCursors(t *testing.T) {
	plain := store.WorkerMatch{}
	gpu := store.WorkerMatch{Labels: map[string]string{"gpu": "a100"}, Image: "cuda"}
	newCursors := func() *cursors { return &cursors{at: map[string]*cursor{}} }
	claim := func(c *cursors, key string, like store.WorkerMatch, stop store.Cursor) {
		_, epoch := c.get(key, like)
		c.advance(key, epoch, &stop)
	}
	at := func(c *cursors, key string) *store.Cursor {
		return c.at[key].at
	}
	same := func(got *store.Cursor, want store.Cursor) bool { return got != nil && *got == want }

	t.Run("a claim moves it to where it stopped", func(t *testing.T) {
		c := newCursors()
		from, _ := c.get("p", plain)
		if from != nil {
			t.Fatalf("a new kind of worker starts at %v, want the head", from)
		}
		claim(c, "p", plain, pos(3, 10))
		if got := at(c, "p"); !same(got, pos(3, 10)) {
			t.Fatalf("cursor %v, want the claim's last job", got)
		}
	})
	t.Run("a job created before it moves it back, for the workers that can run it", func(t *testing.T) {
		c := newCursors()
		claim(c, "p", plain, store.End)
		claim(c, "g", gpu, store.End)
		claim(c, "early", plain, pos(3, 4))
		c.ready(pos(3, 7), map[string]string{"gpu": "a100"}, "")
		if got := at(c, "g"); !same(got, pos(3, 6)) {
			t.Fatalf("gpu cursor %v, want just before the new job", got)
		}
		if got := at(c, "p"); !same(got, store.End) {
			t.Fatalf("plain cursor %v, want it at the end (plain workers cannot run the job)", got)
		}
		if got := at(c, "early"); !same(got, pos(3, 4)) {
			t.Fatalf("cursor %v, want it unchanged (the new job is after it)", got)
		}
		c.ready(pos(1, 0), nil, "other-image")
		if got := at(c, "p"); !same(got, store.End) {
			t.Fatalf("plain cursor %v, want it unchanged by a job of another image", got)
		}
		c.ready(pos(9, 200), nil, "")
		if got := at(c, "early"); !same(got, pos(9, 199)) {
			t.Fatalf("cursor %v, want it before a job of a higher priority", got)
		}
	})
	t.Run("a job created during a claim it passes", func(t *testing.T) {
		c := newCursors()
		_, epoch := c.get("p", plain)
		c.ready(pos(3, 9), nil, "")
		c.ready(pos(3, 7), nil, "")
		c.ready(pos(5, 20), map[string]string{"gpu": "a100"}, "") // not for these workers
		c.advance("p", epoch, &store.End)
		if got := at(c, "p"); !same(got, pos(3, 6)) {
			t.Fatalf("cursor %v, want just before the first job created during the claim", got)
		}
		// The next claim: jobs created before it began are visible to it.
		claim(c, "p", plain, pos(3, 30))
		if got := at(c, "p"); !same(got, pos(3, 30)) {
			t.Fatalf("cursor %v, want the claim's last job", got)
		}
	})
	t.Run("a recheck moves it back to the first job only when it is behind", func(t *testing.T) {
		c := newCursors()
		claim(c, "p", plain, pos(3, 10))
		claim(c, "g", gpu, store.End)
		if moved := c.lowerTo("p", pos(3, 12)); moved || !same(at(c, "p"), pos(3, 10)) {
			t.Fatalf("a first job after the cursor: moved %v, cursor %v; want it unchanged", moved, at(c, "p"))
		}
		if moved := c.lowerTo("p", pos(3, 5)); !moved || !same(at(c, "p"), pos(3, 4)) {
			t.Fatalf("a first job before the cursor: moved %v, cursor %v; want just before it", moved, at(c, "p"))
		}
		if got := c.set(); len(got) != 2 {
			t.Fatalf("cursors past the head: %v, want both", got)
		}
	})
	t.Run("a reset drops every cursor and the claim under way", func(t *testing.T) {
		c := newCursors()
		claim(c, "p", plain, pos(3, 10))
		_, epoch := c.get("g", gpu)
		c.reset()
		c.advance("g", epoch, &store.End)
		if p, g := at(c, "p"), at(c, "g"); p != nil || g != nil {
			t.Fatalf("after a reset: %v, %v, want both at the head", p, g)
		}
	})
}

func TestJustBeforeBorrows(t *testing.T) {
	got := store.Cursor{Priority: 2, ID: uuid.UUID{14: 1}}.JustBefore()
	if want := (store.Cursor{Priority: 2, ID: uuid.UUID{15: 0xff}}); got != want {
		t.Fatalf("JustBefore = %v, want %v", got, want)
	}
}
