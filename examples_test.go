package broker_test

import (
	"context"
	"fmt"
	"log"
	"strings"
	"sync"

	"github.com/hostbroker/broker"
)

// Check out a host from the embedded Local provider (no settings needed),
// run a command on it over SSH, and check it in.
func Example() {
	ctx := context.Background()
	b, err := broker.New()
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	hosts, err := b.Checkout(ctx, broker.Request{})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Checkin(ctx, hosts...)

	res, err := hosts[0].Execute(ctx, "echo hello from $(uname -s); exit 3")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Status, strings.TrimSpace(res.Stdout))
	// Output: 3 hello from Linux
}

// Check out several hosts at once; they are made concurrently.
func ExampleBroker_Checkout() {
	ctx := context.Background()
	b, err := broker.New()
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	hosts, err := b.Checkout(ctx, broker.Request{Count: 3})
	if err != nil {
		log.Fatal(err)
	}
	for _, h := range hosts {
		if err := h.WriteFile(ctx, "greeting.txt", []byte("hi\n"), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	data, err := hosts[2].ReadFile(ctx, "greeting.txt")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d hosts, third says %s", len(hosts), data)

	if err := b.Checkin(ctx, hosts...); err != nil {
		log.Fatal(err)
	}
	recs, _ := b.Inventory(ctx)
	fmt.Println("left in the inventory:", len(recs))
	// Output:
	// 3 hosts, third says hi
	// left in the inventory: 0
}

// A pool shares hosts among concurrent users outside of tests (in TestMain,
// say): 8 workers, 2 hosts, each worker alone on its host while it holds it.
func ExampleBroker_NewPool() {
	ctx := context.Background()
	b, err := broker.New()
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	pool, err := b.NewPool(ctx, broker.Request{}, 2, broker.PoolOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close(ctx)

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			h, err := pool.Acquire(ctx)
			if err != nil {
				log.Fatal(err)
			}
			defer pool.Release(ctx, h, true)
			if _, err := h.Execute(ctx, fmt.Sprintf("echo %d >> workers", i)); err != nil {
				log.Fatal(err)
			}
		})
	}
	wg.Wait()
	checkouts, _ := pool.Stats()
	fmt.Println("checkouts:", checkouts)
	// Output: checkouts: 2
}
