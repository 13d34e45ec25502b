package workflow

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/events"
)

// Phase is a run's or a step's phase, named as KubeVela names them.
type Phase string

// Step phases.
const (
	StepPending    Phase = "pending"
	StepRunning    Phase = "running"
	StepSuspending Phase = "suspending"
	StepSucceeded  Phase = "succeeded"
	StepFailed     Phase = "failed"
	StepSkipped    Phase = "skipped"
)

// Run phases.
const (
	RunRunning    Phase = "executing"
	RunSuspending Phase = "suspending"
	RunSucceeded  Phase = "succeeded"
	RunFailed     Phase = "failed"
	RunTerminated Phase = "terminated"
)

// Reasons a step fails or suspends, CamelCase for conditions and events.
const (
	ReasonTimeout         = "Timeout"
	ReasonWaitingApproval = "WaitingApproval"
	ReasonSuspended       = "Suspended"
	ReasonDispatchFailed  = "DispatchFailed"
	ReasonApplyFailed     = "ApplyFailed"
	ReasonRejected        = "Rejected"
	ReasonTerminated      = "Terminated"
	ReasonHeld            = "SuspendedByUser"
)

// Run is one release's workflow: its steps and where each is. It is stored
// as JSON (the planner's KV) and changed only through Apply.
type Run struct {
	events.AppRef
	Steps   []Step    `json:"steps"`
	Phase   Phase     `json:"phase"`
	Message string    `json:"message,omitempty"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end,omitzero"`
	// Health is the newest report of every cluster this release was sent to.
	Health map[string]ClusterHealth `json:"health,omitempty"`
	// HeldBy is set while a person holds the workflow before its next step.
	HeldBy string `json:"heldBy,omitempty"`
}

// Step is one step's state.
type Step struct {
	StepSpec
	Phase            Phase     `json:"phase"`
	Message          string    `json:"message,omitempty"`
	Reason           string    `json:"reason,omitempty"`
	FirstExecuteTime time.Time `json:"firstExecuteTime,omitzero"`
	LastExecuteTime  time.Time `json:"lastExecuteTime,omitzero"`
	// Approved is set once a person approved a manual step.
	Approved bool `json:"approved,omitempty"`
	// Clusters a deploy step was dispatched to; nil until the dispatcher answered.
	Clusters []string `json:"clusters"`
	// Approvals are the decisions the gate recorded for a manual step.
	Approvals []events.Approval `json:"approvals,omitempty"`
}

// ClusterHealth is a cluster's report on this release.
type ClusterHealth struct {
	Step    string              `json:"step,omitempty"`
	Phase   events.ClusterPhase `json:"phase"`
	Healthy bool                `json:"healthy"`
	Message string              `json:"message,omitempty"`
	At      time.Time           `json:"at"`
}

// Transition is a step event the planner publishes.
type Transition struct {
	// Type is events.TypeStepStarted, Suspended, Succeeded or Failed.
	Type  string
	Index int
}

// NewRun starts a run of steps for a release; nothing happens until Apply.
func NewRun(ref events.AppRef, steps []StepSpec, now time.Time) *Run {
	r := &Run{AppRef: ref, Phase: RunRunning, Start: now}
	for _, s := range steps {
		r.Steps = append(r.Steps, Step{StepSpec: s, Phase: StepPending})
	}
	return r
}

// Input is what can happen to a run.
type Input interface{ input() }

// Tick lets time pass: durations and timeouts are checked. Apply(now, Tick{}) also starts a new run.
type Tick struct{}

// Dispatched is the dispatcher's answer for a deploy step.
type Dispatched struct {
	Step     string
	Clusters []string
	Reason   string
	Error    string
}

// ClusterReport is a cluster's status report.
type ClusterReport struct {
	Cluster string
	Phase   events.ClusterPhase
	Healthy bool
	Message string
	// Step is the deploy step whose work the report is about; empty counts
	// for any step that targets the cluster.
	Step string
	// ObservedAt is when the cluster assessed it: an older report than the
	// one recorded (redelivered late) changes nothing.
	ObservedAt time.Time
}

// Decision is a person's approve or reject of a manual step.
type Decision struct {
	Step    string
	Approve bool
	By      string
	Reason  string
	// Approvals are the recorded decisions behind it (who, when, how).
	Approvals []events.Approval
}

// Hold keeps the workflow from starting its next step until Unhold (a
// step already running goes on).
type Hold struct{ By string }

// Unhold lets a held workflow go on.
type Unhold struct{}

// Terminate ends the workflow now: the current step fails with reason
// Terminated and the run is terminated.
type Terminate struct {
	By     string
	Reason string
}

func (Hold) input()          {}
func (Unhold) input()        {}
func (Terminate) input()     {}
func (Tick) input()          {}
func (Dispatched) input()    {}
func (ClusterReport) input() {}
func (Decision) input()      {}

// Apply feeds one input to the run at time now and returns the step
// transitions to publish, in order. Inputs that do not fit the run's state
// (a late report, a decision for a step that does not wait) change nothing.
func (r *Run) Apply(now time.Time, in Input) []Transition {
	if r.Finished() {
		if rep, ok := in.(ClusterReport); ok {
			r.record(now, rep)
		}
		return nil
	}
	var out []Transition
	cur := r.current()
	switch in := in.(type) {
	case Dispatched:
		if s := r.step(cur); s != nil && s.Name == in.Step && s.Phase == StepRunning && s.Type == StepTypeDeploy && s.Clusters == nil {
			if in.Error != "" {
				out = append(out, r.fail(now, cur, cmp.Or(in.Reason, ReasonDispatchFailed), in.Error)...)
				return out
			}
			s.Clusters = slices.Clone(in.Clusters)
			sort.Strings(s.Clusters)
			s.LastExecuteTime = now
		}
	case ClusterReport:
		if !r.record(now, in) {
			return nil
		}
		if s := r.step(cur); s != nil && s.Phase == StepRunning && slices.Contains(s.Clusters, in.Cluster) && in.Phase == events.ClusterFailed && (in.Step == "" || in.Step == s.Name) {
			out = append(out, r.fail(now, cur, ReasonApplyFailed, fmt.Sprintf("cluster %s: %s", in.Cluster, in.Message))...)
			return out
		}
	case Decision:
		s := r.step(cur)
		if s == nil || s.Name != in.Step || s.Phase != StepSuspending || s.Approved {
			return nil
		}
		s.Approvals = append(s.Approvals, in.Approvals...)
		if !in.Approve {
			msg := fmt.Sprintf("rejected by %s", in.By)
			if in.Reason != "" {
				msg += ": " + in.Reason
			}
			out = append(out, r.fail(now, cur, ReasonRejected, msg)...)
			r.Phase = RunTerminated
			return out
		}
		s.Approved = true
		s.LastExecuteTime = now
		if s.Type == StepTypeSuspend {
			s.Phase, s.Message, s.Reason = StepSucceeded, "", ""
			out = append(out, Transition{events.TypeStepSucceeded, cur})
		} else {
			s.Phase, s.Message, s.Reason = StepPending, "", ""
		}
	case Hold:
		r.HeldBy = in.By
	case Unhold:
		r.HeldBy = ""
	case Terminate:
		msg := "terminated by " + in.By
		if in.Reason != "" {
			msg += ": " + in.Reason
		}
		out = append(out, r.fail(now, cur, ReasonTerminated, msg)...)
		r.Phase = RunTerminated
		return out
	case Tick:
	}
	return append(out, r.advance(now)...)
}

// advance moves through the steps as far as they can go at now.
func (r *Run) advance(now time.Time) []Transition {
	var out []Transition
	for {
		i := r.current()
		s := r.step(i)
		if s == nil {
			r.Phase, r.End, r.Message = RunSucceeded, now, ""
			return out
		}
		if s.Phase == StepPending && r.HeldBy != "" {
			r.Phase, r.Message = RunSuspending, fmt.Sprintf("suspended by %s before step %q", r.HeldBy, s.Name)
			return out
		}
		if s.Phase == StepPending {
			if s.FirstExecuteTime.IsZero() {
				s.FirstExecuteTime = now
			}
			s.LastExecuteTime = now
			switch {
			case s.Manual() && !s.Approved && s.Type == StepTypeDeploy:
				s.Phase, s.Reason = StepSuspending, ReasonWaitingApproval
				s.Message = fmt.Sprintf("Waiting approval to the deploy step %q", s.Name)
				out = append(out, Transition{events.TypeStepSuspended, i})
			case s.Type == StepTypeSuspend:
				s.Phase, s.Reason = StepSuspending, ReasonSuspended
				if s.Manual() {
					s.Reason = ReasonWaitingApproval
				}
				s.Message = s.StepSpec.Message
				if s.Message == "" && s.Manual() {
					s.Message = fmt.Sprintf("Waiting approval to the suspend step %q", s.Name)
				}
				out = append(out, Transition{events.TypeStepSuspended, i})
			default:
				s.Phase = StepRunning
				out = append(out, Transition{events.TypeStepStarted, i})
			}
		}
		if s.Timeout > 0 && !s.FirstExecuteTime.IsZero() && now.Sub(s.FirstExecuteTime) >= s.Timeout {
			return append(out, r.fail(now, i, ReasonTimeout, fmt.Sprintf("step %q did not finish within %v", s.Name, s.Timeout))...)
		}
		switch {
		case s.Type == StepTypeSuspend && s.Phase == StepSuspending && s.Duration > 0 && now.Sub(s.FirstExecuteTime) >= s.Duration:
			s.Phase, s.Message, s.Reason, s.LastExecuteTime = StepSucceeded, "", "", now
			out = append(out, Transition{events.TypeStepSucceeded, i})
		case s.Type == StepTypeDeploy && s.Phase == StepRunning && s.Clusters != nil && r.allHealthy(s.Name, s.Clusters):
			s.Phase, s.Message, s.Reason, s.LastExecuteTime = StepSucceeded, "", "", now
			out = append(out, Transition{events.TypeStepSucceeded, i})
		}
		if s.Phase != StepSucceeded && s.Phase != StepSkipped {
			r.Phase = RunRunning
			if s.Phase == StepSuspending {
				r.Phase = RunSuspending
			}
			r.Message = s.Message
			return out
		}
	}
}

func (r *Run) fail(now time.Time, i int, reason, msg string) []Transition {
	s := r.step(i)
	s.Phase, s.Reason, s.Message, s.LastExecuteTime = StepFailed, reason, msg, now
	for j := i + 1; j < len(r.Steps); j++ {
		r.Steps[j].Phase = StepSkipped
	}
	r.Phase, r.End, r.Message = RunFailed, now, fmt.Sprintf("step %q failed: %s", s.Name, msg)
	return []Transition{{events.TypeStepFailed, i}}
}

// record keeps a cluster's newest report; it reports whether rep was newer.
func (r *Run) record(now time.Time, rep ClusterReport) bool {
	if r.Health == nil {
		r.Health = map[string]ClusterHealth{}
	}
	at := rep.ObservedAt
	if at.IsZero() {
		at = now
	}
	if prev, ok := r.Health[rep.Cluster]; ok && prev.At.After(at) {
		return false
	}
	r.Health[rep.Cluster] = ClusterHealth{Step: rep.Step, Phase: rep.Phase, Healthy: rep.Healthy && rep.Phase == events.ClusterApplied, Message: rep.Message, At: at}
	return true
}

// allHealthy: every cluster reported the step's work applied and healthy
// (a cluster healthy from an earlier step's work does not count).
func (r *Run) allHealthy(step string, clusters []string) bool {
	for _, c := range clusters {
		if h, ok := r.Health[c]; !ok || !h.Healthy || h.Step != "" && h.Step != step {
			return false
		}
	}
	return true
}

// current is the index of the first step not yet succeeded or skipped.
func (r *Run) current() int {
	for i, s := range r.Steps {
		if s.Phase != StepSucceeded && s.Phase != StepSkipped {
			return i
		}
	}
	return len(r.Steps)
}

func (r *Run) step(i int) *Step {
	if i < 0 || i >= len(r.Steps) {
		return nil
	}
	return &r.Steps[i]
}

// Finished reports whether the run ended (succeeded, failed or terminated).
func (r *Run) Finished() bool {
	return r.Phase == RunSucceeded || r.Phase == RunFailed || r.Phase == RunTerminated
}

// Restart returns a new run of the same release and steps, from the first
// step (attempt + 1); what clusters reported is kept.
func (r *Run) Restart(now time.Time) *Run {
	var specs []StepSpec
	for _, s := range r.Steps {
		specs = append(specs, s.StepSpec)
	}
	ref := r.AppRef
	ref.Attempt++
	n := NewRun(ref, specs, now)
	n.Health = r.Health
	return n
}

// Deadline is the next time a Tick can change the run (a suspend duration
// or a step timeout), or zero.
func (r *Run) Deadline() time.Time {
	if r.Finished() {
		return time.Time{}
	}
	s := r.step(r.current())
	if s == nil || s.FirstExecuteTime.IsZero() {
		return time.Time{}
	}
	var d time.Time
	if s.Timeout > 0 {
		d = s.FirstExecuteTime.Add(s.Timeout)
	}
	if s.Type == StepTypeSuspend && s.Duration > 0 && s.Phase == StepSuspending {
		if t := s.FirstExecuteTime.Add(s.Duration); d.IsZero() || t.Before(d) {
			d = t
		}
	}
	return d
}

// DeployedClusters lists, sorted, every cluster a deploy step of this run was sent to.
func (r *Run) DeployedClusters() []string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Clusters...)
	}
	sort.Strings(out)
	return slices.Compact(out)
}
