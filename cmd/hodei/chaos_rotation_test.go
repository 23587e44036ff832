//go:build chaos

package main

import (
	"testing"
	"time"
)

// TestChaosCertificateRotationUnderLoad is TestCertificatesRotateUnderLoad
// for three minutes with 60 s certificates renewed 40 s before their end:
// several rotations of every agent and of the server.
func TestChaosCertificateRotationUnderLoad(t *testing.T) {
	rotation{ttl: 60 * time.Second, renewBefore: 40 * time.Second, check: 2 * time.Second, run: 3 * time.Minute}.test(t)
}
