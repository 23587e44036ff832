// Command dashboards writes Hodei's Grafana dashboards (deploy/grafana/*.json)
// from Go with the Grafana Foundation SDK: `make dashboards` runs it, and
// scripts/verify.sh fails when the committed files differ from its output.
// Every query uses only series documented in docs/metrics.md and the
// $__rate_interval variable; a test runs each of them against a real
// Prometheus scraping a running hodei dev.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

func main() {
	out := flag.String("out", "deploy/grafana", "directory to write the dashboards to")
	flag.Parse()
	for name, b := range map[string]*dashboard.DashboardBuilder{
		"overview": overview(), "workers": workers(), "events": events(), "api": api(), "security": security(),
	} {
		if err := write(filepath.Join(*out, name+".json"), b); err != nil {
			fmt.Fprintln(os.Stderr, "dashboards:", err)
			os.Exit(1)
		}
	}
}

func write(path string, b *dashboard.DashboardBuilder) error {
	d, err := b.Build()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	js, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(js, '\n'), 0o644)
}

// ds is the Prometheus data source the dashboards query: a variable, so
// that an import picks one.
var ds = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

func board(uid, title, description string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags([]string{"hodei"}).
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Data source").Type("prometheus"))
}

// query is one PromQL target with its legend.
func query(expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().Expr(expr).LegendFormat(legend).Datasource(ds)
}

// graph is a time series panel of the queries.
func graph(title, unit, description string, qs ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().Title(title).Description(description).Unit(unit).Datasource(ds).Height(8).Span(12)
	for _, q := range qs {
		p.WithTarget(q)
	}
	return p
}

// single is a stat panel of one query.
func single(title, unit, description string, q *prometheus.DataqueryBuilder) *stat.PanelBuilder {
	return stat.NewPanelBuilder().Title(title).Description(description).Unit(unit).Datasource(ds).Height(4).Span(6).
		GraphMode(common.BigValueGraphModeArea).WithTarget(q)
}

// quantile is the q-quantile of a histogram over $__rate_interval, by labels.
func quantile(q float64, histogram, by string) string {
	return fmt.Sprintf("histogram_quantile(%g, sum by (%sle) (rate(%s_bucket[$__rate_interval])))", q, by, histogram)
}

func rate(series, by string) string {
	return fmt.Sprintf("sum by (%s) (rate(%s[$__rate_interval]))", by, series)
}
