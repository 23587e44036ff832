// Package provider is the seam between Hodei and whatever starts workers
// (local processes, Docker containers, Kubernetes pods): the Provider
// interface every implementation satisfies (providertest is its
// conformance suite). Deciding how many workers to run is autoscale's.
package provider

import (
	"context"
	"strconv"
)

// Spec is what a worker must offer.
type Spec struct {
	Image  string
	Labels map[string]string
	// Ephemeral workers take one job and exit.
	Ephemeral bool
	// CPUMillis and MemoryMiB limit the worker (0 = no limit), where the
	// provider can enforce it.
	CPUMillis, MemoryMiB int64
}

// Provider starts and stops workers. Handles are opaque, serialisable and
// stored with the worker.
type Provider interface {
	Name() string
	Kind() string
	// Provision starts a worker that will enroll with token.
	Provision(ctx context.Context, workerID, token string, spec Spec) (handle []byte, err error)
	// Inspect reports whether the worker is still running.
	Inspect(ctx context.Context, handle []byte) (running bool, err error)
	// Terminate stops a worker (grace, then force). Terminating a worker
	// that is gone is not an error.
	Terminate(ctx context.Context, handle []byte) error
	// List returns the workers this provider runs for this installation
	// (including those a previous server process started), for orphan
	// reconciliation at start.
	List(ctx context.Context) ([]Instance, error)
	// Health reports whether the provider can start workers now.
	Health(ctx context.Context) error
}

// Instance is a running worker as its provider sees it.
type Instance struct {
	WorkerID string
	Handle   []byte
}

// AgentArgs are the arguments of `hodei agent` for a worker of spec
// dialling server, with extra arguments and the worker's CPU and memory
// limits (0: none): an ephemeral worker retires after one job, and the
// agent states its limits so that bigger jobs go elsewhere.
func AgentArgs(server string, extra []string, spec Spec, cpuMillis, memoryMiB int64) []string {
	args := append([]string{"agent", "--server", server}, extra...)
	if spec.Ephemeral {
		args = append(args, "--max-jobs", "1")
	}
	if cpuMillis > 0 {
		args = append(args, "--cpu-millis", strconv.FormatInt(cpuMillis, 10))
	}
	if memoryMiB > 0 {
		args = append(args, "--memory-mib", strconv.FormatInt(memoryMiB, 10))
	}
	return args
}
