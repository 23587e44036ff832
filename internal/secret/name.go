package secret

import (
	"bytes"
	"fmt"
)

// Limits of values.
const (
	MinValueBytes = 4 // shorter values would mask every "a" in the output
	MaxValueBytes = 32 << 10
)

// ValidateValue checks a value's size and bytes without quoting it.
func ValidateValue(v []byte) error {
	switch {
	case len(v) < MinValueBytes:
		return fmt.Errorf("value must be at least %d bytes (got %d): a shorter value would mask ordinary output", MinValueBytes, len(v))
	case len(v) > MaxValueBytes:
		return fmt.Errorf("value must be at most %d bytes (got %d)", MaxValueBytes, len(v))
	case bytes.IndexByte(v, 0) >= 0:
		return fmt.Errorf("value must not contain a NUL byte (environment variables cannot hold one)")
	}
	return nil
}
