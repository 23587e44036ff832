package cli

import (
	"strconv"
	"strings"
	"testing"
)

func TestParseQuantityCPU(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "500m", want: 500},
		{in: "0.5", want: 500},
		{in: "2", want: 2000},
		{in: "1.5", want: 1500},
		{in: ".25", want: 250},
		{in: "2.", want: 2000},
		{in: "0.001", want: 1},
		{in: "1.2500", want: 1250},
		{in: "0", want: 0},
		{in: "0m", want: 0},
		{in: " 3 ", want: 3000},
		{in: "2000m", want: 2000},
		{in: "", wantErr: "not a non-negative number"},
		{in: "m", wantErr: "not a non-negative number"},
		{in: ".", wantErr: "not a non-negative number"},
		{in: "-1", wantErr: "want cores"},
		{in: "+1", wantErr: "want cores"},
		{in: "0.0005", wantErr: "not a whole number"},
		{in: "1.5m", wantErr: "not a whole number"},
		{in: "1e3", wantErr: "want cores"},
		{in: "2 cores", wantErr: "want cores"},
		{in: "1k", wantErr: "want cores"},
		{in: "9223372036854775807", wantErr: "too large"},
		{in: "99999999999999999999m", wantErr: "too large"},
	}
	for _, tt := range tests {
		got, err := ParseQuantityCPU(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseQuantityCPU(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseQuantityCPU(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseQuantityMemory(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "256", want: 256},
		{in: "512Mi", want: 512},
		{in: "512MiB", want: 512},
		{in: "1Gi", want: 1024},
		{in: "1.5Gi", want: 1536},
		{in: "0.5Gi", want: 512},
		{in: "2048Ki", want: 2},
		{in: "1Ti", want: 1 << 20},
		{in: "0", want: 0},
		{in: " 64Mi ", want: 64},
		{in: "", wantErr: "not a non-negative number"},
		{in: "Gi", wantErr: "not a non-negative number"},
		{in: "512M", wantErr: "binary unit"},
		{in: "1G", wantErr: "binary unit"},
		{in: "1gi", wantErr: "binary unit"},
		{in: "1 Gi", wantErr: "binary unit"},
		{in: "-1", wantErr: "binary unit"},
		{in: "1Ki", wantErr: "not a whole number"},
		{in: "1.5", wantErr: "not a whole number"},
		{in: "99999999999999Ti", wantErr: "too large"},
	}
	for _, tt := range tests {
		got, err := ParseQuantityMemory(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseQuantityMemory(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseQuantityMemory(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func FuzzParseQuantityCPU(f *testing.F) {
	for _, s := range []string{"500m", "0.5", "2", "1.25", "", "-1", "1e3", ".5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseQuantityCPU(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseQuantityCPU(%q) = %d, want >= 0", s, n)
		}
		back, err := ParseQuantityCPU(strconv.FormatInt(n, 10) + "m")
		if err != nil || back != n {
			t.Fatalf("round trip of %q: %d -> %d, %v", s, n, back, err)
		}
	})
}

func FuzzParseQuantityMemory(f *testing.F) {
	for _, s := range []string{"256", "512Mi", "1.5Gi", "2048Ki", "1Ti", "512M", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseQuantityMemory(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseQuantityMemory(%q) = %d, want >= 0", s, n)
		}
		back, err := ParseQuantityMemory(strconv.FormatInt(n, 10) + "Mi")
		if err != nil || back != n {
			t.Fatalf("round trip of %q: %d -> %d, %v", s, n, back, err)
		}
	})
}
