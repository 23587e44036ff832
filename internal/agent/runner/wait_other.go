//go:build unix && !linux

package runner

import "errors"

// waitExitedNoReap is not implemented outside Linux; Run then kills the
// process group right after reaping the leader instead of right before.
func waitExitedNoReap(int) error {
	return errors.ErrUnsupported
}
