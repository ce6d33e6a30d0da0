// Command brokertest is the brokertest CLI (inventory, cleanup, sync) that
// also knows Kubernetes pods: the core's command with the Kubernetes
// provider linked in, so that the core module stays free of client-go.
//
//	go install github.com/hostbroker/broker/providers/kubernetes/cmd/brokertest@latest
package main

import (
	"os"

	"github.com/hostbroker/broker/cmd/brokertest/cli"
	_ "github.com/hostbroker/broker/providers/ansibletower"
	_ "github.com/hostbroker/broker/providers/container"
	_ "github.com/hostbroker/broker/providers/kubernetes"
	_ "github.com/hostbroker/broker/providers/ssh"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
