// Package testenv decides whether a test that needs a real part of the
// machine (sshd, a container engine, an image registry) skips or fails when
// the part is missing.
//
// Tests skip with the reason by default; when BROKER_TEST_REQUIRE names the
// part (a comma-separated list, "all" for every part), they fail instead, so
// CI cannot pass by skipping. The parts: sshd, docker, podman, python, and
// kubernetes (a cluster, for the providers/kubernetes module, whose tests
// read BROKER_TEST_REQUIRE the same way: another module cannot import this
// package).
package testenv

import (
	"os"
	"strings"
	"testing"
)

// Required reports whether BROKER_TEST_REQUIRE names what.
func Required(what string) bool {
	for _, w := range strings.Split(os.Getenv("BROKER_TEST_REQUIRE"), ",") {
		w = strings.TrimSpace(w)
		if strings.EqualFold(w, what) || strings.EqualFold(w, "all") {
			return true
		}
	}
	return false
}

// Require skips tb when err is not nil (the part named what is missing), or
// fails it when BROKER_TEST_REQUIRE names what.
func Require(tb testing.TB, what string, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	if Required(what) {
		tb.Fatalf("%s is required (BROKER_TEST_REQUIRE=%s) but unavailable: %v", what, os.Getenv("BROKER_TEST_REQUIRE"), err)
	}
	tb.Skipf("skipping: %s unavailable: %v (set BROKER_TEST_REQUIRE=%s to fail instead)", what, err, what)
}
