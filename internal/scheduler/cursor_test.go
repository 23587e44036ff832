package scheduler

import (
	"testing"

	"github.com/google/uuid"

	"github.com/hodei-dev/hodei/internal/store"
)

func id(b byte) uuid.UUID { return uuid.UUID{15: b} }

// TestCursors: a claim's cursor is kept unless a job may have become ready
// behind it; then it moves back before that job, or is dropped.
func TestCursors(t *testing.T) {
	at := func(c *cursors, key string) *store.Cursor {
		cur, _ := c.get(key)
		return cur
	}
	t.Run("advances after a claim", func(t *testing.T) {
		c := cursors{at: map[string]store.Cursor{}}
		from, epoch := c.get("a")
		if from != nil {
			t.Fatalf("a new kind of worker starts at %v, want the head", from)
		}
		c.advance("a", epoch, &store.Cursor{Priority: 3, ID: id(10)})
		if got := at(&c, "a"); got == nil || *got != (store.Cursor{Priority: 3, ID: id(10)}) {
			t.Fatalf("cursor %v, want the claim's last job", got)
		}
	})
	t.Run("a job created behind moves it back", func(t *testing.T) {
		c := cursors{at: map[string]store.Cursor{"a": {Priority: 3, ID: id(10)}, "b": {Priority: 3, ID: id(4)}}}
		c.created(id(7))
		if got := at(&c, "a"); got == nil || *got != (store.Cursor{Priority: 3, ID: id(6)}) {
			t.Fatalf("cursor a %v, want just before the new job", got)
		}
		if got := at(&c, "b"); got == nil || *got != (store.Cursor{Priority: 3, ID: id(4)}) {
			t.Fatalf("cursor b %v, want it unchanged (the new job is after it)", got)
		}
	})
	t.Run("a job created during a claim it passes", func(t *testing.T) {
		c := cursors{at: map[string]store.Cursor{}}
		_, epoch := c.get("a")
		c.created(id(7))
		c.created(id(9))
		c.advance("a", epoch, &store.Cursor{Priority: 3, ID: id(12)})
		if got := at(&c, "a"); got == nil || *got != (store.Cursor{Priority: 3, ID: id(6)}) {
			t.Fatalf("cursor %v, want just before the first job created during the claim", got)
		}
		// The next claim: jobs created before it began are visible to it.
		_, epoch = c.get("a")
		c.advance("a", epoch, &store.Cursor{Priority: 3, ID: id(20)})
		if got := at(&c, "a"); got == nil || got.ID != id(20) {
			t.Fatalf("cursor %v, want the claim's last job", got)
		}
	})
	t.Run("a reset drops every cursor and the claim under way", func(t *testing.T) {
		c := cursors{at: map[string]store.Cursor{"a": {Priority: 3, ID: id(10)}}}
		_, epoch := c.get("b")
		c.reset()
		c.advance("b", epoch, &store.Cursor{Priority: 3, ID: id(12)})
		if a, b := at(&c, "a"), at(&c, "b"); a != nil || b != nil {
			t.Fatalf("after a reset: a %v, b %v, want both at the head", a, b)
		}
	})
	t.Run("before borrows", func(t *testing.T) {
		if got, want := before(uuid.UUID{14: 1}), (uuid.UUID{15: 0xff}); got != want {
			t.Fatalf("before(%v) = %v, want %v", uuid.UUID{14: 1}, got, want)
		}
	})
}
