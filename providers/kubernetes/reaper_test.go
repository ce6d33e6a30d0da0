package kubernetes_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/providers/kubernetes"
)

// holderEnv makes this test binary, re-run, a process that checks out
// $HOLD_COUNT pods, says "ready", and waits to be killed.
const holderEnv = "BROKER_K8S_TEST_HOLDER"

func TestMain(m *testing.M) {
	if os.Getenv(holderEnv) != "" {
		os.Exit(hold())
	}
	os.Exit(m.Run())
}

func hold() int {
	b, err := broker.New()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	n := 3
	hosts, err := b.Checkout(context.Background(), broker.Request{Count: n, Args: map[string]any{kubernetes.ArgImage: busyboxImage}})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready", len(hosts))
	time.Sleep(time.Hour)
	return 0
}

// TestReaperDeletesPods: a run killed with SIGKILL while it holds pods
// leaves none: its reaper's watcher (this binary re-run) checks them in
// from the inventory records, through the provider. With the watcher
// killed too, the next run's sweep (broker.New on the directory) does.
func TestReaperDeletesPods(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	c := needCluster(t)
	for _, sweep := range []bool{false, true} {
		t.Run(map[bool]string{false: "watcher", true: "sweep"}[sweep], func(t *testing.T) {
			dir := t.TempDir()
			settings := "Kubernetes:\n  kubeconfig: " + c.kubeconfig + "\n  image_pull_policy: Never\n"
			if err := os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), []byte(settings), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), holderEnv+"=1", "BROKER_DIRECTORY="+dir)
			if sweep {
				// No watcher: only the next run can clean up.
				cmd.Env = append(cmd.Env, "BROKER_NO_REAPER=1")
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			sc := bufio.NewScanner(out)
			if !sc.Scan() || !strings.HasPrefix(sc.Text(), "ready") {
				t.Fatalf("holder: %q", sc.Text())
			}
			ids := c.podIDsOf(t, dir)
			if len(ids) != 3 {
				t.Fatalf("holder's inventory names %d pods (%v); want 3", len(ids), ids)
			}
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			if sweep {
				t.Setenv("BROKER_DIRECTORY", dir)
				b, err := broker.New()
				if err != nil {
					t.Fatal(err)
				}
				defer b.Close()
			}
			deadline := time.Now().Add(90 * time.Second)
			for _, id := range ids {
				for {
					pods, err := c.podsOf(t.Context(), id)
					if err != nil {
						t.Fatal(err)
					}
					if len(pods) == 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("pod %s of the killed run still there after 90 s", pods[0].Name)
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
		})
	}
}

// podIDsOf lists the broker ids of the pods whose records are in dir's
// inventory (the ids label pods).
func (c *cluster) podIDsOf(t *testing.T, dir string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "inventory.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	list, err := c.cs.CoreV1().Pods("").List(t.Context(), metav1.ListOptions{LabelSelector: kubernetes.LabelID})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Items {
		if id := p.Labels[kubernetes.LabelID]; strings.Contains(string(raw), id) {
			ids = append(ids, id)
		}
	}
	return ids
}
