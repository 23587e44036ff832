package server

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/secret"
	"github.com/hodei-dev/hodei/internal/store"
)

// SecretAccess decides who may use which secret. The server asks it at
// every submission that references secrets and records Actor in the audit
// trail. The default (tokenSecretAccess) asks the call's API token for the
// secrets:use scope.
type SecretAccess interface {
	// MayUseSecret returns nil when the caller of ctx may reference the
	// secret name in a job, else an error saying why (a connect error
	// keeps its code; any other is PermissionDenied).
	MayUseSecret(ctx context.Context, name string) error
	// Actor is the identity of the caller of ctx, for the audit trail.
	Actor(ctx context.Context) string
}

// tokenSecretAccess lets a call use secrets when its API token has the
// secrets:use scope (admin has every scope); the actor is the token's
// name. A context without a token is not an API call (the server's own
// work): it may.
type tokenSecretAccess struct{}

func (tokenSecretAccess) MayUseSecret(ctx context.Context, name string) error {
	t, _ := ctx.Value(callerKey{}).(*cachedToken)
	if t == nil || auth.Allows(t.scopes, auth.SecretsUse) {
		return nil
	}
	return connect.NewError(connect.CodePermissionDenied,
		fmt.Errorf("token %q may not use secrets: it needs the %s scope", t.name, auth.SecretsUse))
}

func (tokenSecretAccess) Actor(ctx context.Context) string { return caller(ctx) }

// errNoSecretKey is the answer of every secret call on a server without a
// key file.
var errNoSecretKey = connect.NewError(connect.CodeFailedPrecondition, errors.New("secrets are off: the server has no --secret-key-file"))

// secretService stores secrets; no call returns a value.
type secretService struct{ s *Server }

func secretToProto(x store.Secret) *hodeiv1.Secret {
	return &hodeiv1.Secret{Name: x.Name, Version: x.Version, CreatedAt: timestamppb.New(x.CreatedAt), UpdatedAt: timestamppb.New(x.UpdatedAt), UpdatedBy: x.UpdatedBy}
}

func (h secretService) SetSecret(ctx context.Context, req *connect.Request[hodeiv1.SetSecretRequest]) (*connect.Response[hodeiv1.SetSecretResponse], error) {
	keys := h.s.cfg.SecretKeys
	if keys == nil {
		return nil, errNoSecretKey
	}
	name, value := req.Msg.Name, req.Msg.Value
	defer clear(value)
	if err := job.ValidateSecretName("name", name); err != nil {
		return nil, connectError(err)
	}
	if err := secret.ValidateValue(value); err != nil {
		return nil, connectError(&job.FieldError{Field: "value", Rule: err.Error()})
	}
	x, err := h.s.store.SetSecret(ctx, name, h.s.access.Actor(ctx), func(v int32) (secret.Sealed, error) { return keys.Seal(name, v, value) })
	if err != nil {
		return nil, connectError(err)
	}
	h.s.metrics.secretAccesses.WithLabelValues(store.AuditSet).Inc()
	h.s.log.Info("secret set", "secret", name, "version", x.Version)
	return connect.NewResponse(&hodeiv1.SetSecretResponse{Secret: secretToProto(x)}), nil
}

func (h secretService) ListSecrets(ctx context.Context, _ *connect.Request[hodeiv1.ListSecretsRequest]) (*connect.Response[hodeiv1.ListSecretsResponse], error) {
	xs, err := h.s.store.ListSecrets(ctx)
	if err != nil {
		return nil, connectError(err)
	}
	resp := &hodeiv1.ListSecretsResponse{}
	for _, x := range xs {
		resp.Secrets = append(resp.Secrets, secretToProto(x))
	}
	return connect.NewResponse(resp), nil
}

func (h secretService) DeleteSecret(ctx context.Context, req *connect.Request[hodeiv1.DeleteSecretRequest]) (*connect.Response[hodeiv1.DeleteSecretResponse], error) {
	if err := h.s.store.DeleteSecret(ctx, req.Msg.Name, h.s.access.Actor(ctx)); err != nil {
		return nil, connectError(err)
	}
	h.s.metrics.secretAccesses.WithLabelValues(store.AuditDelete).Inc()
	h.s.log.Info("secret deleted", "secret", req.Msg.Name)
	return connect.NewResponse(&hodeiv1.DeleteSecretResponse{}), nil
}

func (h secretService) RotateSecretKey(ctx context.Context, _ *connect.Request[hodeiv1.RotateSecretKeyRequest]) (*connect.Response[hodeiv1.RotateSecretKeyResponse], error) {
	keys := h.s.cfg.SecretKeys
	if keys == nil {
		return nil, errNoSecretKey
	}
	// The new key is written to the file first, next to the old ones, so
	// that a crash between here and the commit leaves every value
	// openable; the old keys are retired once all are re-sealed.
	id, err := keys.Rotate()
	if err != nil {
		return nil, connectError(err)
	}
	n, err := h.s.store.RewrapSecrets(ctx, h.s.access.Actor(ctx), func(x store.SealedSecret) (secret.Sealed, error) {
		return keys.Rewrap(x.Name, x.Version, x.Sealed)
	})
	if err != nil {
		return nil, connectError(err)
	}
	if err := keys.Retire(); err != nil {
		return nil, connectError(err)
	}
	h.s.metrics.secretAccesses.WithLabelValues(store.AuditRotateKey).Add(float64(n))
	h.s.log.Info("secret key rotated", "key_id", id, "secrets", n)
	return connect.NewResponse(&hodeiv1.RotateSecretKeyResponse{KeyId: id, Secrets: int32(n)}), nil
}

func (h secretService) ListSecretAudit(ctx context.Context, req *connect.Request[hodeiv1.ListSecretAuditRequest]) (*connect.Response[hodeiv1.ListSecretAuditResponse], error) {
	if err := job.ValidateSecretName("name", req.Msg.Name); err != nil {
		return nil, connectError(err)
	}
	limit := req.Msg.Limit
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > 1000:
		return nil, connectError(&job.FieldError{Field: "limit", Rule: fmt.Sprintf("must be between 0 (default 100) and 1000, got %d", limit)})
	}
	as, err := h.s.store.ListSecretAudit(ctx, req.Msg.Name, limit)
	if err != nil {
		return nil, connectError(err)
	}
	resp := &hodeiv1.ListSecretAuditResponse{}
	for _, a := range as {
		resp.Entries = append(resp.Entries, &hodeiv1.SecretAuditEntry{Time: timestamppb.New(a.At), Name: a.Name, Operation: a.Operation,
			Version: a.Version, JobId: a.JobID, Attempt: a.Attempt, WorkerId: a.WorkerID, Actor: a.Actor})
	}
	return connect.NewResponse(resp), nil
}

// checkSecrets refuses specs that reference secrets the caller may not
// use or that do not exist, naming the field. Specs without secrets cost
// nothing.
func (s *Server) checkSecrets(ctx context.Context, specs []job.Spec, field func(i int) string) error {
	var names []string
	for i := range specs {
		sp := &specs[i]
		if len(sp.Secrets) == 0 {
			continue
		}
		if s.cfg.SecretKeys == nil {
			return errNoSecretKey
		}
		if err := sp.Validate(); err != nil {
			var fe *job.FieldError
			if errors.As(err, &fe) {
				return connectError(&job.FieldError{Field: field(i) + fe.Field, Rule: fe.Rule})
			}
			return connectError(err)
		}
		for k, r := range sp.Secrets {
			if err := s.access.MayUseSecret(ctx, r.Name); err != nil {
				if ce := new(connect.Error); errors.As(err, &ce) {
					return err
				}
				return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%ssecrets[%d]: %w", field(i), k, err))
			}
			names = append(names, r.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	missing, err := s.store.MissingSecrets(ctx, names)
	if err != nil {
		return connectError(err)
	}
	if len(missing) > 0 {
		for i := range specs {
			for k, r := range specs[i].Secrets {
				if r.Name == missing[0] {
					return connectError(&job.FieldError{Field: fmt.Sprintf("%ssecrets[%d].name", field(i), k), Rule: fmt.Sprintf("no secret is named %q", r.Name)})
				}
			}
		}
	}
	return nil
}
