package terratest_test

import (
	"testing"

	"github.com/gruntwork-io/terratest/modules/ssh"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/brokertest"
	"github.com/hostbroker/broker/terratest"
)

// A test checks a host out with brokertest (checked in when the test ends)
// and runs terratest's ssh functions on it. In a test package, testEcho is
// a func TestEcho(t *testing.T); TestLocal and TestContainer in this module
// run the same calls.
func ExampleSSHHost() {
	testEcho := func(t *testing.T) {
		// A Local host: this machine, as the current user. A container
		// needs its SSH port published for terratest, and the provider's
		// import (_ "github.com/hostbroker/broker/providers/container"):
		//	broker.Request{Args: map[string]any{
		//		"container_host": "brokertest/debian-sshd:12", "ports": "22"}}
		h := brokertest.Host(t, broker.Request{})
		host, err := terratest.SSHHost(h)
		if err != nil {
			t.Fatal(err)
		}
		// terratest 1.0's names; CheckSshCommandE and ScpFileToE (deprecated)
		// work as well.
		out, err := ssh.CheckSSHCommandContextE(t, t.Context(), &host, "echo hi")
		if err != nil || out != "hi\n" {
			t.Fatalf("echo hi: %q, %v", out, err)
		}
		// terratest's scp needs a directory in the path: "./motd", not "motd".
		if err := ssh.SCPFileToContextE(t, t.Context(), &host, 0o644, "./motd", "hello\n"); err != nil {
			t.Fatal(err)
		}
	}
	_ = testEcho
}
