package lab

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
)

// The agents' identity: deploy/rbac.yaml's ServiceAccount.
const (
	agentNamespace      = "kube-system"
	agentServiceAccount = "route-agent"
	fieldManager        = "route-agent-lab"
)

type pki struct {
	caPEM, certPEM, keyPEM []byte
	saPubPEM, saKeyPEM     []byte
	adminToken             string
}

func newPKI() (*pki, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "route-agent-lab-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{apiAddr.AsSlice(), net.ParseIP("10.96.0.1"), net.ParseIP("127.0.0.1")},
		DNSNames:    []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	return &pki{
		caPEM:      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		certPEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:     pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		saPubPEM:   pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
		saKeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
		adminToken: hex.EncodeToString(tok),
	}, nil
}

// startAPIServer runs etcd and kube-apiserver in the management namespace
// and returns once the API server is ready.
func (l *Lab) startAPIServer(ctx context.Context, ns string) error {
	dir := filepath.Join(l.Dir, "apiserver")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	p, err := newPKI()
	if err != nil {
		return fmt.Errorf("making lab certificates: %w", err)
	}
	files := map[string][]byte{
		"ca.crt": p.caPEM, "apiserver.crt": p.certPEM, "apiserver.key": p.keyPEM,
		"sa.pub": p.saPubPEM, "sa.key": p.saKeyPEM,
		"tokens.csv": fmt.Appendf(nil, "%s,lab-admin,lab-admin,system:masters\n", p.adminToken),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	etcd, err := l.start(ns, "etcd", dir, "etcd",
		"--name", "lab", "--data-dir", filepath.Join(dir, "etcd-data"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "lab=http://127.0.0.1:2380")
	if err != nil {
		return err
	}
	f := func(name string) string { return filepath.Join(dir, name) }
	api, err := l.start(ns, "kube-apiserver", dir, l.opts.KubeAPIServer,
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", apiAddr.String(), "--advertise-address", apiAddr.String(), "--secure-port", "6443",
		"--tls-cert-file", f("apiserver.crt"), "--tls-private-key-file", f("apiserver.key"),
		"--token-auth-file", f("tokens.csv"), "--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", f("sa.pub"), "--service-account-signing-key-file", f("sa.key"),
		"--service-cluster-ip-range", "10.96.0.0/16", "--cert-dir", dir)
	if err != nil {
		return err
	}

	l.restConfig = &rest.Config{
		Host:            "https://" + net.JoinHostPort(apiAddr.String(), "6443"),
		BearerToken:     p.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM},
		// The API server is only reachable inside the management
		// namespace, so the lab's own client dials through it.
		Dial:  nsDialer(ns),
		QPS:   50,
		Burst: 100,
	}
	l.caPEM = p.caPEM
	if l.Kube, err = kubernetes.NewForConfig(l.restConfig); err != nil {
		return err
	}
	if l.dynamic, err = dynamic.NewForConfig(l.restConfig); err != nil {
		return err
	}
	return WaitFor(ctx, 3*time.Minute, "kube-apiserver to become ready", func() error {
		for _, pr := range []*proc{etcd, api} {
			if pr.exited() {
				return Permanent(fmt.Errorf("%s exited:\n%s", pr.name, pr.tail(20)))
			}
		}
		body, err := l.Kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%w: %s", err, body)
		}
		// The system namespaces appear shortly after readiness.
		_, err = l.Kube.CoreV1().Namespaces().Get(ctx, agentNamespace, metav1.GetOptions{})
		return err
	})
}

// applyManifests server-side-applies every object of a multi-document YAML
// file; with dryRun the API server validates and admits them but stores
// nothing.
func (l *Lab) applyManifests(ctx context.Context, mapper meta.RESTMapper, data []byte, dryRun bool) error {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("decoding manifest: %w", err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(schema.GroupKind{Group: gvk.Group, Kind: gvk.Kind}, gvk.Version)
		if err != nil {
			return fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		var ri dynamic.ResourceInterface = l.dynamic.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			ri = l.dynamic.Resource(m.Resource).Namespace(obj.GetNamespace())
		}
		b, err := obj.MarshalJSON()
		if err != nil {
			return err
		}
		opts := metav1.PatchOptions{FieldManager: fieldManager, Force: ptr.To(true)}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		if _, err := ri.Patch(ctx, obj.GetName(), "application/apply-patch+yaml", b, opts); err != nil {
			return fmt.Errorf("applying %s %s/%s (dry run %v): %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), dryRun, err)
		}
	}
}

// ApplyBGPConfig replaces the bgp-config ConfigMap's config.yaml and
// returns the new resourceVersion.
func (l *Lab) ApplyBGPConfig(ctx context.Context, yaml string) (string, error) {
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "bgp-config"},
		Data:       map[string]string{"config.yaml": yaml},
	}
	b, err := json.Marshal(cm)
	if err != nil {
		return "", err
	}
	got, err := l.Kube.CoreV1().ConfigMaps("kube-system").Patch(ctx, "bgp-config", "application/apply-patch+yaml", b,
		metav1.PatchOptions{FieldManager: fieldManager, Force: ptr.To(true)})
	if err != nil {
		return "", fmt.Errorf("applying bgp-config: %w", err)
	}
	return got.ResourceVersion, nil
}

// ApplyIPMasqConfig creates or replaces the ip-masq-agent ConfigMap in
// kube-system with yaml under key config, and returns its resourceVersion.
func (l *Lab) ApplyIPMasqConfig(ctx context.Context, yaml string) (string, error) {
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "ip-masq-agent"},
		Data:       map[string]string{"config": yaml},
	}
	b, err := json.Marshal(cm)
	if err != nil {
		return "", err
	}
	got, err := l.Kube.CoreV1().ConfigMaps("kube-system").Patch(ctx, "ip-masq-agent", "application/apply-patch+yaml", b,
		metav1.PatchOptions{FieldManager: fieldManager, Force: ptr.To(true)})
	if err != nil {
		return "", fmt.Errorf("applying ip-masq-agent: %w", err)
	}
	return got.ResourceVersion, nil
}

// createNode registers n as a Node with its labels, pod CIDR and address, as
// kubelet and the node IPAM controller would.
func (l *Lab) createNode(ctx context.Context, n *Node) error {
	obj := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.Labels},
		Spec:       corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}},
	}
	created, err := l.Kube.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating node %s: %w", n.Name, err)
	}
	created.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: n.IP.String()},
		{Type: corev1.NodeHostName, Address: n.Name},
	}
	if _, err := l.Kube.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting addresses of node %s: %w", n.Name, err)
	}
	return nil
}

// tokenKubeconfig writes a kubeconfig holding a token for the
// ServiceAccount kube-system/sa, so its holder has exactly that account's
// rights (for the agent: what deploy/rbac.yaml gives it).
func (l *Lab) tokenKubeconfig(ctx context.Context, sa, path string) error {
	tr, err := l.Kube.CoreV1().ServiceAccounts(agentNamespace).CreateToken(ctx, sa,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600)}},
		metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("requesting a token for serviceaccount %s/%s: %w", agentNamespace, sa, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: l.restConfig.Host, CertificateAuthorityData: l.caPEM}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: sa}
	cfg.CurrentContext = "lab"
	return clientcmd.WriteToFile(*cfg, path)
}
