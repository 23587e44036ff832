package store_test

import (
	"github.com/google/uuid"

	"github.com/hodei-dev/hodei/internal/store"
)

// jid is the job id of an assignment, as reports name it.
func jid(a store.Assignment) uuid.UUID { return uuid.MustParse(a.JobID) }
