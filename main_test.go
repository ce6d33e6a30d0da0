package broker_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/hostbroker/broker/internal/testenv"
)

// TestMain keeps the tests and examples out of the user's ~/.broker.
// Child processes get their directory from their parent.
func TestMain(m *testing.M) {
	if os.Getenv(childRole) != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "broker-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("BROKER_DIRECTORY", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const sshdImage = "brokertest/debian-sshd:12"

// requireImage skips (or, with BROKER_TEST_REQUIRE=docker, fails) when the
// engine or the test image is missing.
func requireImage(t *testing.T, image string) {
	t.Helper()
	var err error
	if out, e := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", image).CombinedOutput(); e != nil {
		err = fmt.Errorf("docker image %s: %v: %s (build it with: bash scripts/build-test-images.sh)", image, e, strings.TrimSpace(string(out)))
	}
	testenv.Require(t, "docker", err)
}
