package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/cmd/brokertest/cli"
	"github.com/hostbroker/broker/providers/kubernetes"
)

const holderEnv = "BROKER_K8S_CLI_TEST_HOLDER"

func TestMain(m *testing.M) {
	if os.Getenv(holderEnv) != "" {
		b, err := broker.New()
		if err == nil {
			_, err = b.Checkout(context.Background(), broker.Request{Count: 2, Args: map[string]any{kubernetes.ArgImage: "brokertest/busybox:1"}})
		}
		fmt.Println("ready", err)
		time.Sleep(time.Hour)
	}
	os.Exit(m.Run())
}

// TestSyncAndCleanupPods: a run killed (with no reaper) leaves two pods;
// on a fresh inventory, `brokertest sync Kubernetes` finds them with their
// dead owner, and `brokertest cleanup --stale` deletes them.
func TestSyncAndCleanupPods(t *testing.T) {
	kc := os.Getenv("BROKER_K8S_KUBECONFIG")
	if kc == "" {
		kc = "/var/lib/brokertest-k8s/admin.kubeconfig"
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Skipf("skipping: no cluster: %v", err)
	}
	cs, err := k8s.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	settings := "Kubernetes:\n  kubeconfig: " + kc + "\n  image_pull_policy: Never\n"
	if err := os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), []byte(settings), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BROKER_DIRECTORY", dir)
	t.Setenv("BROKER_NO_REAPER", "1")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holderEnv+"=1")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready <nil>" {
		t.Fatalf("holder: %q", sc.Text())
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err := os.Remove(filepath.Join(dir, "inventory.yaml")); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		var stdout, stderr bytes.Buffer
		if code := cli.Main(args, &stdout, &stderr); code != 0 {
			t.Fatalf("brokertest %s: exit %d: %s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
		}
		return stdout.String() + stderr.String()
	}
	if got := run("sync", "Kubernetes"); !strings.Contains(got, "2 added") {
		t.Fatalf("sync: %s", got)
	}
	if got := run("inventory"); strings.Count(got, "owner dead") != 2 {
		t.Fatalf("inventory after sync: %s", got)
	}
	if got := run("cleanup", "--stale"); !strings.Contains(got, "checked in 2 hosts") {
		t.Fatalf("cleanup --stale: %s", got)
	}
	pods, err := cs.CoreV1().Pods("").List(t.Context(), metav1.ListOptions{LabelSelector: kubernetes.LabelManagedBy + "=" + kubernetes.ManagedBy})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 0 {
		t.Fatalf("%d pods left after cleanup --stale", len(pods.Items))
	}
}
