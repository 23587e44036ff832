package eventbus

import "github.com/hodei-dev/hodei/internal/store/db"

// BusQueries is the bus's way of running its queries, over d.
func BusQueries(d db.DBTX) *db.Queries { return db.New(plannedEachTime{d}) }
