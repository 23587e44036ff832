package store

import "time"

// SetCreateHook lets tests inject failures inside CreateJob's transaction.
func SetCreateHook(s *Store, f func(stage string) error) { s.createHook = f }

// MigrateTo applies the migrations up to version last.
var MigrateTo = migrateTo

// SetNow replaces the store's clock.
func SetNow(s *Store, now func() time.Time) { s.now = now }
