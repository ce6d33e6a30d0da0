package kubernetes_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/kubernetes"
)

// TestRBAC: a suite whose service account has only docs/kubernetes.md's
// Role in its namespace checks pods out there (SSH through exec included),
// and gets a clear error, leaving no pod, in a namespace it may not use.
func TestRBAC(t *testing.T) {
	c := needCluster(t)
	ctx := t.Context()
	ns := "brokertest-rbac-" + inventory.NewID()
	kc := c.limitedKubeconfig(t, ns)

	p := open(t, c.config(t, map[string]any{"kubeconfig": kc, "namespace": ns}))
	rec := checkout(t, p, map[string]any{kubernetes.ArgImage: sshdImage})
	h, err := p.Connect(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if res, err := h.Execute(ctx, "echo hi"); err != nil || res.Stdout != "hi\n" {
		t.Fatalf("Execute with the Role's rights: %+v, %v", res, err)
	}
	if recs, err := p.Sync(ctx, ""); err != nil || len(recs) != 1 {
		t.Fatalf("Sync with the Role's rights: %d records, %v", len(recs), err)
	}

	other := open(t, c.config(t, map[string]any{"kubeconfig": kc, "namespace": "default"}))
	id := inventory.NewID()
	_, err = other.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: map[string]any{kubernetes.ArgImage: busyboxImage}})
	errorContains(t, err, "forbidden", `namespace default`, "RBAC", "docs/kubernetes.md")
	c.noPodLeft(t, id)
}

// limitedKubeconfig makes namespace ns, a service account there bound to
// testdata/role.yaml (the Role docs/kubernetes.md gives), and a kubeconfig
// with its token. All is removed at t's end.
func (c *cluster) limitedKubeconfig(t *testing.T, ns string) string {
	t.Helper()
	ctx := t.Context()
	raw, err := os.ReadFile("testdata/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.Role
	if err := yaml.UnmarshalStrict(raw, &role); err != nil {
		t.Fatalf("testdata/role.yaml: %v", err)
	}
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	})
	sa, err := c.cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "suite"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.cs.RbacV1().Roles(ns).Create(ctx, &role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "suite-hostbroker"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: ns}},
	}
	if _, err := c.cs.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := c.cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa.Name, &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := clientcmd.LoadFromFile(c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cur := admin.Contexts[admin.CurrentContext]
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = admin.Clusters[cur.Cluster]
	cfg.AuthInfos["suite"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	cfg.Contexts["suite"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "suite", Namespace: ns}
	cfg.CurrentContext = "suite"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDocsRole: docs/kubernetes.md gives testdata/role.yaml, which
// TestRBAC proves enough.
func TestDocsRole(t *testing.T) {
	doc, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	role, err := os.ReadFile("testdata/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), string(role)) {
		t.Error("docs/kubernetes.md does not hold testdata/role.yaml as it is (the Role TestRBAC checks)")
	}
}
