// Package invload measures one inventory under parallel load (issue 17):
// many processes checking Local hosts out and in, many writers, a large
// inventory loaded and filtered, and a Python broker's lock protocol beside
// Go writers. The driver (Run) builds the same program twice, against the
// code under test and against a baseline commit, and runs the two builds'
// children interleaved on the same machine.
//
// Everything here uses only broker's public API as it stood at the baseline,
// so that one source builds against both trees; where that API changed since
// (the inventory's), api.go and api_base.go (the build tag invbase) hold the
// two forms.
package invload

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/inventory"
)

// ChildArg is the first argument that makes the program a child: a process
// the driver starts to do one part of a case.
const ChildArg = "child"

// op is one line a child prints: one timed operation, or a result.
type op struct {
	Op    string   `json:"op"`              // checkout, checkin, put, remove, load, list
	Host  string   `json:"host,omitempty"`  // the record's hostname (writers)
	Secs  float64  `json:"s"`               // how long the operation took
	Err   string   `json:"err,omitempty"`   // its error, if any
	Hosts []string `json:"hosts,omitempty"` // list: every hostname in the file
	N     int      `json:"n,omitempty"`     // load: records the filter matched
}

// Child runs the child role named by args[0] and returns the exit code.
// Children that take part in a timed case print "ready", wait for a line
// on stdin, then work, printing one JSON op per line as they go (so a child
// killed on timeout still reports what it did).
func Child(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "invload child: no role")
		return 2
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	dir := fs.String("dir", "", "broker directory (pairs)")
	path := fs.String("path", "", "inventory file")
	n := fs.Int("n", 0, "operations (0: until \"stop\" on stdin)")
	hold := fs.Int("hold", 0, "writers: records kept at once (0: all)")
	filter := fs.String("filter", "", "load: the filter")
	prefix := fs.String("prefix", "", "writers: hostname prefix")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	out := json.NewEncoder(os.Stdout)
	var err error
	switch args[0] {
	case "spin":
		spin()
	case "pairs":
		err = pairs(*dir, *n, out)
	case "writer":
		err = writer(*path, *prefix, *n, *hold, out)
	case "load":
		err = loadFilter(*path, *filter, *n, out)
	case "list":
		var recs []*inventory.Record
		start := time.Now()
		recs, err = loadFile(*path)
		if err == nil {
			o := op{Op: "list", Secs: since(start), Hosts: []string{}}
			for _, r := range recs {
				o.Hosts = append(o.Hosts, r.Hostname)
			}
			err = out.Encode(o)
		}
	default:
		err = fmt.Errorf("unknown role %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "invload child:", err)
		return 1
	}
	return 0
}

func since(t time.Time) float64 { return time.Since(t).Seconds() }

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ready tells the driver this child is set up and waits for its go.
// The rest of stdin is handed to stop: a line or EOF sets it.
func ready() (stop *atomic.Bool, err error) {
	if _, err := fmt.Println("ready"); err != nil {
		return nil, err
	}
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return nil, fmt.Errorf("waiting for go: %w", err)
	}
	stop = new(atomic.Bool)
	go func() {
		_, _ = in.ReadString('\n')
		stop.Store(true)
	}()
	return stop, nil
}

// spin keeps one CPU busy until its parent is gone (the driver also kills
// it; this is for when the driver itself was killed).
func spin() {
	parent := os.Getppid()
	var sink uint64
	for {
		for i := range uint64(50_000_000) {
			sink += i
		}
		if os.Getppid() != parent {
			os.Exit(int(sink & 1))
		}
	}
}

// pairs is one test process of case 1: its own Broker on the shared
// directory, n checkouts of one Local host, each checked in at once.
func pairs(dir string, n int, out *json.Encoder) error {
	b, err := broker.New(broker.WithDirectory(dir))
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := ready(); err != nil {
		return err
	}
	ctx := context.Background()
	for range n {
		start := time.Now()
		hosts, err := b.Checkout(ctx, broker.Request{})
		if err := out.Encode(op{Op: "checkout", Secs: since(start), Err: errText(err)}); err != nil {
			return err
		}
		if err != nil {
			continue
		}
		start = time.Now()
		err = b.Checkin(ctx, hosts...)
		if err := out.Encode(op{Op: "checkin", Secs: since(start), Err: errText(err)}); err != nil {
			return err
		}
	}
	return nil
}

// writer puts distinct records into the inventory at path, one locked write
// each: n of them, or until told to stop when n is 0. With hold > 0 it
// removes its oldest record whenever it holds more than hold, as a test run
// does with its hosts, so the file stays small.
func writer(path, prefix string, n, hold int, out *json.Encoder) error {
	s := inventory.Open(path)
	stop, err := ready()
	if err != nil {
		return err
	}
	var held []*inventory.Record
	for k := 0; n == 0 && !stop.Load() || n > 0 && k < n; k++ {
		rec := WriterRecord(fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), k))
		start := time.Now()
		err := put(s, rec)
		if err := out.Encode(op{Op: "put", Host: rec.Hostname, Secs: since(start), Err: errText(err)}); err != nil {
			return err
		}
		if err != nil {
			continue
		}
		held = append(held, rec)
		if hold > 0 && len(held) > hold {
			old := held[0]
			held = held[1:]
			start := time.Now()
			err := remove(s, old)
			if err := out.Encode(op{Op: "remove", Host: old.Hostname, Secs: since(start), Err: errText(err)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// WriterRecord is a writer's record: a Container host as broker writes one.
func WriterRecord(name string) *inventory.Record {
	return &inventory.Record{
		Hostname: name + ".example.test",
		Name:     name,
		Provider: "Container",
		Instance: "docker",
		Args:     map[string]any{"container_host": "brokertest/debian-sshd:12"},
		Broker: &inventory.Meta{
			ID:         inventory.NewID(),
			State:      inventory.StateReady,
			Owner:      inventory.CurrentOwner("bench"),
			CheckedOut: time.Now().UTC().Truncate(time.Second),
			SSH:        &inventory.SSH{Host: "127.0.0.1", Port: 32768, User: "root"},
			Data:       map[string]any{"container_id": name, "engine": "unix:///var/run/docker.sock", "image": "brokertest/debian-sshd:12"},
		},
	}
}

// loadFilter times n fresh loads of the inventory at path, each followed by
// parsing and applying filter. Each load reads its own copy of the file, so
// that no cache keyed by path can answer it.
func loadFilter(path, filter string, n int, out *json.Encoder) error {
	var copies []string
	defer func() {
		for _, c := range copies {
			os.Remove(c)
		}
	}()
	for i := range n {
		c := fmt.Sprintf("%s.copy-%d-%d.yaml", path, os.Getpid(), i)
		if err := copyFile(path, c); err != nil {
			return err
		}
		copies = append(copies, c)
	}
	for _, c := range copies {
		start := time.Now()
		recs, err := loadFile(c)
		var matched int
		if err == nil {
			matched, err = applyFilter(filter, recs)
		}
		if err := out.Encode(op{Op: "load", Secs: since(start), Err: errText(err), N: matched}); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
