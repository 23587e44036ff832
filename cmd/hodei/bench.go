package main

import (
	"context"
	"fmt"
)

func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: hodei bench startup|events")
	}
	switch args[0] {
	case "startup":
		return benchStartup(ctx, args[1:])
	}
	return fmt.Errorf("unknown benchmark %q", args[0])
}

func benchStartup(ctx context.Context, args []string) error { return fmt.Errorf("not yet") }
