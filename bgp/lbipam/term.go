package lbipam

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/pager"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"

	"routeagent.io/route-agent/bgp/lbipam/allocator"
)

// Event reasons. AllocationFailed and IPAllocated are MetalLB's.
const (
	ReasonAllocationFailed = "AllocationFailed"
	ReasonIPAllocated      = "IPAllocated"
	ReasonPoolRemoved      = "PoolRemoved"
	ReasonAddressConflict  = "AddressConflict"
)

// lead allocates until ctx ends: one term of leadership.
func (c *Controller) lead(ctx context.Context) {
	c.termMu.Lock()
	defer c.termMu.Unlock()
	if ctx.Err() != nil {
		return
	}
	c.log.Info("leading: allocating LoadBalancer addresses")
	defer c.log.Info("no longer leading: stopped allocating LoadBalancer addresses")

	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "lbipam"})
	defer queue.ShutDown()
	// A fresh informer per term: the cache starts from the API server's
	// current state, not from what a previous term last saw.
	factory := informers.NewSharedInformerFactory(c.client, 0)
	defer factory.Shutdown()
	inf := factory.Core().V1().Services()
	if err := inf.Informer().SetTransform(slimService); err != nil {
		c.log.Error("watching services", "err", err)
		return
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			queue.Add(key)
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		c.log.Error("watching services", "err", err)
		return
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return
	}
	t := &term{alloc: allocator.New(), queue: queue, lister: inf.Lister()}
	if err := c.restore(ctx, t); err != nil {
		return // ctx ended
	}
	defer func() {
		c.mu.Lock()
		c.term, c.results = nil, nil
		c.mu.Unlock()
	}()
	c.enqueueAll(t)

	var wg sync.WaitGroup
	for range c.workers {
		wg.Go(func() {
			for c.processNext(ctx, t) {
			}
		})
	}
	<-ctx.Done()
	queue.ShutDown()
	wg.Wait()
}

// restore re-reads every assignment from the Services' status before
// anything is allocated, so that no address is handed out twice across a
// change of leader. It lists from the API server rather than trusting
// the informer's first list, which a watch cache may serve stale: the
// previous leader's last writes must be seen.
func (c *Controller) restore(ctx context.Context, t *term) error {
	var holdings []allocator.Holding
	var byKey map[string]*corev1.Service
	for {
		holdings, byKey = nil, map[string]*corev1.Service{}
		// In pages, keeping only the slim copy of each: one list of
		// every Service at once would be the leader's largest allocation.
		p := pager.New(func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return c.client.CoreV1().Services(metav1.NamespaceAll).List(ctx, opts)
		})
		err := p.EachListItem(ctx, metav1.ListOptions{}, func(obj runtime.Object) error {
			o, _ := slimService(obj)
			svc, ok := o.(*corev1.Service)
			if !ok {
				return nil
			}
			addrs := ingressAddrs(svc)
			if !Ours(svc) || len(addrs) == 0 {
				return nil
			}
			req, _ := RequestFor(svc) // ports and keys are all Restore needs
			key := svc.Namespace + "/" + svc.Name
			byKey[key] = svc
			holdings = append(holdings, allocator.Holding{Service: key, Created: svc.CreationTimestamp.Time, Addrs: addrs, Request: req})
			return nil
		})
		if err == nil {
			break
		}
		c.log.Warn("listing services to re-read LoadBalancer assignments", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.timing.retryPeriod):
		}
	}
	c.mu.Lock()
	t.alloc.SetPools(c.pools)
	conflicts := t.alloc.Restore(holdings)
	c.term, c.results = t, map[string]*serviceState{}
	c.mu.Unlock()
	c.log.Info("re-read LoadBalancer assignments", "services", len(holdings), "conflicts", len(conflicts))
	for _, cf := range conflicts {
		c.warnConflict(byKey[cf.Service], cf)
	}
	return nil
}

func (c *Controller) warnConflict(svc *corev1.Service, cf allocator.Conflict) {
	c.log.Warn("address held by two services", "service", cf.Service, "address", cf.Addr, "keeps", cf.Holder, "err", cf.Err)
	c.recorder.Eventf(svc, corev1.EventTypeWarning, ReasonAddressConflict,
		"Address %s is also held by %s, which is older and keeps it (%v); this Service gets another address", cf.Addr, cf.Holder, cf.Err)
}

func (c *Controller) enqueueAll(t *term) {
	svcs, err := t.lister.List(labels.Everything())
	if err != nil { // the cache lister does not fail
		c.log.Error("listing services from cache", "err", err)
		return
	}
	for _, svc := range svcs {
		t.queue.Add(svc.Namespace + "/" + svc.Name)
	}
}

func (c *Controller) processNext(ctx context.Context, t *term) bool {
	key, quit := t.queue.Get()
	if quit {
		return false
	}
	defer t.queue.Done(key)
	if err := c.reconcile(ctx, t, key); err != nil {
		if ctx.Err() == nil {
			c.log.Warn("allocating LoadBalancer address; will retry", "service", key, "err", err)
			t.queue.AddRateLimited(key)
		}
		return true
	}
	t.queue.Forget(key)
	return true
}

// reconcile brings one Service's assignment and status in line.
func (c *Controller) reconcile(ctx context.Context, t *term, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key this controller queued; nothing to retry
	}
	svc, err := t.lister.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.release(t, key)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading service %s from cache: %w", key, err)
	}
	if !Ours(svc) {
		// Type changed away from LoadBalancer (the class is immutable
		// while it is one): free the address, and take it out of the
		// status if it is still the one this agent wrote.
		had, ok := c.release(t, key)
		if !ok || !slices.Equal(ingressAddrs(svc), had.Addrs) {
			return nil
		}
		_, err := c.writeStatus(ctx, svc, nil, func(s *corev1.Service) bool { return !Ours(s) })
		return err
	}
	out, ok := c.decide(t, key, svc)
	if !ok {
		return nil
	}
	for _, cf := range out.conflicts {
		c.warnConflict(svc, cf)
	}
	if out.event != nil {
		c.recorder.Event(svc, out.event.typ, out.event.reason, out.event.msg)
	}
	if out.write == nil {
		return nil
	}
	wrote, err := c.writeStatus(ctx, svc, out.write, Ours)
	if apierrors.IsNotFound(err) {
		c.release(t, key)
		return nil
	}
	if err != nil || !wrote {
		return err
	}
	c.log.Info("LoadBalancer address assigned", "service", key, "addresses", out.write, "pool", out.pool)
	c.recorder.Eventf(svc, corev1.EventTypeNormal, ReasonIPAllocated, "Assigned IP %s from pool %q", addrText(out.write), out.pool)
	return nil
}

type event struct{ typ, reason, msg string }

// decision is what reconcile does outside the lock.
type decision struct {
	conflicts []allocator.Conflict
	event     *event
	write     []netip.Addr // new status addresses, nil for no write
	pool      string
}

// decide runs the allocator for svc under the lock. ok is false while no
// pools were ever set: until then every Service would look as if its
// pool had gone.
func (c *Controller) decide(t *term, key string, svc *corev1.Service) (decision, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var d decision
	if !c.poolsKnown || c.term != t {
		return d, false
	}
	req, reqErr := RequestFor(svc)
	// A Service that arrived after the term's start may carry a status
	// set meanwhile: adopt it rather than hand out a second address.
	if _, held := t.alloc.Lookup(key); !held {
		if addrs := ingressAddrs(svc); len(addrs) > 0 {
			d.conflicts = t.alloc.Adopt(allocator.Holding{Service: key, Created: svc.CreationTimestamp.Time, Addrs: addrs, Request: req})
		}
	}
	st := c.results[key]
	if st == nil {
		st = &serviceState{}
		c.results[key] = st
	}
	var as allocator.Assignment
	var err error
	switch {
	case reqErr != nil:
		as, _ = t.alloc.Lookup(key)
		err = &allocator.Error{Reason: allocator.ReasonInvalidRequest, Msg: reqErr.Error()}
	case !c.inForce:
		as, _ = t.alloc.Lookup(key)
		if len(as.Addrs) == 0 {
			err = &allocator.Error{Reason: allocator.ReasonNoPool, Msg: "no bgp-config is in force"}
		}
	default:
		as, err = t.alloc.Assign(key, req)
	}
	st.ServiceStatus = ServiceStatus{Service: key, Addrs: as.Addrs, Pool: as.Pool, Orphaned: as.Orphaned}
	var ev *event
	switch {
	case err != nil:
		st.Pending, st.Reason = err.Error(), allocator.ReasonOf(err)
		msg := fmt.Sprintf("Failed to allocate IP for %q: %v", key, err)
		if len(as.Addrs) > 0 {
			msg += fmt.Sprintf("; keeping %s", addrText(as.Addrs))
		}
		ev = &event{corev1.EventTypeWarning, ReasonAllocationFailed, msg}
	case as.Orphaned && !c.inForce:
		// Without a config every address is outside the pools; that
		// is not news about any one Service.
	case as.Orphaned && as.Pool != "":
		ev = &event{corev1.EventTypeWarning, ReasonPoolRemoved, fmt.Sprintf(
			"Pool %q is no longer configured: %s stays assigned until the Service is deleted or stops being a LoadBalancer", as.Pool, addrText(as.Addrs))}
	case as.Orphaned:
		ev = &event{corev1.EventTypeWarning, ReasonPoolRemoved, fmt.Sprintf(
			"%s lies in no configured pool: it stays assigned until the Service is deleted or stops being a LoadBalancer", addrText(as.Addrs))}
	}
	// One Event per change of outcome, not one per resync.
	if ev == nil {
		st.lastEvent = ""
	} else if k := ev.reason + ev.msg; k != st.lastEvent {
		st.lastEvent, d.event = k, ev
	}
	if len(as.Addrs) > 0 && !slices.Equal(ingressAddrs(svc), as.Addrs) {
		d.write, d.pool = as.Addrs, as.Pool
	}
	return d, true
}

// release frees what key holds. Freed addresses may serve Services that
// are waiting for one: they are queued again.
func (c *Controller) release(t *term, key string) (allocator.Assignment, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.term != t {
		return allocator.Assignment{}, false
	}
	delete(c.results, key)
	as, ok := t.alloc.Release(key)
	if ok {
		for k, st := range c.results {
			if len(st.Addrs) == 0 && st.Pending != "" {
				t.queue.Add(k)
			}
		}
	}
	return as, ok
}

// writeStatus sets the status ingress of svc to addrs, retrying on
// conflicts with a fresh copy as long as still(copy) holds. wrote is
// false when there was nothing to change.
func (c *Controller) writeStatus(ctx context.Context, svc *corev1.Service, addrs []netip.Addr, still func(*corev1.Service) bool) (wrote bool, err error) {
	cur := svc // the cached copy first: it is usually current
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if cur == nil {
			fresh, err := c.client.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur = fresh
		}
		obj := cur
		cur = nil
		if !still(obj) || slices.Equal(ingressAddrs(obj), addrs) {
			return nil
		}
		// A merge patch of the status alone, which the cache's slim copy
		// can write; its resourceVersion makes it fail with a conflict,
		// as an update would, if the Service changed since.
		patch, err := statusPatch(obj.ResourceVersion, addrs)
		if err != nil {
			return err
		}
		if _, err := c.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
			return err
		}
		wrote = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("writing status.loadBalancer of service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return wrote, nil
}

// statusPatch is the merge patch setting status.loadBalancer.ingress to
// addrs (removing it for none) on the Service version rv.
func statusPatch(rv string, addrs []netip.Addr) ([]byte, error) {
	var ingress any // null removes the list
	if in := ingressFor(addrs); len(in) > 0 {
		ingress = in
	}
	return json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": rv},
		"status":   map[string]any{"loadBalancer": map[string]any{"ingress": ingress}},
	})
}

func addrText(addrs []netip.Addr) string {
	s := ""
	for i, a := range addrs {
		if i > 0 {
			s += ","
		}
		s += a.String()
	}
	return s
}

// slimService keeps of a Service only what Ours, RequestFor, ingressAddrs
// and Events read, and the informer's identity fields: the leader caches
// every Service of the cluster, and status writes are patches that need
// no more.
func slimService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		if o, ok := obj.(metav1.Object); ok {
			o.SetManagedFields(nil)
		}
		return obj, nil
	}
	out := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, UID: s.UID,
			ResourceVersion: s.ResourceVersion, CreationTimestamp: s.CreationTimestamp},
		Spec: corev1.ServiceSpec{Type: s.Spec.Type},
	}
	if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return out, nil
	}
	for _, k := range []string{AnnotationPool, AnnotationPoolMetalLB, AnnotationIPs, AnnotationIPsMetalLB, AnnotationShared, AnnotationSharedMetalLB} {
		if v, ok := s.Annotations[k]; ok {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	out.Spec = corev1.ServiceSpec{
		Type: s.Spec.Type, LoadBalancerClass: s.Spec.LoadBalancerClass, LoadBalancerIP: s.Spec.LoadBalancerIP,
		ExternalTrafficPolicy: s.Spec.ExternalTrafficPolicy, Selector: s.Spec.Selector,
		IPFamilies: s.Spec.IPFamilies, IPFamilyPolicy: s.Spec.IPFamilyPolicy, ClusterIPs: s.Spec.ClusterIPs,
	}
	for _, p := range s.Spec.Ports {
		out.Spec.Ports = append(out.Spec.Ports, corev1.ServicePort{Protocol: p.Protocol, Port: p.Port})
	}
	for _, in := range s.Status.LoadBalancer.Ingress {
		out.Status.LoadBalancer.Ingress = append(out.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: in.IP})
	}
	return out, nil
}
