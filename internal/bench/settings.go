package bench

import (
	"fmt"
	"time"
)

// setting is a numeric setting of a benchmark, named as its flag, and the
// range it must be in (max 0: no upper bound).
type setting struct {
	name            string
	value, min, max int64
}

// checkSettings returns an error naming the first setting out of its
// range, before the benchmark starts anything.
func checkSettings(bench string, ss ...setting) error {
	for _, s := range ss {
		switch {
		case s.value < s.min:
			return fmt.Errorf("bench %s: %s: %d is less than %d", bench, s.name, s.value, s.min)
		case s.max > 0 && s.value > s.max:
			return fmt.Errorf("bench %s: %s: %d is more than %d", bench, s.name, s.value, s.max)
		}
	}
	return nil
}

func (cfg StartupConfig) check() error {
	return checkSettings("startup", setting{"runs", int64(cfg.Runs), 1, 0})
}

func (cfg ProvisionConfig) check() error {
	return checkSettings("provision", setting{"runs", int64(cfg.Runs), 1, 0})
}

func (cfg DispatchConfig) check() error {
	return checkSettings("dispatch", setting{"jobs", int64(cfg.Jobs), 1, 0}, setting{"rate", int64(cfg.Rate), 1, int64(time.Second)},
		setting{"agents", int64(cfg.Agents), 1, 0}, setting{"backlog", int64(cfg.Backlog), 0, 0}, setting{"history", int64(cfg.History), 0, 0})
}

func (cfg ThroughputConfig) check() error {
	if err := checkSettings("throughput", setting{"jobs", int64(cfg.Jobs), 1, 0}, setting{"agents", int64(cfg.Agents), 1, 0},
		setting{"slots", int64(cfg.Slots), 1, 0}, setting{"prefetch", int64(cfg.Prefetch), 0, 0}, setting{"submitters", int64(cfg.Submitters), 1, 0},
		setting{"batch", int64(cfg.Batch), 1, 1000}, setting{"rounds", int64(cfg.Rounds), 1, 0}, setting{"history", int64(cfg.History), 0, 0}); err != nil {
		return err
	}
	if cfg.HistoryExpired && cfg.History == 0 {
		return fmt.Errorf("bench throughput: history-expired: needs --history N, the jobs it makes expired")
	}
	if len(cfg.Modes) == 0 {
		return fmt.Errorf("bench throughput: modes: none given (process, noop)")
	}
	for _, m := range cfg.Modes {
		if m != "process" && m != "noop" {
			return fmt.Errorf("bench throughput: modes: %q is not a mode (process, noop)", m)
		}
	}
	return nil
}

func (cfg LogsConfig) check() error {
	if err := checkSettings("logs", setting{"lines", int64(cfg.Lines), 1, 0}, setting{"rate", int64(cfg.Rate), 1, 0},
		setting{"secrets", int64(cfg.Secrets), 0, 0}); err != nil {
		return err
	}
	switch {
	case cfg.Steady < time.Second:
		return fmt.Errorf("bench logs: steady: %s is less than 1s", cfg.Steady)
	case cfg.GiB < 0:
		return fmt.Errorf("bench logs: gib: %g is negative", cfg.GiB)
	}
	return nil
}

// check is run after the defaults are applied.
func (cfg EventsConfig) check() error {
	if err := checkSettings("events", setting{"total", int64(cfg.Total), 1, 0}, setting{"publishers", int64(cfg.Publishers), 1, 0},
		setting{"batch", int64(cfg.BatchPerTx), 1, 0}, setting{"rate", int64(cfg.Rate), 1, 0}); err != nil {
		return err
	}
	if cfg.RateDuration <= 0 {
		return fmt.Errorf("bench events: duration: %s is not positive", cfg.RateDuration)
	}
	return nil
}
