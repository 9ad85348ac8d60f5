package console

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/ledger/ledger/httpapi"
	"github.com/ledger/ledger/internal/audit"
	"github.com/ledger/ledger/projections"
)

// Long work the console starts (a rebuild, a verification) runs as a job in the background,
// one of each kind at a time in this process; pages follow its progress over Server-Sent
// Events. A rebuild of the same projection in another process is refused by the rebuild's own
// lock.

const (
	kindRebuild = "rebuild"
	kindVerify  = "verify"
	// keptJobs is how many finished jobs stay to be looked at.
	keptJobs = 20
)

// progress is a job's state as its page shows it.
type progress struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	By      string `json:"by"`
	Started string `json:"started"`
	Phase   string `json:"phase"`
	// Phases are the phases passed through so far, in order: a page that joins late, or
	// misses a short phase between two updates, still shows them all.
	Phases   []string `json:"phases"`
	Done     int64    `json:"done"`
	Total    int64    `json:"total"`
	Rate     float64  `json:"rate"`
	Finished bool     `json:"finished"`
	Error    string   `json:"error,omitempty"`
	Summary  string   `json:"summary,omitempty"`
}

type job struct {
	mu      sync.Mutex
	p       progress
	changed chan struct{} // closed, and replaced, on every change
	report  *audit.Report
	began   time.Time
}

func (j *job) update(fn func(p *progress)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	fn(&j.p)
	if n := len(j.p.Phases); n == 0 || j.p.Phases[n-1] != j.p.Phase {
		j.p.Phases = append(j.p.Phases, j.p.Phase)
	}
	close(j.changed)
	j.changed = make(chan struct{})
}

func (j *job) state() (progress, <-chan struct{}, *audit.Report) {
	j.mu.Lock()
	defer j.mu.Unlock()
	p := j.p
	p.Phases = append([]string(nil), j.p.Phases...)
	return p, j.changed, j.report
}

// busy returns the refusal of a job of kind while one runs.
func (js *jobs) busy(kind string) error {
	js.mu.Lock()
	r, ok := js.running[kind]
	js.mu.Unlock()
	if !ok {
		return nil
	}
	p, _, _ := r.state()
	return &errJobRunning{running: p}
}

type jobs struct {
	mu      sync.Mutex
	running map[string]*job // by kind
	all     map[string]*job
	order   []string
	cancels map[string]context.CancelFunc
	wg      sync.WaitGroup
}

func newJobs() *jobs {
	return &jobs{running: map[string]*job{}, all: map[string]*job{}, cancels: map[string]context.CancelFunc{}}
}

// errJobRunning refuses a second job of a kind while one runs.
type errJobRunning struct{ running progress }

func (e *errJobRunning) Error() string {
	what := "a verification"
	if e.running.Kind == kindRebuild {
		what = "a rebuild of " + e.running.Name
	}
	return what + " is already running (started by " + e.running.By + " at " + e.running.Started +
		"): one runs at a time; wait for it to finish, then try again"
}

// start runs fn as a job of kind, unless one of that kind is running.
func (js *jobs) start(kind, name, by string, fn func(ctx context.Context, j *job) (string, error)) (*job, error) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if r, ok := js.running[kind]; ok {
		p, _, _ := r.state()
		return nil, &errJobRunning{running: p}
	}
	if js.cancels == nil {
		return nil, errors.New("the console is shutting down")
	}
	j := &job{changed: make(chan struct{}), began: time.Now(),
		p: progress{ID: rand.Text(), Kind: kind, Name: name, By: by, Started: time.Now().UTC().Format(time.RFC3339),
			Phase: "starting", Phases: []string{"starting"}}}
	ctx, cancel := context.WithCancel(context.Background())
	js.running[kind] = j
	js.all[j.p.ID] = j
	js.order = append(js.order, j.p.ID)
	if len(js.order) > keptJobs {
		old := js.order[0]
		if _, busy := js.cancels[old]; !busy {
			delete(js.all, old)
			js.order = js.order[1:]
		}
	}
	js.cancels[j.p.ID] = cancel
	js.wg.Add(1)
	go func() {
		defer js.wg.Done()
		summary, err := fn(ctx, j)
		j.update(func(p *progress) {
			p.Finished, p.Summary = true, summary
			if err != nil {
				_, p.Error = httpapi.Status(err)
				if errors.Is(err, projections.ErrRebuildRunning) || errors.Is(err, projections.ErrNothingToRebuild) {
					p.Error = err.Error()
				}
				p.Phase = "failed"
			}
		})
		js.mu.Lock()
		delete(js.running, kind)
		delete(js.cancels, j.p.ID)
		js.mu.Unlock()
		cancel()
	}()
	return j, nil
}

func (js *jobs) get(id string) (*job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	j, ok := js.all[id]
	return j, ok
}

// latest returns the newest job of kind, if any.
func (js *jobs) latest(kind string) *job {
	js.mu.Lock()
	defer js.mu.Unlock()
	for i := len(js.order) - 1; i >= 0; i-- {
		if j := js.all[js.order[i]]; j != nil && j.p.Kind == kind {
			return j
		}
	}
	return nil
}

func (js *jobs) close() {
	js.mu.Lock()
	for _, cancel := range js.cancels {
		cancel()
	}
	js.cancels = nil
	js.mu.Unlock()
	js.wg.Wait()
}

type projectionsPage struct {
	Statuses []projectionRow
	Job      *progress
}

type projectionRow struct {
	projections.Status
	Newest      int
	Rebuildable bool
}

func (c *Console) handleProjections(w http.ResponseWriter, r *http.Request) error {
	st, err := c.Projections(r.Context())
	if err != nil {
		return err
	}
	page := projectionsPage{}
	for _, s := range st {
		row := projectionRow{Status: s}
		if p, ok := projections.Latest(s.Name); ok {
			row.Newest, row.Rebuildable = p.Version, p.Version != s.ActiveVersion
		}
		page.Statuses = append(page.Statuses, row)
	}
	page.Job = c.shownJob(r, kindRebuild)
	c.render(w, r, http.StatusOK, "projections", page)
	return nil
}

// shownJob is the job a page shows: the one its address names, else one of its kind that is
// running.
func (c *Console) shownJob(r *http.Request, kind string) *progress {
	var j *job
	if id := r.URL.Query().Get("job"); id != "" {
		j, _ = c.jobs.get(id)
	} else if latest := c.jobs.latest(kind); latest != nil {
		if p, _, _ := latest.state(); !p.Finished {
			j = latest
		}
	}
	if j == nil {
		return nil
	}
	p, _, _ := j.state()
	return &p
}

func (c *Console) handleRebuild(w http.ResponseWriter, r *http.Request) error {
	v, _ := viewerOf(r)
	name := r.PostForm.Get("name")
	// One at a time comes first: whatever the second asks for, it waits for the first.
	if err := c.jobs.busy(kindRebuild); err != nil {
		return errorf(http.StatusConflict, "%s", err.Error())
	}
	target, ok := projections.Latest(name)
	if !ok {
		return errorf(http.StatusBadRequest, "there is no projection named %q", name)
	}
	st, err := c.Projections(r.Context())
	if err != nil {
		return err
	}
	for _, s := range st {
		if s.Name == name && s.ActiveVersion == target.Version {
			return errorf(http.StatusConflict, "nothing to rebuild: %s v%d is the newest version this build knows, and it already serves reads", name, target.Version)
		}
	}
	j, err := c.jobs.start(kindRebuild, name, v.Username(), func(ctx context.Context, j *job) (string, error) {
		c.Log.Info("console: rebuild started", "projection", name, "by", v.Username())
		rep, err := c.Rebuild(ctx, name, func(p projections.RebuildProgress) {
			j.update(func(s *progress) { s.Phase, s.Done, s.Total, s.Rate = p.Phase, p.Done, p.Total, p.Rate })
		})
		if err != nil {
			c.Log.Warn("console: rebuild failed", "projection", name, "err", err)
			return "", err
		}
		return rebuildSummary(rep), nil
	})
	return c.started(w, r, j, err, "/projections")
}

func rebuildSummary(rep projections.RebuildReport) string {
	return rep.Name + " rebuilt: v" + itoa(int64(rep.From)) + " → v" + itoa(int64(rep.To)) + ", " + itoa(rep.Events) +
		" events over " + itoa(rep.Accounts) + " accounts in " + rep.Build.Round(time.Millisecond).String() +
		"; reads switched; v" + itoa(int64(rep.From)) + " retired"
}

type verifyPage struct {
	Job        *progress
	Report     *audit.Report
	Mismatches []mismatchRow
}

type mismatchRow struct {
	Text string
	Link string
}

func (c *Console) handleVerify(w http.ResponseWriter, r *http.Request) error {
	page := verifyPage{Job: c.shownJob(r, kindVerify)}
	if page.Job != nil && page.Job.Finished {
		if j, ok := c.jobs.get(page.Job.ID); ok {
			_, _, page.Report = j.state()
		}
	}
	if page.Report != nil {
		rows, err := c.mismatchRows(r.Context(), page.Report.Mismatches)
		if err != nil {
			return err
		}
		page.Mismatches = rows
	}
	c.render(w, r, http.StatusOK, "verify", page)
	return nil
}

// mismatchRows links each mismatch to the account and, for an event, to its row.
func (c *Console) mismatchRows(ctx context.Context, ms []audit.Mismatch) ([]mismatchRow, error) {
	owners, err := streamOwners(ctx, c.Ledger, ms, func(m audit.Mismatch) string { return m.StreamID })
	if err != nil {
		return nil, err
	}
	rows := make([]mismatchRow, len(ms))
	for i, m := range ms {
		rows[i].Text = m.String()
		name := m.Username
		if owner, ok := owners[m.StreamID]; ok {
			name = owner
		}
		if name == "" {
			continue
		}
		rows[i].Link = accountPath(name)
		if m.StreamID != "" {
			rows[i].Link += "?v=" + itoa(m.Version) + "#v" + itoa(m.Version)
		}
	}
	sort.SliceStable(rows, func(a, b int) bool { return rows[a].Text < rows[b].Text })
	return rows, nil
}

func (c *Console) handleStartVerify(w http.ResponseWriter, r *http.Request) error {
	v, _ := viewerOf(r)
	j, err := c.jobs.start(kindVerify, "log", v.Username(), func(ctx context.Context, j *job) (string, error) {
		rep, err := c.Verify(ctx, func(done, total int64) {
			j.update(func(s *progress) { s.Phase, s.Done, s.Total = "replaying", done, total })
		})
		if err != nil {
			return "", err
		}
		j.mu.Lock()
		j.report = rep
		j.mu.Unlock()
		if rep.OK() {
			return "no mismatch: every hash chain holds, and every read model and snapshot agrees with the log", nil
		}
		return itoa(int64(len(rep.Mismatches))) + " mismatches", nil
	})
	return c.started(w, r, j, err, "/verify")
}

// started answers the form that started job j (or failed to, with err): a 409 page when
// another job of its kind runs, else to the page that shows its progress.
func (c *Console) started(w http.ResponseWriter, r *http.Request, j *job, err error, page string) error {
	var running *errJobRunning
	if errors.As(err, &running) {
		return errorf(http.StatusConflict, "%s", running.Error())
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, Prefix+page+"?job="+j.p.ID, http.StatusSeeOther)
	return nil
}

// handleJobEvents streams a job's progress until it finishes.
func (c *Console) handleJobEvents(w http.ResponseWriter, r *http.Request) error {
	j, ok := c.jobs.get(chi.URLParam(r, "id"))
	if !ok {
		return errorf(http.StatusNotFound, "no such job: it finished long ago, or this server was restarted")
	}
	ctx := httpapi.WithoutDeadline(r)
	rc := sse(w)
	for {
		p, changed, _ := j.state()
		if err := sendEvent(w, rc, "progress", p); err != nil || p.Finished {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.ending:
			return nil
		case <-changed:
		case <-time.After(10 * time.Second):
		}
		// At most a few updates a second: a fast rebuild reports every page.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func itoa(n int64) string { return formatInt(n) }
