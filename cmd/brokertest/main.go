// Command brokertest cleans up after test runs that checked hosts out with
// broker: it lists the inventory, checks hosts in (by id, hostname, filter,
// or because their owner run died) and reconciles the inventory with what a
// provider says exists. "brokertest help" and "brokertest COMMAND -h" say
// more; package [github.com/hostbroker/broker/cmd/brokertest/cli] holds
// the command, for programs that link more providers.
package main

import (
	"os"

	"github.com/hostbroker/broker/cmd/brokertest/cli"

	// A program imports the providers it uses; this one cleans up after
	// every provider of this module.
	_ "github.com/hostbroker/broker/providers/ansibletower"
	_ "github.com/hostbroker/broker/providers/container"
	_ "github.com/hostbroker/broker/providers/ssh"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
