package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/redact"
	"github.com/hodei-dev/hodei/internal/store"
)

// CanaryName is the name the canary of an attempt is masked under.
const CanaryName = "canary"

// resolveTimeout bounds the database work of resolving an attempt's
// secrets at dispatch.
const resolveTimeout = 10 * time.Second

// resolveSecrets fills run with the values of the secrets its spec
// references, read (and audited) for the attempt on workerID, and the
// attempt's canary; the server remembers them to redact the attempt's
// stored logs. When they cannot be resolved, run carries why instead and
// the agent fails the attempt unstarted. Messages never hold a value.
func (s *Server) resolveSecrets(workerID string, a store.Assignment, run *hodeiv1.RunJob) {
	keys := s.cfg.SecretKeys
	if keys == nil {
		run.SecretError = "secrets are off: the server has no --secret-key-file"
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	sealed, err := s.store.DispatchSecrets(ctx, a.Spec.SecretNames(), a.JobID, int32(a.Attempt), workerID, "") // the actor: the job's submitter
	if err != nil {
		if errors.Is(err, job.ErrNotFound) {
			run.SecretError = err.Error()
		} else {
			run.SecretError = "resolve secrets: the database failed"
			s.log.Warn("resolve secrets", "job_id", a.JobID, "err", err)
		}
		return
	}
	s.metrics.secretAccesses.WithLabelValues(store.AuditDispatch).Add(float64(len(sealed)))
	secrets := make([]redact.Secret, 0, len(sealed)+1)
	values := make(map[string]*hodeiv1.SecretValue, len(sealed))
	for _, x := range sealed {
		v, err := keys.Open(x.Name, x.Version, x.Sealed)
		if err != nil {
			run.SecretError = fmt.Sprintf("open secret %s: the key file cannot open it", x.Name)
			s.log.Warn("open secret", "secret", x.Name, "err", err)
			return
		}
		values[x.Name] = &hodeiv1.SecretValue{Name: x.Name, Value: v, Version: x.Version}
		secrets = append(secrets, redact.Secret{Name: x.Name, Value: v})
	}
	for _, ref := range a.Spec.Secrets {
		v := values[ref.Name]
		run.Secrets = append(run.Secrets, &hodeiv1.SecretValue{Name: v.Name, Env: ref.SecretEnv(), Value: v.Value, Version: v.Version})
	}
	run.Canary = keys.Canary(a.Token)
	secrets = append(secrets, redact.Secret{Name: CanaryName, Value: []byte(run.Canary)})
	s.redact.remember(a.Token, a.JobID, int32(a.Attempt), redact.NewSet(secrets))
}

// rememberSecrets prepares the second redaction of an attempt this
// replica did not dispatch (its agent reconnected here): its secrets'
// current values, without an audit entry, since they go nowhere.
func (s *Server) rememberSecrets(ctx context.Context, jobID string, token int64) error {
	keys := s.cfg.SecretKeys
	if keys == nil || s.redact.has(token) {
		return nil
	}
	j, err := s.store.GetJob(ctx, jobID)
	if err != nil || len(j.Spec.Secrets) == 0 {
		return err
	}
	sealed, err := s.store.PeekSecrets(ctx, j.Spec.SecretNames())
	if err != nil {
		return err
	}
	secrets := []redact.Secret{{Name: CanaryName, Value: []byte(keys.Canary(token))}}
	for _, x := range sealed {
		if v, err := keys.Open(x.Name, x.Version, x.Sealed); err == nil {
			secrets = append(secrets, redact.Secret{Name: x.Name, Value: v})
		}
	}
	s.redact.remember(token, jobID, int32(j.Attempt), redact.NewSet(secrets))
	return nil
}

// forgetSecrets drops the values held for the attempts of a stream that
// ended: if the agent reconnects here, the hello's reconciliation reads
// them again (rememberSecrets).
func (s *Server) forgetSecrets(c *workerConn) {
	if s.redact.n.Load() == 0 {
		return
	}
	c.mu.Lock()
	tokens := make([]int64, 0, len(c.running))
	for t := range c.running {
		tokens = append(tokens, t)
	}
	c.mu.Unlock()
	for _, t := range tokens {
		s.redact.forget(t)
	}
}

// attemptRedactors holds the secret values of the attempts with secrets
// that report to this replica, by fencing token, for the second
// redaction. n keeps the lookup off the path of attempts without secrets.
type attemptRedactors struct {
	n  atomic.Int64
	mu sync.Mutex
	m  map[int64]*attemptSecrets
}

type attemptSecrets struct {
	jobID   string
	attempt int32
	set     *redact.Set
}

func newAttemptRedactors() *attemptRedactors {
	return &attemptRedactors{m: map[int64]*attemptSecrets{}}
}

func (r *attemptRedactors) remember(token int64, jobID string, attempt int32, set *redact.Set) {
	r.mu.Lock()
	if _, ok := r.m[token]; !ok {
		r.n.Add(1)
	}
	r.m[token] = &attemptSecrets{jobID: jobID, attempt: attempt, set: set}
	r.mu.Unlock()
}

func (r *attemptRedactors) get(token int64) *attemptSecrets {
	if r.n.Load() == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[token]
}

func (r *attemptRedactors) has(token int64) bool { return r.get(token) != nil }

func (r *attemptRedactors) forget(token int64) {
	if r.n.Load() == 0 {
		return
	}
	r.mu.Lock()
	if _, ok := r.m[token]; ok {
		delete(r.m, token)
		r.n.Add(-1)
	}
	r.mu.Unlock()
}

// secondRedaction masks what the agent left of the attempt's secrets in a
// log batch or a result's message before they are stored. Anything found
// is a bug of the agent's redaction: it is counted and published
// (SecretLeakBlocked), and only the redacted form is stored.
func (s *Server) secondRedaction(ctx context.Context, m *hodeiv1.ConnectRequest) {
	var token int64
	switch msg := m.Msg.(type) {
	case *hodeiv1.ConnectRequest_Logs:
		if msg.Logs.Redactions > 0 {
			s.metrics.redactions.Add(float64(msg.Logs.Redactions))
		}
		token = msg.Logs.FencingToken
	case *hodeiv1.ConnectRequest_Finished:
		token = msg.Finished.FencingToken
	default:
		return
	}
	as := s.redact.get(token)
	if as == nil {
		return
	}
	found := 0
	var names []string
	check := func(b []byte) []byte {
		red, n := as.set.Redact(b)
		if n > 0 {
			found += n
			for _, name := range as.set.Names(b) {
				if !slices.Contains(names, name) {
					names = append(names, name)
				}
			}
		}
		return red
	}
	switch msg := m.Msg.(type) {
	case *hodeiv1.ConnectRequest_Logs:
		for _, l := range msg.Logs.Lines {
			l.Data = check(l.Data)
		}
	case *hodeiv1.ConnectRequest_Finished:
		msg.Finished.Message = string(check([]byte(msg.Finished.Message)))
	}
	if found == 0 {
		return
	}
	s.metrics.leaksBlocked.Add(float64(found))
	s.metrics.redactions.Add(float64(found))
	s.log.Error("a report held an unredacted secret value; stored redacted", "job_id", as.jobID, "attempt", as.attempt, "matches", found)
	ev := eventbus.New("job", as.jobID, &hodeiv1.SecretLeakBlocked{JobId: as.jobID, Attempt: as.attempt, Names: names})
	if err := s.store.PublishEvents(ctx, ev); err != nil {
		s.log.Warn("publish SecretLeakBlocked", "job_id", as.jobID, "err", err)
	}
}
