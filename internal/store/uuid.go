package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// registerUUID teaches a connection to send uuid.UUID (and slices of it)
// as the 16 bytes they are. Without it pgx falls back to the type's
// driver.Valuer, which formats a string per value and has PostgreSQL parse
// it back: a visible share of the CPU of every claim and report batch.
func registerUUID(_ context.Context, c *pgx.Conn) error {
	m := c.TypeMap()
	m.TryWrapEncodePlanFuncs = append([]pgtype.TryWrapEncodePlanFunc{tryWrapUUID}, m.TryWrapEncodePlanFuncs...)
	return nil
}

func tryWrapUUID(value any) (pgtype.WrappedEncodePlanNextSetter, any, bool) {
	if u, ok := value.(uuid.UUID); ok {
		return &uuidPlan{}, [16]byte(u), true
	}
	return nil, nil, false
}

type uuidPlan struct{ next pgtype.EncodePlan }

func (p *uuidPlan) SetNext(next pgtype.EncodePlan) { p.next = next }

func (p *uuidPlan) Encode(value any, buf []byte) ([]byte, error) {
	return p.next.Encode([16]byte(value.(uuid.UUID)), buf)
}

// jobIDs hands out the ids of new jobs: UUIDv7s (RFC 9562) whose time is
// the millisecond of the jobs' created_at, so that the primary key orders
// jobs by creation and bounds a filter on it (jobs have no index of their
// own on created_at: it cost an entry at every write of a job row). Within
// a process they increase in the order handed out (dispatch is priority,
// then id: FIFO): the 48-bit millisecond is followed by a 42-bit counter,
// started at a random value below 2^41 in each new millisecond, and 32
// random bits.
type jobIDs struct {
	mu  sync.Mutex
	ms  int64
	seq uint64
}

// next returns the creation time to record for n new jobs (now, or the
// latest millisecond handed out if the clock went back) and their ids.
func (g *jobIDs) next(now time.Time, n int) (time.Time, []uuid.UUID) {
	random := make([]byte, 4*n+8)
	if _, err := rand.Read(random); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch ms := now.UnixMilli(); {
	case ms > g.ms:
		g.ms, g.seq = ms, binary.BigEndian.Uint64(random[4*n:])>>23 // below 2^41
	case ms < g.ms:
		now = time.UnixMilli(g.ms).UTC()
	}
	ids := make([]uuid.UUID, n)
	for i := range ids {
		g.seq++
		ids[i] = uuidV7(g.ms, g.seq, random[4*i:4*i+4])
	}
	return now, ids
}

// uuidV7 lays out a UUIDv7: ms, version 7, seq's 12 high bits (of 42), the
// variant, seq's 30 low bits, 32 random bits.
func uuidV7(ms int64, seq uint64, random []byte) uuid.UUID {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[0:8], uint64(ms)<<16)
	u[6] = 0x70 | byte(seq>>38)&0x0f
	u[7] = byte(seq >> 30)
	u[8] = 0x80 | byte(seq>>24)&0x3f
	u[9], u[10], u[11] = byte(seq>>16), byte(seq>>8), byte(seq)
	copy(u[12:], random)
	return u
}

// uuidV7Floor is the least UUIDv7 of millisecond ms.
func uuidV7Floor(ms int64) uuid.UUID {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[0:8], uint64(ms)<<16)
	return u
}
