package cli

import (
	"fmt"
	"math/big"
	"regexp"
	"strings"
)

// decimalRe is a non-negative decimal number without exponent: 2, 0.5, .5, 2.
var decimalRe = regexp.MustCompile(`^([0-9]+\.?[0-9]*|\.[0-9]+)$`)

// ParseQuantityCPU parses a CPU quantity into millicores: "500m" (500),
// "0.5" (500), "2" (2000). Fractions finer than a millicore are an error.
func ParseQuantityCPU(s string) (int64, error) {
	num, unit := splitUnit(strings.TrimSpace(s))
	var scale *big.Rat
	switch unit {
	case "":
		scale = big.NewRat(1000, 1)
	case "m":
		scale = big.NewRat(1, 1)
	default:
		return 0, fmt.Errorf("cpu %q: want cores (0.5, 2) or millicores (500m)", s)
	}
	n, err := scaleDecimal(num, scale, "millicores")
	if err != nil {
		return 0, fmt.Errorf("cpu %q: %w", s, err)
	}
	return n, nil
}

// ParseQuantityMemory parses a memory quantity into MiB: "256" (MiB),
// "512Mi", "1Gi" (1024), "1.5Gi" (1536), "2048Ki" (2), "1Ti"; a trailing
// "B" is allowed (512MiB). Decimal units (M, G) are rejected rather than
// guessed, as is a result that is not a whole number of MiB.
func ParseQuantityMemory(s string) (int64, error) {
	num, unit := splitUnit(strings.TrimSpace(s))
	unit = strings.TrimSuffix(unit, "B")
	var scale *big.Rat
	switch unit {
	case "", "Mi":
		scale = big.NewRat(1, 1)
	case "Ki":
		scale = big.NewRat(1, 1024)
	case "Gi":
		scale = big.NewRat(1024, 1)
	case "Ti":
		scale = big.NewRat(1024*1024, 1)
	default:
		return 0, fmt.Errorf("memory %q: want MiB (256) or a binary unit (Ki, Mi, Gi, Ti)", s)
	}
	n, err := scaleDecimal(num, scale, "MiB")
	if err != nil {
		return 0, fmt.Errorf("memory %q: %w", s, err)
	}
	return n, nil
}

// splitUnit splits "1.5Gi" into "1.5" and "Gi".
func splitUnit(s string) (num, unit string) {
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i:]
}

// scaleDecimal returns num*scale, which must be a whole int64.
func scaleDecimal(num string, scale *big.Rat, unit string) (int64, error) {
	if !decimalRe.MatchString(num) {
		return 0, fmt.Errorf("not a non-negative number")
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("not a number")
	}
	r.Mul(r, scale)
	if !r.IsInt() {
		return 0, fmt.Errorf("%s %s is not a whole number", r.FloatString(3), unit)
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("too large")
	}
	return r.Num().Int64(), nil
}
