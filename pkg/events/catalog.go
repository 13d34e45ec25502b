// Package events owns Flotilla's CloudEvents catalog: the event types, their
// data structs with validation, and the one encoder and decoder that carry
// them in binary mode over NATS. Nothing else builds events by hand.
//
// Types are reverse-DNS and versioned in the name (dev.flotilla.<noun>.<verb>.v1).
// Decoding ignores unknown optional data fields and rejects what it cannot
// validate, with a reason.
//
// catalog.go is long because it is one concept, the catalog: every event
// type with its data and the data's validation, read together.
package events

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Event types. Each has one data struct below.
const (
	// Planner → dispatcher, gate: a workflow step changed state.
	TypeStepStarted   = "dev.flotilla.step.started.v1"
	TypeStepSuspended = "dev.flotilla.step.suspended.v1"
	TypeStepSucceeded = "dev.flotilla.step.succeeded.v1"
	TypeStepFailed    = "dev.flotilla.step.failed.v1"
	// Planner → agents (through the dispatcher): remove what an application put in clusters.
	TypeApplicationDeleted = "dev.flotilla.application.deleted.v1"
	// Dispatcher → planner: the clusters a deploy step targets, or why it cannot.
	TypeStepDispatched = "dev.flotilla.step.dispatched.v1"
	// Agent → planner: what a cluster applied and how healthy it is.
	TypeClusterStatus = "dev.flotilla.cluster.status.v1"
	// Agent → dispatcher: a cluster asks to join the hub, then beats.
	TypeClusterJoin      = "dev.flotilla.cluster.join.v1"
	TypeClusterHeartbeat = "dev.flotilla.cluster.heartbeat.v1"
	// Dispatcher → agent: the desired state of one application in one cluster.
	TypeWork = "dev.flotilla.work.desired.v1"
	// Agent → planner: an applied object was changed or deleted in the
	// cluster and the agent put it back.
	TypeClusterDrift = "dev.flotilla.cluster.drift.v1"
	// Bots, HTTP, CLI → gate: a person's decision on a waiting step (public contract).
	TypeApproval = "dev.flotilla.approval.v1"
	// Gate → bots: a step waits for a decision.
	TypeApprovalRequested = "dev.flotilla.approval.requested.v1"
	// Gate → audit: every decision, accepted or refused.
	TypeApprovalAudit = "dev.flotilla.approval.audit.v1"
	// Gate → planner: the step may go on, or must fail.
	TypeStepApproved = "dev.flotilla.step.approved.v1"
	TypeStepRejected = "dev.flotilla.step.rejected.v1"
	// Operator (kubectl flotilla bundle import) → planner, dispatcher: a
	// status bundle carried from a site with no link, signed by its agent.
	TypeStatusBundle = "dev.flotilla.bundle.status.v1"
)

// Data is what every event payload implements.
type Data interface {
	// Validate reports what is missing or wrong.
	Validate() error
}

// ErrInvalid wraps every validation failure, so consumers can terminate
// (not redeliver) a message that will never decode.
var ErrInvalid = errors.New("invalid event")

// ErrUnknownType is returned for a type that is not in the catalog.
var ErrUnknownType = errors.New("unknown event type")

// AppRef names an application and one of its releases.
type AppRef struct {
	Namespace   string `json:"namespace"`
	Application string `json:"application"`
	// UID of the Application on the hub: a re-created application is another.
	UID string `json:"uid"`
	// Release is "<app>-v<revision>".
	Release  string `json:"release"`
	Revision int64  `json:"revision"`
	// PublishVersion is the app.oam.dev/publishVersion the release was cut for.
	PublishVersion string `json:"publishVersion,omitempty"`
	// Attempt counts restarts of the release's workflow (0: the first run).
	Attempt int `json:"attempt,omitempty"`
}

func (r AppRef) validate() error {
	var errs []error
	if r.Namespace == "" {
		errs = append(errs, errors.New("namespace is empty"))
	}
	if r.Application == "" {
		errs = append(errs, errors.New("application is empty"))
	}
	if r.Release == "" {
		errs = append(errs, errors.New("release is empty"))
	}
	if r.Revision <= 0 {
		errs = append(errs, fmt.Errorf("revision %d is not positive", r.Revision))
	}
	return errors.Join(errs...)
}

// StepData is the data of the step events (started, suspended, succeeded, failed).
type StepData struct {
	AppRef
	// Step is the step's name, unique in the workflow; Index its position.
	Step     string `json:"step"`
	StepType string `json:"stepType"`
	Index    int    `json:"index"`
	// Message and Reason say why a step suspended or failed.
	Message string `json:"message,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Properties are the step's properties as the workflow states them
	// (deploy: policies, auto; suspend: duration, message; approvers, ...).
	Properties json.RawMessage `json:"properties,omitempty"`
	// Policies a deploy step deploys with, resolved from the Application's
	// inline policies and Policy objects at release time.
	Policies []Policy `json:"policies,omitempty"`
	// Snapshot is the release's objects, for a deploy step that starts.
	Snapshot *Snapshot `json:"snapshot,omitempty"`
	// TakeOver are the kinds whose existing objects the release may adopt
	// in a cluster (KubeVela's take-over policy; "*": every kind).
	TakeOver []string `json:"takeOver,omitempty"`
	// ReadOnly are the kinds whose objects the release only reads in a
	// cluster (KubeVela's read-only policy; "*": every kind).
	ReadOnly []string `json:"readOnly,omitempty"`
}

// Policy is a resolved policy: its name, type and properties.
type Policy struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Properties json.RawMessage `json:"properties,omitempty"`
}

// Snapshot is a release's objects, inline or, when large, by digest in the
// JetStream object store.
type Snapshot struct {
	// Digest is "sha256:<hex>" of the canonical JSON array of Objects.
	Digest string `json:"digest"`
	// Objects inline; empty when the snapshot travels by Digest.
	Objects []json.RawMessage `json:"objects,omitempty"`
	// ObjectStore names the object in the object store when Objects is empty.
	ObjectStore string `json:"objectStore,omitempty"`
	// Gzip is the JSON array of the objects, gzip-compressed, when Objects
	// is empty: how the dispatcher hands a snapshot too large to travel as
	// JSON to an agent, whose NATS user may not read the object store.
	Gzip []byte `json:"gzip,omitempty"`
}

// validateSource checks that the snapshot travels exactly one way.
func (s *Snapshot) validateSource() error {
	n := 0
	for _, set := range []bool{len(s.Objects) > 0, s.ObjectStore != "", len(s.Gzip) > 0} {
		if set {
			n++
		}
	}
	switch n {
	case 0:
		return errors.New("snapshot has neither objects nor objectStore nor gzip")
	case 1:
		return nil
	}
	return errors.New("snapshot has more than one of objects, objectStore and gzip")
}

// Validate implements Data.
func (d *StepData) Validate() error {
	errs := []error{d.AppRef.validate()}
	if d.Step == "" {
		errs = append(errs, errors.New("step is empty"))
	}
	if d.StepType == "" {
		errs = append(errs, errors.New("stepType is empty"))
	}
	if d.Index < 0 {
		errs = append(errs, fmt.Errorf("index %d is negative", d.Index))
	}
	if s := d.Snapshot; s != nil {
		if s.Digest == "" {
			errs = append(errs, errors.New("snapshot.digest is empty"))
		}
		errs = append(errs, s.validateSource())
	}
	for i, p := range d.Policies {
		if p.Name == "" || p.Type == "" {
			errs = append(errs, fmt.Errorf("policies[%d] needs name and type", i))
		}
	}
	return errors.Join(errs...)
}

// ApplicationDeletedData asks every cluster to remove what the application put there.
type ApplicationDeletedData struct {
	Namespace   string `json:"namespace"`
	Application string `json:"application"`
	UID         string `json:"uid"`
}

// Validate implements Data.
func (d *ApplicationDeletedData) Validate() error {
	var errs []error
	if d.Namespace == "" || d.Application == "" || d.UID == "" {
		errs = append(errs, errors.New("namespace, application and uid are required"))
	}
	return errors.Join(errs...)
}

// StepDispatchedData says which clusters a deploy step was sent to, or, when
// Error is set, why it was sent to none.
type StepDispatchedData struct {
	AppRef
	Step string `json:"step"`
	// Clusters the step went to; an empty list (allowEmpty) is a success
	// with nothing to deploy.
	Clusters []string `json:"clusters"`
	// Reason (CamelCase) and Error say why nothing was dispatched.
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Validate implements Data.
func (d *StepDispatchedData) Validate() error {
	errs := []error{d.AppRef.validate()}
	if d.Step == "" {
		errs = append(errs, errors.New("step is empty"))
	}
	if d.Error == "" && d.Clusters == nil {
		errs = append(errs, errors.New("neither clusters nor error"))
	}
	return errors.Join(errs...)
}

// Health is an object's kstatus status.
type Health string

// kstatus statuses.
const (
	HealthCurrent     Health = "Current"
	HealthInProgress  Health = "InProgress"
	HealthFailed      Health = "Failed"
	HealthTerminating Health = "Terminating"
	HealthNotFound    Health = "NotFound"
	HealthUnknown     Health = "Unknown"
)

// ClusterPhase is where a cluster is with a release.
type ClusterPhase string

// Cluster phases.
const (
	// ClusterApplied: every object applied; Objects say how healthy each is.
	ClusterApplied ClusterPhase = "Applied"
	// ClusterFailed: applying failed; Message says which object and why.
	ClusterFailed ClusterPhase = "Failed"
	// ClusterDeleted: everything the application put in the cluster is gone.
	ClusterDeleted ClusterPhase = "Deleted"
)

// ClusterStatusData is a cluster's report on one application release.
type ClusterStatusData struct {
	AppRef
	Cluster string `json:"cluster"`
	// Step is the deploy step whose work the cluster applied.
	Step    string         `json:"step,omitempty"`
	Phase   ClusterPhase   `json:"phase"`
	Message string         `json:"message,omitempty"`
	Objects []ObjectStatus `json:"objects,omitempty"`
	// ObservedAt is when the agent assessed the objects.
	ObservedAt time.Time `json:"observedAt"`
}

// ObjectStatus is one applied object's health.
type ObjectStatus struct {
	Group      string `json:"group,omitempty"`
	Version    string `json:"version"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	Generation int64  `json:"generation,omitempty"`
	Health     Health `json:"health"`
	Message    string `json:"message,omitempty"`
	// Replicas for workloads: what `kubectl flotilla get` prints.
	Replicas *Replicas `json:"replicas,omitempty"`
}

// Replicas is a workload's replica summary.
type Replicas struct {
	Desired   int32 `json:"desired"`
	Ready     int32 `json:"ready"`
	Updated   int32 `json:"updated"`
	Available int32 `json:"available"`
}

// Healthy reports whether the cluster applied the release and every object is Current.
func (d *ClusterStatusData) Healthy() bool {
	if d.Phase != ClusterApplied {
		return false
	}
	for _, o := range d.Objects {
		if o.Health != HealthCurrent {
			return false
		}
	}
	return true
}

// Validate implements Data. A Deleted report needs no release: it is about
// the application as a whole.
func (d *ClusterStatusData) Validate() error {
	var errs []error
	if d.Phase == ClusterDeleted {
		if d.Namespace == "" || d.Application == "" || d.UID == "" {
			errs = append(errs, errors.New("namespace, application and uid are required"))
		}
	} else {
		errs = append(errs, d.AppRef.validate())
	}
	if d.Cluster == "" {
		errs = append(errs, errors.New("cluster is empty"))
	}
	switch d.Phase {
	case ClusterApplied, ClusterFailed, ClusterDeleted:
	default:
		errs = append(errs, fmt.Errorf("phase %q is not Applied, Failed or Deleted", d.Phase))
	}
	if len(d.Objects) > MaxReportObjects {
		errs = append(errs, fmt.Errorf("%d objects: a report names at most %d", len(d.Objects), MaxReportObjects))
	}
	if len(d.Message) > MaxReportMessage {
		errs = append(errs, fmt.Errorf("message of %d bytes: at most %d", len(d.Message), MaxReportMessage))
	}
	for i, o := range d.Objects {
		if o.Kind == "" || o.Name == "" || o.Version == "" {
			errs = append(errs, fmt.Errorf("objects[%d] needs version, kind and name", i))
		}
		if len(o.Message) > MaxObjectMessage {
			errs = append(errs, fmt.Errorf("objects[%d]: message of %d bytes: at most %d", i, len(o.Message), MaxObjectMessage))
		}
		if i > 16 && len(errs) > 16 {
			break // enough to say why
		}
	}
	return errors.Join(errs...)
}

// Trim brings a report within the bounds, so a cluster whose API server
// says much, or a release of many objects, still reports: messages are cut
// at a character's boundary (marked with "…"), and past MaxReportObjects
// the objects that are not Current are kept first, so what the report says
// of the release's health (Healthy, the first unhealthy object) is unchanged.
func (d *ClusterStatusData) Trim() {
	d.Message = trim(d.Message, MaxReportMessage)
	for i := range d.Objects {
		d.Objects[i].Message = trim(d.Objects[i].Message, MaxObjectMessage)
	}
	if len(d.Objects) > MaxReportObjects {
		slices.SortStableFunc(d.Objects, func(a, b ObjectStatus) int {
			return cmp.Compare(boolRank(a.Health != HealthCurrent), boolRank(b.Health != HealthCurrent))
		})
		d.Objects = d.Objects[:MaxReportObjects]
	}
}

// boolRank orders true first.
func boolRank(b bool) int {
	if b {
		return 0
	}
	return 1
}

func trim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// Bounds of what a cluster may say: what the planner keeps of a report goes
// into the application's run record, which must stay well under NATS's
// payload limit whatever a cluster sends.
const (
	// MaxReportObjects is the most objects one report lists.
	MaxReportObjects = 1000
	// MaxReportMessage is the longest message of a report, a heartbeat's
	// problem or a step's message.
	MaxReportMessage = 4 << 10
	// MaxObjectMessage is the longest message about one object.
	MaxObjectMessage = 1 << 10
)

// ClusterJoinData is an agent's request to join, and (as ClusterHeartbeatData)
// its heartbeat: who it is and how often it beats.
type ClusterJoinData struct {
	Cluster string `json:"cluster"`
	// KubernetesVersion of the cluster, as its API server reports it.
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// HeartbeatMillis is the agent's heartbeat interval in milliseconds.
	HeartbeatMillis int64 `json:"heartbeatMillis"`
	// Labels the agent proposes for its ManagedCluster (set only on creation).
	Labels map[string]string `json:"labels,omitempty"`
	// Problem says why the agent cannot work with its cluster (its API
	// server does not answer); empty when all is well.
	Problem string `json:"problem,omitempty"`
	// NKey is the public key the agent logs in with (it made the key
	// pair; the private half never leaves the cluster), and Proof its
	// signature over the join (pkg/creds): the hub registers the key of a
	// cluster's first join and signs the cluster's credential for it.
	NKey  string `json:"nkey,omitempty"`
	Proof string `json:"proof,omitempty"`
}

// Validate implements Data.
func (d *ClusterJoinData) Validate() error {
	var errs []error
	if d.Cluster == "" {
		errs = append(errs, errors.New("cluster is empty"))
	}
	if d.HeartbeatMillis <= 0 {
		errs = append(errs, fmt.Errorf("heartbeatMillis %d is not positive", d.HeartbeatMillis))
	}
	if len(d.Problem) > MaxReportMessage {
		errs = append(errs, fmt.Errorf("problem of %d bytes: at most %d", len(d.Problem), MaxReportMessage))
	}
	if len(d.Labels) > 64 {
		errs = append(errs, fmt.Errorf("%d labels: at most 64", len(d.Labels)))
	}
	if (d.NKey == "") != (d.Proof == "") {
		errs = append(errs, errors.New("nkey and proof come together"))
	}
	if len(d.NKey) > 64 || len(d.Proof) > 128 {
		errs = append(errs, errors.New("nkey or proof too long"))
	}
	return errors.Join(errs...)
}

// ClusterHeartbeatData is an agent's periodic sign of life.
type ClusterHeartbeatData = ClusterJoinData

// WorkData is what one cluster must hold of one application: the release's
// objects, or nothing at all (Delete).
type WorkData struct {
	AppRef
	Cluster string `json:"cluster"`
	Step    string `json:"step,omitempty"`
	// StepIndex orders the steps of one run: a late copy of an earlier
	// step's work never replaces a later step's.
	StepIndex int `json:"stepIndex,omitempty"`
	// Delete asks the agent to remove everything of the application.
	Delete bool `json:"delete,omitempty"`
	// Snapshot is the release's objects (inline or by object-store name).
	Snapshot *Snapshot `json:"snapshot,omitempty"`
	// TargetNamespace, when a topology policy sets one, is where the
	// namespaced objects go in the cluster.
	TargetNamespace string `json:"targetNamespace,omitempty"`
	// TakeOver are the kinds whose existing objects the agent may adopt
	// ("*": every kind); any other object that exists and is not this
	// application's is a conflict.
	TakeOver []string `json:"takeOver,omitempty"`
	// ReadOnly are the kinds the agent only reads ("*": every kind): such
	// an object must exist, its health counts, it is never written,
	// repaired or pruned.
	ReadOnly []string `json:"readOnly,omitempty"`
}

// Supersedes says whether w comes after step index of run ref: its
// removal, a newer release, a later attempt of the run, or a later step.
// The dispatcher never lets older work replace newer, and an agent never
// applies it (a replay of an older sealed release is refused).
func (d *WorkData) Supersedes(ref AppRef, index int) bool {
	switch {
	case d.Delete:
		return true
	case d.Revision != ref.Revision:
		return d.Revision > ref.Revision
	case d.Attempt != ref.Attempt:
		return d.Attempt > ref.Attempt
	}
	return d.StepIndex > index
}

// Validate implements Data.
func (d *WorkData) Validate() error {
	var errs []error
	if d.Delete {
		if d.Namespace == "" || d.Application == "" || d.UID == "" {
			errs = append(errs, errors.New("namespace, application and uid are required"))
		}
	} else {
		errs = append(errs, d.AppRef.validate())
		if d.Snapshot == nil {
			errs = append(errs, errors.New("work without delete needs a snapshot"))
		} else {
			errs = append(errs, d.Snapshot.validateSource())
		}
	}
	if d.Cluster == "" {
		errs = append(errs, errors.New("cluster is empty"))
	}
	return errors.Join(errs...)
}

// ClusterDriftData reports one repaired drift.
type ClusterDriftData struct {
	AppRef
	Cluster string       `json:"cluster"`
	Object  ObjectStatus `json:"object"`
	// Change is what someone did: "modified" or "deleted".
	Change string `json:"change"`
}

// Validate implements Data.
func (d *ClusterDriftData) Validate() error {
	errs := []error{d.AppRef.validate()}
	if d.Cluster == "" || d.Object.Kind == "" || d.Object.Name == "" {
		errs = append(errs, errors.New("cluster and object kind and name are required"))
	}
	if d.Change != "modified" && d.Change != "deleted" {
		errs = append(errs, fmt.Errorf("change %q is not modified or deleted", d.Change))
	}
	return errors.Join(errs...)
}

// Decisions of an ApprovalData.
const (
	DecisionApprove = "approve"
	DecisionReject  = "reject"
)

// ApprovalData is a person's decision on one waiting step of one release:
// the public contract chat bots implement.
type ApprovalData struct {
	Namespace   string `json:"namespace"`
	Application string `json:"application"`
	// Release and Attempt are the run the approval is for, as the approval
	// request names it (release <app>-v<N>, attempt 0 unless the workflow
	// was restarted): an approval of one run never counts for another, a
	// rollback or a restart, that waits on the same step and publishVersion.
	Release string `json:"release"`
	Attempt int    `json:"attempt,omitempty"`
	// PublishVersion, when given, must be the waiting release's too.
	PublishVersion string `json:"publishVersion,omitempty"`
	Step           string `json:"step"`
	Decision       string `json:"decision"`
	Approver       string `json:"approver"`
	Reason         string `json:"reason,omitempty"`
}

// Validate implements Data.
func (d *ApprovalData) Validate() error {
	var missing []string
	for name, v := range map[string]string{"namespace": d.Namespace, "application": d.Application, "release": d.Release, "step": d.Step, "approver": d.Approver} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	var errs []error
	if len(missing) > 0 {
		sort.Strings(missing)
		errs = append(errs, fmt.Errorf("missing %s", strings.Join(missing, ", ")))
	}
	if d.Decision != DecisionApprove && d.Decision != DecisionReject {
		errs = append(errs, fmt.Errorf("decision %q is not approve or reject", d.Decision))
	}
	if d.Attempt < 0 {
		errs = append(errs, fmt.Errorf("attempt %d is negative", d.Attempt))
	}
	if len(d.Reason) > MaxReportMessage {
		errs = append(errs, fmt.Errorf("reason of %d bytes: at most %d", len(d.Reason), MaxReportMessage))
	}
	return errors.Join(errs...)
}

// Approval is one recorded decision.
type Approval struct {
	Approver string    `json:"approver"`
	Decision string    `json:"decision"`
	Via      string    `json:"via"` // nats, http or cli
	Reason   string    `json:"reason,omitempty"`
	Time     time.Time `json:"time"`
	EventID  string    `json:"eventID,omitempty"`
	// By is the delegate identity (a bot) that named the approver, when
	// one did: a delegate's approvals count once toward a quorum, however
	// many people it names.
	By string `json:"by,omitempty"`
}

// ApprovalRequestedData tells bots what waits and what it will change.
type ApprovalRequestedData struct {
	AppRef
	Step     string `json:"step"`
	StepType string `json:"stepType"`
	Message  string `json:"message,omitempty"`
	// Clusters the step's topology policies name (selectors are listed as policies).
	Policies []Policy `json:"policies,omitempty"`
	// Objects the step deploys, with their container images.
	Objects      []ObjectSummary `json:"objects,omitempty"`
	Approvers    []string        `json:"approvers,omitempty"`
	MinApprovals int             `json:"minApprovals"`
}

// ObjectSummary names an object and its images.
type ObjectSummary struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Name       string   `json:"name"`
	Images     []string `json:"images,omitempty"`
}

// Validate implements Data.
func (d *ApprovalRequestedData) Validate() error {
	errs := []error{d.AppRef.validate()}
	if d.Step == "" {
		errs = append(errs, errors.New("step is empty"))
	}
	return errors.Join(errs...)
}

// ApprovalAuditData records a decision the gate accepted or refused.
type ApprovalAuditData struct {
	ApprovalData
	Via      string `json:"via"`
	EventID  string `json:"eventID"`
	Accepted bool   `json:"accepted"`
	// Code is the HTTP-style answer: 202 accepted, 401, 403, 404, 409, 422.
	Code   int    `json:"code"`
	Reason string `json:"reason,omitempty"`
}

// Validate implements Data.
func (d *ApprovalAuditData) Validate() error {
	if d.Via == "" || d.Code == 0 {
		return errors.New("via and code are required")
	}
	return nil
}

// StepDecisionData is the gate's word to the planner on a waiting step.
type StepDecisionData struct {
	AppRef
	Step      string     `json:"step"`
	Approvals []Approval `json:"approvals"`
	Reason    string     `json:"reason,omitempty"`
}

// Validate implements Data.
func (d *StepDecisionData) Validate() error {
	errs := []error{d.AppRef.validate()}
	if d.Step == "" {
		errs = append(errs, errors.New("step is empty"))
	}
	if len(d.Approvals) == 0 {
		errs = append(errs, errors.New("no approvals"))
	}
	return errors.Join(errs...)
}

// newData returns an empty data struct for a type in the catalog.
func newData(typ string) (Data, bool) {
	switch typ {
	case TypeStepStarted, TypeStepSuspended, TypeStepSucceeded, TypeStepFailed:
		return &StepData{}, true
	case TypeApplicationDeleted:
		return &ApplicationDeletedData{}, true
	case TypeStepDispatched:
		return &StepDispatchedData{}, true
	case TypeClusterStatus:
		return &ClusterStatusData{}, true
	case TypeClusterJoin, TypeClusterHeartbeat:
		return &ClusterJoinData{}, true
	case TypeWork:
		return &WorkData{}, true
	case TypeClusterDrift:
		return &ClusterDriftData{}, true
	case TypeApproval:
		return &ApprovalData{}, true
	case TypeApprovalRequested:
		return &ApprovalRequestedData{}, true
	case TypeApprovalAudit:
		return &ApprovalAuditData{}, true
	case TypeStepApproved, TypeStepRejected:
		return &StepDecisionData{}, true
	case TypeStatusBundle:
		return &StatusBundleData{}, true
	}
	return nil, false
}

// StatusBundleData carries a status bundle (pkg/bundle) as its agent
// wrote and signed it; its readers verify the signature, never this
// event's claims.
type StatusBundleData struct {
	Cluster string          `json:"cluster"`
	Bundle  json.RawMessage `json:"bundle"`
}

// MaxStatusBundle is the largest status bundle an event carries.
const MaxStatusBundle = 900 << 10

// Validate implements Data.
func (d *StatusBundleData) Validate() error {
	var errs []error
	if d.Cluster == "" {
		errs = append(errs, errors.New("cluster is empty"))
	}
	if len(d.Bundle) == 0 {
		errs = append(errs, errors.New("bundle is empty"))
	}
	if len(d.Bundle) > MaxStatusBundle {
		errs = append(errs, fmt.Errorf("bundle of %d bytes: at most %d", len(d.Bundle), MaxStatusBundle))
	}
	return errors.Join(errs...)
}
