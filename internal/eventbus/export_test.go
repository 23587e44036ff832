package eventbus

import (
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hodei-dev/hodei/internal/store/db"
)

// BusQueries is the bus's way of running its queries, over pool.
func BusQueries(pool *pgxpool.Pool) *db.Queries { return db.New(indexOnly{pool}) }
