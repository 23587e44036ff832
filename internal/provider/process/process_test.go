package process_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/provider"
	"github.com/hodei-dev/hodei/internal/provider/process"
	"github.com/hodei-dev/hodei/internal/provider/providertest"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// hodeiBin is the agent binary: HODEI_TEST_BINARY, or built once here.
var hodeiBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if b := os.Getenv("HODEI_TEST_BINARY"); b != "" {
			hodeiBin = b
		} else {
			dir, err := os.MkdirTemp("", "hodei-bin")
			if err != nil {
				panic(err)
			}
			defer os.RemoveAll(dir)
			hodeiBin = filepath.Join(dir, "hodei")
			cmd := exec.Command("go", "build", "-o", hodeiBin, "github.com/hodei-dev/hodei/cmd/hodei")
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build hodei: %v\n%s", err, out)
				return 1
			}
		}
		return storetest.Main(m)
	}())
}

func harness() providertest.Harness {
	return providertest.Harness{
		New: func(t *testing.T, server, install string) provider.Provider {
			p, err := process.New(process.Config{Name: "process-" + install, Binary: hodeiBin, Server: server,
				Grace: 10 * time.Second, Stderr: providertest.Writer(t, "agent: "),
				Args: []string{"--drain-timeout", "5s", "--grace", "5s"}})
			if err != nil {
				t.Fatal(err)
			}
			return p
		},
		NoOrphans: "process workers get SIGTERM when the server process that started them dies: there are no orphans",
	}
}

func TestConformance(t *testing.T) {
	providertest.Run(t, harness())
}
