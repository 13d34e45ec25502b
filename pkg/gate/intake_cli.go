package gate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/events"
)

// resumeWorkers is how many Applications' resume requests are handled at
// once (one Application's never twice at once).
const resumeWorkers = 2

// resumes is the CLI's way in: `kubectl flotilla workflow resume` writes a
// resume request on the Application's status (the hub's RBAC and admission
// policy vouch for its writer). The informer only queues the Application;
// a worker reads the request, checks with a SubjectAccessReview that the
// named writer may indeed update the status, and takes the decision.
type resumes struct {
	queue workqueue.TypedRateLimitingInterface[string]
	apps  cache.GenericLister

	mu sync.Mutex
	// refused is the request last refused per Application: refused once,
	// however often the informer sees it again.
	refused map[string]string
}

func newResumes() *resumes {
	return &resumes{
		// A request whose step does not wait yet, or that met a failure,
		// is tried again soon, then every few seconds.
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 2*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "resumes"}),
		refused: map[string]string{},
	}
}

// errNoWaitYet: a resume request came before the gate stored its step's
// wait (the suspension is on its way): it is tried again until the wait
// exists or the request is gone.
var errNoWaitYet = errors.New("no step waits yet")

// watchResumes starts the Application informer and the workers; stop
// ends them.
func (g *Gate) watchResumes(ctx context.Context) (stop func(), err error) {
	r := g.resumes
	factory := dynamicinformer.NewDynamicSharedInformerFactory(g.dyn, 0)
	inf := factory.ForResource(v1beta1.ApplicationResource)
	r.apps = inf.Lister()
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			r.queue.Add(key)
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }}); err != nil {
		return nil, err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return nil, errors.New("the Application cache did not sync")
	}
	var wg sync.WaitGroup
	for range resumeWorkers {
		wg.Go(func() {
			for g.nextResume(ctx) {
			}
		})
	}
	return func() {
		r.queue.ShutDown()
		wg.Wait()
		factory.Shutdown()
	}, nil
}

// nextResume handles one queued Application; false once the queue shut down.
func (g *Gate) nextResume(ctx context.Context) bool {
	q := g.resumes.queue
	key, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(key)
	err := g.resume(ctx, key)
	switch {
	case err == nil:
		q.Forget(key)
	case errors.Is(err, errNoWaitYet):
		if q.NumRequeues(key) == 0 {
			g.log.Info("resume request waits for its step to be held", "app", key)
		}
		q.AddRateLimited(key)
	default:
		if ctx.Err() == nil {
			g.log.Warn("resume request failed, retrying", "app", key, "err", err)
		}
		q.AddRateLimited(key)
	}
	return true
}

// resume takes the resume request on the Application key, if one is there
// and not counted yet. A refusal is audited (an ApprovalRefused Event the
// CLI waits for) and not retried; a failure is.
func (g *Gate) resume(ctx context.Context, key string) error {
	r := g.resumes
	obj, err := r.apps.Get(key)
	if apierrors.IsNotFound(err) {
		return nil // gone: so is its request
	}
	if err != nil {
		return err
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil
	}
	req, ok := resumeRequest(u)
	if !ok {
		return nil
	}
	id := "cli." + req.ID
	if r.wasRefused(key, id) {
		return nil
	}
	w, _, err := g.waits.get(ctx, u.GetNamespace(), u.GetName())
	if err != nil {
		return err
	}
	if w == nil || w.Step != req.Step {
		// The planner keeps a request on the status only while its step
		// waits: the gate has not held that step yet.
		return errNoWaitYet
	}
	// Informers see the request on every status write until the step
	// moves: count it once, quietly.
	if slices.Contains(w.Seen, id) || w.decided() {
		return nil
	}
	// The request binds the release its writer saw waiting; the run is the
	// one waiting now (the planner keeps a request only while its step
	// waits, and drops it when the run restarts).
	d := &events.ApprovalData{Namespace: u.GetNamespace(), Application: u.GetName(), Release: orText(req.Release, w.Release), Attempt: w.Attempt,
		Step: req.Step, Decision: orText(req.Decision, events.DecisionApprove), Approver: req.User, Reason: req.Reason}
	// The request names its writer; check that this identity may indeed
	// update the Application's status, as the request's write required.
	err = g.mayUpdateStatus(ctx, req.User, req.Groups, d.Namespace, d.Application)
	if err == nil {
		err = g.take(ctx, decision{ID: id, Data: d, Via: ViaCLI, Identity: req.User, Groups: req.Groups})
	} else if refused(err) {
		g.audit(ctx, id, d, ViaCLI, req.User, err)
	}
	if retryable(err) {
		return err
	}
	if err != nil {
		r.refuse(key, id)
	}
	return nil
}

// resumeRequest is the resume request on an Application's status, if a
// usable one is there.
func resumeRequest(u *unstructured.Unstructured) (*v1beta1.ResumeRequest, bool) {
	raw, found, _ := unstructured.NestedMap(u.Object, "status", "workflow", "resume")
	if !found {
		return nil, false
	}
	var req v1beta1.ResumeRequest
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &req); err != nil || req.ID == "" || req.User == "" || req.Step == "" {
		return nil, false
	}
	return &req, true
}

func (r *resumes) wasRefused(key, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused[key] == id
}

func (r *resumes) refuse(key, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refused[key] = id
}

// mayUpdateStatus asks the hub whether user (in groups) may update the
// Application's status: a Forbidden refusal if not.
func (g *Gate) mayUpdateStatus(ctx context.Context, user string, groups []string, ns, app string) error {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "update", Group: v1beta1.GroupVersion.Group,
			Resource: "applications", Subresource: "status", Name: app},
	}}
	res, err := g.cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("ask whether %s may update applications/status of %s/%s: %w", user, ns, app, err)
	}
	if !res.Status.Allowed {
		return refuse(ReasonForbidden, "%s may not update applications/status of %s/%s, so may not resume it", user, ns, app)
	}
	return nil
}
