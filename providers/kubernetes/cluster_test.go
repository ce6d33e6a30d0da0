package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/kubernetes"
)

// The test images, as scripts/build-test-images.sh builds them and
// scripts/k8s-cluster.sh imports them into the cluster.
const (
	sshdImage    = "brokertest/debian-sshd:12"
	busyboxImage = "brokertest/busybox:1"
)

// scriptKubeconfig is where scripts/k8s-cluster.sh writes the admin's
// kubeconfig (its default BROKER_K8S_DIR).
const scriptKubeconfig = "/var/lib/brokertest-k8s/admin.kubeconfig"

// required reports whether BROKER_TEST_REQUIRE names what (or "all"), as
// the core's internal/testenv does (a module of its own cannot import it).
func required(what string) bool {
	for w := range strings.SplitSeq(os.Getenv("BROKER_TEST_REQUIRE"), ",") {
		if w = strings.TrimSpace(w); strings.EqualFold(w, what) || strings.EqualFold(w, "all") {
			return true
		}
	}
	return false
}

// cluster is a reachable cluster and its admin kubeconfig.
type cluster struct {
	kubeconfig string
	cs         k8s.Interface
}

// needCluster finds the test cluster: $BROKER_K8S_KUBECONFIG, else
// $KUBECONFIG, else the one scripts/k8s-cluster.sh runs. It skips t when
// none answers or an image the tests use is not on its node, or fails it
// when BROKER_TEST_REQUIRE names kubernetes.
func needCluster(t testing.TB) *cluster {
	t.Helper()
	c, err := findCluster()
	if err == nil {
		return c
	}
	why := fmt.Sprintf("%v (start one with: bash scripts/k8s-cluster.sh start; or set BROKER_K8S_KUBECONFIG)", err)
	if required("kubernetes") {
		t.Fatalf("kubernetes is required (BROKER_TEST_REQUIRE=%s) but unavailable: %s", os.Getenv("BROKER_TEST_REQUIRE"), why)
	}
	t.Skipf("skipping: kubernetes unavailable: %s (set BROKER_TEST_REQUIRE=kubernetes to fail instead)", why)
	return nil
}

var clusterOnce = struct {
	done bool
	c    *cluster
	err  error
}{}

func findCluster() (*cluster, error) {
	if clusterOnce.done {
		return clusterOnce.c, clusterOnce.err
	}
	clusterOnce.done = true
	clusterOnce.c, clusterOnce.err = probeCluster()
	return clusterOnce.c, clusterOnce.err
}

func probeCluster() (*cluster, error) {
	path := os.Getenv("BROKER_K8S_KUBECONFIG")
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path == "" {
		path = scriptKubeconfig
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no kubeconfig: %w", err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	rc.Timeout = 10 * time.Second
	cs, err := k8s.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	// A kubelet lists images it was given a moment ago only at its next
	// refresh (up to ~30 s after scripts/k8s-cluster.sh imported them).
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := imagesOnNodes(cs, path)
		if err == nil {
			return &cluster{kubeconfig: path, cs: cs}, nil
		}
		if !errors.Is(err, errNoImage) || time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(2 * time.Second)
	}
}

var errNoImage = errors.New("image missing")

// imagesOnNodes checks that a Ready node has the test images.
func imagesOnNodes(cs k8s.Interface, path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("cluster of %s: %w", path, err)
	}
	var images []string
	for _, n := range nodes.Items {
		if !ready(&n) {
			continue
		}
		for _, im := range n.Status.Images {
			images = append(images, im.Names...)
		}
	}
	if len(images) == 0 {
		return fmt.Errorf("cluster of %s has no Ready node", path)
	}
	for _, want := range []string{sshdImage, busyboxImage} {
		if !slices.Contains(images, "docker.io/"+want) {
			return fmt.Errorf("%w: no node of the cluster of %s has image %s (bash scripts/k8s-cluster.sh import %s)", errNoImage, path, want, want)
		}
	}
	return nil
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// config is a provider configuration for the cluster with settings over
// the kubeconfig's; the pods never pull (the images are imported).
func (c *cluster) config(t testing.TB, settings map[string]any) providers.Config {
	s := map[string]any{"kubeconfig": c.kubeconfig, "image_pull_policy": "Never", "timeout": 30, "pod_wait": 90}
	for k, v := range settings {
		s[k] = v
	}
	return providers.Config{Provider: kubernetes.Name, Instance: "test", Settings: s, Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}
}

// open opens a provider, closed at t's end.
func open(t testing.TB, cfg providers.Config) *kubernetes.Provider {
	t.Helper()
	p, err := kubernetes.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// podsOf lists the pods labelled with broker id id, in every namespace.
func (c *cluster) podsOf(ctx context.Context, id string) ([]corev1.Pod, error) {
	list, err := c.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: labels.Set{kubernetes.LabelID: id}.String()})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// exists reports whether the cluster holds the pod of rec (by its id).
func (c *cluster) exists(ctx context.Context, rec *inventory.Record) (bool, error) {
	pods, err := c.podsOf(ctx, rec.ID())
	return len(pods) > 0, err
}

// noPodLeft fails t when a pod of id is left.
func (c *cluster) noPodLeft(t testing.TB, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods, err := c.podsOf(ctx, id)
	if err != nil {
		t.Fatalf("list pods of %s: %v", id, err)
	}
	for _, p := range pods {
		t.Errorf("pod %s/%s of id %s left behind", p.Namespace, p.Name, id)
	}
}

// errorContains fails t unless err is an error containing every want.
func errorContains(t testing.TB, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}
