package kubernetes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/watch"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/ptr"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers/kubernetes"
)

// The lifecycle benchmarks: checkout, one command, check-in until the pod
// is gone; through the broker, and the same steps by hand with client-go
// (create, watch until Running, exec, delete with grace 0, poll until
// gone). BENCHMARKS.md has the figures and how to run them.

func BenchmarkPodLifecycle(b *testing.B) {
	c := needCluster(b)
	for _, image := range []string{busyboxImage, sshdImage} {
		b.Run("image="+image+"/broker", func(b *testing.B) {
			br := newBenchBroker(b, c)
			for b.Loop() {
				brokerLifecycle(b, br, image)
			}
		})
		b.Run("image="+image+"/byhand", func(b *testing.B) {
			h := newByHand(b, c)
			for b.Loop() {
				if err := h.lifecycle(b.Context(), image); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPods20 makes 20 pods at once, runs a command on each and checks
// them in.
func BenchmarkPods20(b *testing.B) {
	c := needCluster(b)
	const n = 20
	b.Run("broker", func(b *testing.B) {
		br := newBenchBroker(b, c)
		for b.Loop() {
			ctx := b.Context()
			hosts, err := br.Checkout(ctx, broker.Request{Count: n, Args: map[string]any{kubernetes.ArgImage: busyboxImage}})
			if err != nil {
				b.Fatal(err)
			}
			var g errgroup.Group
			for _, h := range hosts {
				g.Go(func() error {
					_, err := h.Execute(ctx, "echo hi")
					return err
				})
			}
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
			if err := br.Checkin(ctx, hosts...); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("byhand", func(b *testing.B) {
		h := newByHand(b, c)
		for b.Loop() {
			var g errgroup.Group
			for range n {
				g.Go(func() error { return h.lifecycle(b.Context(), busyboxImage) })
			}
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPool: 64 holders share a pool of 4 pods, each running one
// command on its lease; beside the ideal, the same work with no waiting
// between holders: 4 workers each check out one pod and run 16 commands on
// it back to back as soon as it runs, then the 4 pods are checked in
// together (as the pool's Close does). The ideal used to check out the 4
// pods in one Checkout and run 16 rounds of 4 commands with a barrier after
// each round: every pod's work then waited for the slowest pod to start and
// every round for its slowest command, waiting the pool does not have, so
// it flattered the pool.
func BenchmarkPool(b *testing.B) {
	c := needCluster(b)
	br := newBenchBroker(b, c)
	req := broker.Request{Args: map[string]any{kubernetes.ArgImage: busyboxImage}}
	const size, holders = 4, 64
	b.Run("pool4x64", func(b *testing.B) {
		for b.Loop() {
			ctx := b.Context()
			pool, err := br.NewPool(ctx, req, size, broker.PoolOptions{})
			if err != nil {
				b.Fatal(err)
			}
			var g errgroup.Group
			for range holders {
				g.Go(func() error {
					h, err := pool.Acquire(ctx)
					if err != nil {
						return err
					}
					_, err = h.Execute(ctx, "echo hi")
					return errors.Join(err, pool.Release(ctx, h, err == nil))
				})
			}
			if err := errors.Join(g.Wait(), pool.Close(ctx)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ideal", func(b *testing.B) {
		for b.Loop() {
			ctx := b.Context()
			hosts := make([]*hostkit.Host, size)
			var g errgroup.Group
			for i := range size {
				g.Go(func() error {
					got, err := br.Checkout(ctx, req)
					if err != nil {
						return err
					}
					hosts[i] = got[0]
					for range holders / size {
						if _, err := hosts[i].Execute(ctx, "echo hi"); err != nil {
							return err
						}
					}
					return nil
				})
			}
			err := g.Wait()
			var held []*hostkit.Host
			for _, h := range hosts {
				if h != nil {
					held = append(held, h)
				}
			}
			if err := errors.Join(err, br.Checkin(ctx, held...)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func brokerLifecycle(b *testing.B, br *broker.Broker, image string) {
	ctx := b.Context()
	hosts, err := br.Checkout(ctx, broker.Request{Args: map[string]any{kubernetes.ArgImage: image}})
	if err != nil {
		b.Fatal(err)
	}
	res, err := hosts[0].Execute(ctx, "echo hi")
	if err != nil || res.Stdout != "hi\n" {
		b.Fatalf("Execute: %+v, %v", res, err)
	}
	if err := br.Checkin(ctx, hosts...); err != nil {
		b.Fatal(err)
	}
}

func newBenchBroker(b *testing.B, c *cluster) *broker.Broker {
	b.Helper()
	dir := b.TempDir()
	b.Setenv("BROKER_DIRECTORY", dir)
	b.Setenv("BROKER_KUBERNETES__KUBECONFIG", c.kubeconfig)
	b.Setenv("BROKER_KUBERNETES__IMAGE_PULL_POLICY", "Never")
	br, err := broker.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	return br
}

// byHand does the lifecycle with client-go alone.
type byHand struct {
	rc *rest.Config
	cs k8s.Interface
	ns string
}

func newByHand(b *testing.B, c *cluster) *byHand {
	rc, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	rc.QPS, rc.Burst = 100, 200
	cs, err := k8s.NewForConfig(rc)
	if err != nil {
		b.Fatal(err)
	}
	return &byHand{rc: rc, cs: cs, ns: "default"}
}

func (h *byHand) lifecycle(ctx context.Context, image string) error {
	name := "byhand-" + inventory.NewID()
	pods := h.cs.CoreV1().Pods(h.ns)
	pod, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: image, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"}}},
			RestartPolicy: corev1.RestartPolicyNever, AutomountServiceAccountToken: ptr.To(false), EnableServiceLinks: ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](1),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(), ResourceVersion: pod.ResourceVersion})
	if err != nil {
		return err
	}
	for ev := range w.ResultChan() {
		if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted && p.Status.Phase == corev1.PodRunning {
			break
		}
	}
	w.Stop()
	req := h.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(h.ns).Name(name).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "c", Command: []string{"/bin/sh", "-c", "echo hi"}, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(h.rc, http.MethodGet, req.URL().String())
	if err != nil {
		return err
	}
	spdy, err := remotecommand.NewSPDYExecutor(h.rc, http.MethodPost, req.URL())
	if err != nil {
		return err
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, httpstream.IsUpgradeFailure)
	if err != nil {
		return err
	}
	var out, errb bytes.Buffer
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errb}); err != nil || out.String() != "hi\n" {
		return fmt.Errorf("exec: %q, %v", out.String(), err)
	}
	if err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		return err
	}
	for {
		if _, err := pods.Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}
