package broker_test

import (
	"context"
	"fmt"
	"log"

	"github.com/hostbroker/broker"

	// The Container provider registers itself when imported, as a
	// database/sql driver does; the broker package links only Local.
	_ "github.com/hostbroker/broker/providers/container"
)

// debianImage is a Debian image with sshd, built by
// scripts/build-test-images.sh; any image with sshd will do.
const debianImage = "brokertest/debian-sshd:12"

// Check out a container from the Docker or Podman engine (DOCKER_HOST,
// CONTAINER_HOST or the local socket) and run a command on it. Without the
// import above the checkout fails with an error naming it.
func Example_container() {
	ctx := context.Background()
	b, err := broker.New()
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	hosts, err := b.Checkout(ctx, broker.Request{Args: map[string]any{"container_host": debianImage}})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Checkin(ctx, hosts...)

	res, err := hosts[0].Execute(ctx, "test -f /etc/debian_version")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("status", res.Status)
}
