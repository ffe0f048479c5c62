package cluster

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"routeagent.io/route-agent/cluster/snapshot"
)

// Annotations a Service may name its address pool with. MetalLB's is
// honoured so that Services written for MetalLB work unchanged.
const (
	PoolAnnotation        = "routeagent.io/address-pool"
	MetalLBPoolAnnotation = "metallb.universe.tf/address-pool"
)

// serviceWatch reads Services and their EndpointSlices from the informer
// caches.
type serviceWatch struct {
	services corelisters.ServiceLister
	// endpoints is the EndpointSlice cache, indexed by byService.
	endpoints cache.Indexer
}

// byService indexes EndpointSlices by the namespace/name of the Service
// they belong to (their kubernetes.io/service-name label). A label
// selector would test every slice of the namespace for every Service,
// which with 10,000 Services is 10^8 label matches per snapshot.
const byService = "service"

func serviceOfSlice(obj any) ([]string, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name, ok := es.Labels[discoveryv1.LabelServiceName]
	if !ok {
		return nil, nil
	}
	return []string{es.Namespace + "/" + name}, nil
}

// watchServices registers the Service and EndpointSlice informers of f,
// which Watch starts and waits for with its other informers. Every agent
// caches every Service and EndpointSlice: a node announces a Service's
// address depending on where its endpoints are.
func watchServices(f informers.SharedInformerFactory, handler cache.ResourceEventHandler) (*serviceWatch, error) {
	svc := f.Core().V1().Services()
	eps := f.Discovery().V1().EndpointSlices()
	for _, w := range []struct {
		what string
		inf  cache.SharedIndexInformer
		slim cache.TransformFunc
	}{{"services", svc.Informer(), slimService}, {"endpointslices", eps.Informer(), slimEndpointSlice}} {
		if err := w.inf.SetTransform(w.slim); err != nil {
			return nil, fmt.Errorf("watching %s: %w", w.what, err)
		}
		if _, err := w.inf.AddEventHandler(handler); err != nil {
			return nil, fmt.Errorf("watching %s: %w", w.what, err)
		}
	}
	if err := eps.Informer().AddIndexers(cache.Indexers{byService: serviceOfSlice}); err != nil {
		return nil, fmt.Errorf("watching endpointslices: %w", err)
	}
	return &serviceWatch{services: svc.Lister(), endpoints: eps.Informer().GetIndexer()}, nil
}

// read returns the LoadBalancer Services in the caches and warnings about
// what it had to skip.
func (w *serviceWatch) read() ([]snapshot.Service, []string, error) {
	all, err := w.services.List(labels.Everything())
	if err != nil {
		return nil, nil, fmt.Errorf("listing services from cache: %w", err)
	}
	var lbs []*corev1.Service
	var endpointSlices []*discoveryv1.EndpointSlice
	for _, s := range all {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		lbs = append(lbs, s)
		// Only the slices of LoadBalancer Services: most of a cluster's
		// slices belong to other Services.
		eps, err := w.endpoints.ByIndex(byService, s.Namespace+"/"+s.Name)
		if err != nil {
			return nil, nil, fmt.Errorf("listing endpointslices of service %s/%s from cache: %w", s.Namespace, s.Name, err)
		}
		for _, o := range eps {
			if es, ok := o.(*discoveryv1.EndpointSlice); ok {
				endpointSlices = append(endpointSlices, es)
			}
		}
	}
	svcs, warnings := servicesFrom(lbs, endpointSlices)
	return svcs, warnings, nil
}

// servicesFrom turns Services and EndpointSlices into the snapshot's
// Services: those of type LoadBalancer, sorted by namespace and name, with
// the endpoint facts of the slices labelled with their name. It returns a
// warning for each ingress IP it cannot parse. It copies what it keeps:
// snapshots outlive the informer's objects.
func servicesFrom(svcs []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice) ([]snapshot.Service, []string) {
	type key struct{ namespace, name string }
	byService := map[key][]*discoveryv1.EndpointSlice{}
	for _, es := range endpointSlices {
		name, ok := es.Labels[discoveryv1.LabelServiceName]
		if !ok {
			continue
		}
		k := key{es.Namespace, name}
		byService[k] = append(byService[k], es)
	}
	var out []snapshot.Service
	var warnings []string
	for _, o := range svcs {
		if o.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		s := snapshot.Service{
			Namespace:                  o.Namespace,
			Name:                       o.Name,
			LoadBalancer:               true,
			ExternalTrafficPolicyLocal: o.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
			Pool:                       cmp.Or(o.Annotations[PoolAnnotation], o.Annotations[MetalLBPoolAnnotation]),
		}
		if o.Spec.LoadBalancerClass != nil {
			s.Class = *o.Spec.LoadBalancerClass
		}
		for i, in := range o.Status.LoadBalancer.Ingress {
			if in.IP == "" { // a hostname, as cloud load balancers report
				continue
			}
			ip, err := netip.ParseAddr(in.IP)
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("service %s/%s: ignoring status.loadBalancer.ingress[%d].ip %q: %v",
					o.Namespace, o.Name, i, in.IP, err))
				continue
			}
			// Pools hold IPv4 addresses as IPv4: an IPv4-mapped form
			// would match none of them.
			s.Ingress = append(s.Ingress, ip.Unmap())
		}
		s.ReadyNodes, s.HasReady = readyEndpoints(byService[key{o.Namespace, o.Name}])
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b snapshot.Service) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out, warnings
}

// readyEndpoints returns the sorted nodes of a Service's endpoints that
// count as ready, and whether any does (see snapshot.Service.ReadyNodes).
// The conditions are read as kube-proxy reads them: ready and serving
// count as true when unset, terminating as false.
func readyEndpoints(endpointSlices []*discoveryv1.EndpointSlice) ([]string, bool) {
	var ready, servingTerminating []discoveryv1.Endpoint
	for _, es := range endpointSlices {
		for _, ep := range es.Endpoints {
			c := ep.Conditions
			switch {
			case c.Ready == nil || *c.Ready:
				ready = append(ready, ep)
			case (c.Serving == nil || *c.Serving) && c.Terminating != nil && *c.Terminating:
				servingTerminating = append(servingTerminating, ep)
			}
		}
	}
	counted := ready
	if len(counted) == 0 {
		counted = servingTerminating
	}
	var nodes []string
	for _, ep := range counted {
		if ep.NodeName != nil && *ep.NodeName != "" {
			nodes = append(nodes, *ep.NodeName)
		}
	}
	slices.Sort(nodes)
	return slices.Compact(nodes), len(counted) > 0
}

// slimService keeps of a Service only what servicesFrom reads and the
// informer needs (its identity and resourceVersion): every agent caches
// every Service of the cluster, and most of a Service is of no use here.
// The ingress list keeps its positions, which warnings name.
func slimService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return dropManagedFields(obj)
	}
	out := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, UID: s.UID, ResourceVersion: s.ResourceVersion},
		Spec:       corev1.ServiceSpec{Type: s.Spec.Type},
	}
	if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return out, nil
	}
	out.Spec.LoadBalancerClass = s.Spec.LoadBalancerClass
	out.Spec.ExternalTrafficPolicy = s.Spec.ExternalTrafficPolicy
	for _, k := range []string{PoolAnnotation, MetalLBPoolAnnotation} {
		if v, ok := s.Annotations[k]; ok {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	if in := s.Status.LoadBalancer.Ingress; len(in) > 0 {
		out.Status.LoadBalancer.Ingress = make([]corev1.LoadBalancerIngress, len(in))
		for i := range in {
			out.Status.LoadBalancer.Ingress[i].IP = in[i].IP
		}
	}
	return out, nil
}

// slimEndpointSlice keeps of an EndpointSlice only what readyEndpoints
// reads, the Service it belongs to, and the informer's identity fields:
// every agent caches every slice of the cluster.
func slimEndpointSlice(obj any) (any, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return dropManagedFields(obj)
	}
	out := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: es.Namespace, Name: es.Name, UID: es.UID, ResourceVersion: es.ResourceVersion},
		AddressType: es.AddressType,
	}
	if name, ok := es.Labels[discoveryv1.LabelServiceName]; ok {
		out.Labels = map[string]string{discoveryv1.LabelServiceName: name}
	}
	if len(es.Endpoints) > 0 {
		out.Endpoints = make([]discoveryv1.Endpoint, len(es.Endpoints))
		for i, ep := range es.Endpoints {
			out.Endpoints[i] = discoveryv1.Endpoint{Conditions: ep.Conditions, NodeName: ep.NodeName}
		}
	}
	return out, nil
}

// dropManagedFields keeps the server-side-apply bookkeeping, which can be
// larger than the object itself, out of the caches: what the slim
// transforms do for objects of a type they do not know.
func dropManagedFields(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	return obj, nil
}
