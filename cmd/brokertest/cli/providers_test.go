package cli

// The tests run the CLI as cmd/brokertest builds it: with every provider of
// this module (their settings sections are checked only when imported).
import (
	_ "github.com/hostbroker/broker/providers/ansibletower"
	_ "github.com/hostbroker/broker/providers/container"
	_ "github.com/hostbroker/broker/providers/ssh"
)
