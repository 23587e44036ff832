package server

import (
	"errors"

	"connectrpc.com/connect"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
)

// connectError maps domain errors to RPC codes: the one place that does.
func connectError(err error) error {
	var fe *job.FieldError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return connect.NewError(connect.CodeInvalidArgument, fe)
	case errors.Is(err, job.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, job.ErrConflict):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, job.ErrStale):
		return connect.NewError(connect.CodeAborted, err)
	case errors.Is(err, store.ErrUnauthenticated):
		return connect.NewError(connect.CodeUnauthenticated, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}
