package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/store"
)

// procedureScopes is the scope every procedure of the API needs: the one
// table of who may call what. A procedure missing here is refused to
// everyone (and fails TestEveryProcedureHasAScope). WorkerService is not
// here: workers authenticate with their own credentials (tokenFree).
var procedureScopes = map[string]auth.Scope{
	hodeiv1connect.JobServiceSubmitJobProcedure:      auth.JobsWrite,
	hodeiv1connect.JobServiceSubmitJobsProcedure:     auth.JobsWrite,
	hodeiv1connect.JobServiceCancelJobProcedure:      auth.JobsWrite,
	hodeiv1connect.JobServiceRetryJobProcedure:       auth.JobsWrite,
	hodeiv1connect.JobServiceGetJobProcedure:         auth.JobsRead,
	hodeiv1connect.JobServiceListJobsProcedure:       auth.JobsRead,
	hodeiv1connect.JobServiceWatchJobProcedure:       auth.JobsRead,
	hodeiv1connect.JobServiceGetJobLogsProcedure:     auth.JobsRead,
	hodeiv1connect.JobServiceExplainJobProcedure:     auth.JobsRead,
	hodeiv1connect.JobServiceGetJobStatsProcedure:    auth.JobsRead,
	hodeiv1connect.JobServiceListJobHistoryProcedure: auth.JobsRead,

	hodeiv1connect.EventServiceSubscribeProcedure:        auth.JobsRead,
	hodeiv1connect.EventServiceListDeadLettersProcedure:  auth.Admin,
	hodeiv1connect.EventServiceReplayDeadLetterProcedure: auth.Admin,

	hodeiv1connect.ProviderServiceListProvidersProcedure:  auth.Admin,
	hodeiv1connect.ProviderServiceGetProviderProcedure:    auth.Admin,
	hodeiv1connect.ProviderServiceUpdateProviderProcedure: auth.Admin,
	hodeiv1connect.ProviderServiceListWorkersProcedure:    auth.Admin,

	hodeiv1connect.JobTypeServiceSetJobTypeProcedure:    auth.Admin,
	hodeiv1connect.JobTypeServiceGetJobTypeProcedure:    auth.Admin,
	hodeiv1connect.JobTypeServiceListJobTypesProcedure:  auth.Admin,
	hodeiv1connect.JobTypeServiceDeleteJobTypeProcedure: auth.Admin,

	hodeiv1connect.WebhookServiceCreateWebhookProcedure:           auth.Admin,
	hodeiv1connect.WebhookServiceListWebhooksProcedure:            auth.Admin,
	hodeiv1connect.WebhookServiceDeleteWebhookProcedure:           auth.Admin,
	hodeiv1connect.WebhookServiceListWebhookDeliveriesProcedure:   auth.Admin,
	hodeiv1connect.WebhookServiceReplayWebhookDeliveriesProcedure: auth.Admin,

	hodeiv1connect.SecretServiceSetSecretProcedure:       auth.Admin,
	hodeiv1connect.SecretServiceDeleteSecretProcedure:    auth.Admin,
	hodeiv1connect.SecretServiceRotateSecretKeyProcedure: auth.Admin,
	hodeiv1connect.SecretServiceListSecretsProcedure:     auth.Admin,
	hodeiv1connect.SecretServiceListSecretAuditProcedure: auth.Admin,

	hodeiv1connect.TokenServiceCreateTokenProcedure: auth.Admin,
	hodeiv1connect.TokenServiceListTokensProcedure:  auth.Admin,
	hodeiv1connect.TokenServiceRevokeTokenProcedure: auth.Admin,
}

// tokenFree lists the services whose procedures take no API token.
var tokenFree = map[string]bool{hodeiv1connect.WorkerServiceName: true}

// ProcedureScope returns the scope procedure needs; ok is false for a
// procedure that takes no token (WorkerService) or is unknown (refused).
func ProcedureScope(procedure string) (scope auth.Scope, known bool) {
	s, ok := procedureScopes[procedure]
	return s, ok
}

// TokenFree reports whether service's procedures take no API token.
func TokenFree(service string) bool { return tokenFree[service] }

// callerKey keys the verified token of a call in its context.
type callerKey struct{}

// caller returns the token a call was made with ("" outside a call).
func caller(ctx context.Context) string {
	t, _ := ctx.Value(callerKey{}).(*cachedToken)
	if t == nil {
		return ""
	}
	return t.name
}

// authInterceptor checks the bearer token of every call against the scope
// its procedure needs (procedureScopes).
type authInterceptor struct{ tokens *tokenCache }

func (a authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, err := a.authorize(ctx, req.Spec().Procedure, req.Header())
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (a authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := a.authorize(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return err
		}
		// A stream outlives neither its token's revocation nor its expiry.
		ctx, stop := a.tokens.watch(ctx, ctx.Value(callerKey{}).(*cachedToken))
		defer stop()
		err = next(ctx, conn)
		if cause := context.Cause(ctx); errors.Is(cause, errTokenRevoked) || errors.Is(cause, errTokenExpired) {
			return connect.NewError(connect.CodeUnauthenticated, cause)
		}
		return err
	}
}

// authorize verifies the call's token and its scope; the context it
// returns carries the token (caller).
func (a authInterceptor) authorize(ctx context.Context, procedure string, h http.Header) (context.Context, error) {
	need, ok := procedureScopes[procedure]
	if !ok {
		return ctx, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s: no scope allows this procedure", procedure))
	}
	t, err := a.tokens.check(ctx, h.Get("Authorization"), need)
	if err != nil {
		return ctx, err
	}
	return context.WithValue(ctx, callerKey{}, t), nil
}

// bearer extracts the token of an Authorization header value.
func bearer(v string) (string, error) {
	if v == "" {
		return "", errors.New("no API token: send the header 'authorization: Bearer <token>' (hodei token create; docs/security.md)")
	}
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", errors.New("authorization header: want 'Bearer <token>'")
	}
	return strings.TrimSpace(tok), nil
}

// errBadToken is the answer for any token that is not a live one: the
// caller learns no more than that.
var errBadToken = fmt.Errorf("API token unknown, revoked or expired: %w", store.ErrUnauthenticated)

// The causes that end a stream whose token stopped being valid.
var (
	errTokenRevoked = errors.New("API token revoked during the call")
	errTokenExpired = errors.New("API token expired during the call")
)

// metricsAuth guards /metrics with the metrics scope.
func (s *Server) metricsAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := s.tokens.check(r.Context(), r.Header.Get("Authorization"), auth.Metrics)
		switch connect.CodeOf(err) {
		case connect.CodeUnauthenticated:
			w.Header().Set("WWW-Authenticate", `Bearer realm="hodei"`)
			http.Error(w, err.(*connect.Error).Message(), http.StatusUnauthorized)
			return
		case connect.CodePermissionDenied:
			http.Error(w, err.(*connect.Error).Message(), http.StatusForbidden)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}
