package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/cli"
	"github.com/hodei-dev/hodei/internal/server"
	"github.com/hodei-dev/hodei/internal/store"
)

// createTokenInDatabase is `hodei token create --database`: the token is
// stored straight into HODEI_DATABASE_URL, which is how an installation
// gets its first admin token.
func createTokenInDatabase(ctx context.Context, name string, scopes []string, ttl time.Duration) (*hodeiv1.CreateTokenResponse, error) {
	url := os.Getenv("HODEI_DATABASE_URL")
	if url == "" {
		return nil, errors.New("token create --database: HODEI_DATABASE_URL is not set")
	}
	st, err := store.Open(ctx, store.Config{URL: url, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	t, secret, err := st.CreateToken(ctx, name, scopes, ttl)
	if err != nil {
		return nil, err
	}
	return &hodeiv1.CreateTokenResponse{Token: server.TokenToProto(t), Secret: secret}, nil
}

// devTokenPrefix names the admin tokens `hodei dev` creates.
const devTokenPrefix = "dev-admin-"

// devClientConfig returns the Prepare step of `hodei dev`: it makes sure
// the client configuration file (HODEI_CONFIG, else
// ~/.config/hodei/config.json) names addr and holds a live admin token of
// this database. A token the file holds already is kept when it is live
// here (a restart on the same data dir); else a new one replaces it and
// the earlier dev tokens are revoked.
func devClientConfig(log *slog.Logger, addr string) func(ctx context.Context, st *store.Store) error {
	return func(ctx context.Context, st *store.Store) error {
		path := cli.ConfigPath(os.Getenv)
		if path == "" {
			return errors.New("client configuration: set HODEI_CONFIG or HOME")
		}
		c, err := cli.LoadConfig(path)
		if err != nil {
			return err
		}
		c.Server = addr
		if c.Token != "" && auth.Plausible(c.Token) {
			if _, err := st.VerifyToken(ctx, auth.Hash(c.Token), time.Now()); err == nil {
				log.Info("client configuration kept its admin token", "file", path)
				return cli.WriteConfig(path, c)
			}
		}
		if _, err := st.RevokeTokensWithPrefix(ctx, devTokenPrefix); err != nil {
			return err
		}
		t, secret, err := st.CreateToken(ctx, fmt.Sprintf("%s%d", devTokenPrefix, time.Now().Unix()), []string{string(auth.Admin)}, 0)
		if err != nil {
			return err
		}
		c.Token = secret
		if err := cli.WriteConfig(path, c); err != nil {
			return err
		}
		log.Info("client configuration written with an admin token", "file", path, "token", t.Name)
		return nil
	}
}
