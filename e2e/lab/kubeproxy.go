package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kube-proxy's identity, as kubeadm makes it: a ServiceAccount bound to the
// built-in system:node-proxier role.
const kubeProxyServiceAccount = "kube-proxy"

// kubeProxyHealthz is where each node's kube-proxy answers /healthz inside
// the node's namespace (kube-proxy's default port).
const kubeProxyHealthz = "127.0.0.1:10256"

// KubeProxyMode is the proxier the lab's kube-proxies run: iptables, whose
// tools the lab installs anyway (iptables-nft on Debian).
const KubeProxyMode = "iptables"

// podNetwork holds every node's pod CIDR: kube-proxy's --cluster-cidr, by
// which it tells pod traffic from traffic coming from outside.
var podNetwork = "10.5.0.0/16"

// setupKubeProxy gives kube-proxy its ServiceAccount and binding.
func (l *Lab) setupKubeProxy(ctx context.Context) error {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: kubeProxyServiceAccount, Namespace: agentNamespace}}
	if _, err := l.Kube.CoreV1().ServiceAccounts(agentNamespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating serviceaccount %s/%s: %w", agentNamespace, kubeProxyServiceAccount, err)
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "lab:kube-proxy"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node-proxier"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: kubeProxyServiceAccount, Namespace: agentNamespace}},
	}
	if _, err := l.Kube.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("binding kube-proxy to system:node-proxier: %w", err)
	}
	return nil
}

// startKubeProxy runs kube-proxy in n's namespace, as the node's
// DaemonSet pod would (host network), and waits until it has programmed
// the Services it found: its /healthz answers 200 only after a sync.
func (l *Lab) startKubeProxy(ctx context.Context, n *Node) error {
	dir := filepath.Join(l.Dir, n.Name, "kube-proxy")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := l.tokenKubeconfig(ctx, kubeProxyServiceAccount, kubeconfig); err != nil {
		return err
	}
	p, err := l.start(n.NS, "kube-proxy", dir, l.opts.KubeProxy,
		"--kubeconfig", kubeconfig, "--hostname-override", n.Name,
		"--proxy-mode", KubeProxyMode, "--cluster-cidr", podNetwork,
		"--healthz-bind-address", kubeProxyHealthz, "--metrics-bind-address", "127.0.0.1:10249",
		// Conntrack limits and timeouts are the host's: zero leaves them.
		"--conntrack-max-per-core", "0", "--conntrack-tcp-timeout-established", "0", "--conntrack-tcp-timeout-close-wait", "0",
		"--oom-score-adj", "0", "--v", "1")
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{DialContext: nsDialer(n.NS)}, Timeout: 2 * time.Second}
	return WaitFor(ctx, time.Minute, "kube-proxy on "+n.Name+" to sync", func() error {
		if p.exited() {
			return Permanent(fmt.Errorf("kube-proxy on %s exited:\n%s", n.Name, p.tail(30)))
		}
		resp, err := client.Get("http://" + kubeProxyHealthz + "/healthz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz %d: %s", resp.StatusCode, body)
		}
		return nil
	})
}
