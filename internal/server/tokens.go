package server

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
)

// tokenService manages API tokens (admin scope).
type tokenService struct{ s *Server }

// TokenToProto is a token's wire form (never its secret).
func TokenToProto(t store.Token) *hodeiv1.Token {
	p := &hodeiv1.Token{Id: t.ID, Name: t.Name, CreatedAt: timestamppb.New(t.CreatedAt)}
	for _, sc := range t.Scopes {
		p.Scopes = append(p.Scopes, string(sc))
	}
	for _, f := range []struct {
		t   time.Time
		dst **timestamppb.Timestamp
	}{{t.ExpiresAt, &p.ExpiresAt}, {t.RevokedAt, &p.RevokedAt}, {t.LastUsedAt, &p.LastUsedAt}} {
		if !f.t.IsZero() {
			*f.dst = timestamppb.New(f.t)
		}
	}
	return p
}

func (h tokenService) CreateToken(ctx context.Context, req *connect.Request[hodeiv1.CreateTokenRequest]) (*connect.Response[hodeiv1.CreateTokenResponse], error) {
	if req.Msg.TtlSeconds < 0 {
		return nil, connectError(&job.FieldError{Field: "ttl_seconds", Rule: "must not be negative"})
	}
	t, secret, err := h.s.store.CreateToken(ctx, req.Msg.Name, req.Msg.Scopes, time.Duration(req.Msg.TtlSeconds)*time.Second)
	if errors.Is(err, store.ErrTokenExists) {
		return nil, connect.NewError(connect.CodeAlreadyExists, err)
	}
	if err != nil {
		return nil, connectError(err)
	}
	h.s.log.Info("api token created", "token", t.Name, "scopes", t.Scopes, "by", caller(ctx))
	return connect.NewResponse(&hodeiv1.CreateTokenResponse{Token: TokenToProto(t), Secret: secret}), nil
}

func (h tokenService) ListTokens(ctx context.Context, _ *connect.Request[hodeiv1.ListTokensRequest]) (*connect.Response[hodeiv1.ListTokensResponse], error) {
	ts, err := h.s.store.ListTokens(ctx)
	if err != nil {
		return nil, connectError(err)
	}
	resp := &hodeiv1.ListTokensResponse{}
	for _, t := range ts {
		resp.Tokens = append(resp.Tokens, TokenToProto(t))
	}
	return connect.NewResponse(resp), nil
}

func (h tokenService) RevokeToken(ctx context.Context, req *connect.Request[hodeiv1.RevokeTokenRequest]) (*connect.Response[hodeiv1.RevokeTokenResponse], error) {
	if req.Msg.Token == "" {
		return nil, connectError(&job.FieldError{Field: "token", Rule: "is required (a token's name or id)"})
	}
	t, err := h.s.store.RevokeToken(ctx, req.Msg.Token)
	if err != nil {
		return nil, connectError(err)
	}
	h.s.log.Info("api token revoked", "token", t.Name, "by", caller(ctx))
	return connect.NewResponse(&hodeiv1.RevokeTokenResponse{Token: TokenToProto(t)}), nil
}
