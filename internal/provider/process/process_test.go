package process_test

import (
	"os"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/provider"
	"github.com/hodei-dev/hodei/internal/provider/process"
	"github.com/hodei-dev/hodei/internal/provider/providertest"
	"github.com/hodei-dev/hodei/internal/store/storetest"
	"github.com/hodei-dev/hodei/internal/testbin"
)

// hodeiBin is the agent binary.
var hodeiBin string

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, &hodeiBin, storetest.Main)) }

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
