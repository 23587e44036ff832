package cli

import (
	"context"
	"errors"
	"testing"

	"connectrpc.com/connect"
)

// TestTransientErrors: a stream broken by the server (gone, reset, a
// cancelled stream while the command still runs) is re-opened; an answer
// (not found, refused) or the command's own end is not.
func TestTransientErrors(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	reset := connect.NewError(connect.CodeCanceled, errors.New("read tcp: connection reset by peer"))
	for _, c := range []struct {
		ctx  context.Context
		err  error
		want bool
	}{
		{live, connect.NewError(connect.CodeUnavailable, errors.New("connection refused")), true},
		{live, reset, true},
		{done, reset, false},
		{live, connect.NewError(connect.CodeNotFound, errors.New("no such job")), false},
		{live, connect.NewError(connect.CodePermissionDenied, errors.New("no")), false},
		{live, nil, false},
	} {
		if got := transient(c.ctx, c.err); got != c.want {
			t.Errorf("transient(ctx done: %v, %v) = %v, want %v", c.ctx.Err() != nil, c.err, got, c.want)
		}
	}
}
