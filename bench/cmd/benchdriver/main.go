// Command benchdriver runs broker's side-by-side benchmarks and writes their
// figures into ../BENCHMARKS.md (between the bench markers) and an SVG chart
// of the ratios into ratios.svg.
//
//	cd bench && go run ./cmd/benchdriver [-rounds 10] [-quick] [-cases lifecycle,twenty,stream,exec,transfer,transfer-mem,pool,inventory,pull,pull-twenty]
//
// It needs Docker with the test images (bash scripts/build-test-images.sh),
// Debian's openssh-server and openssh-client; the pull cases Debian's
// docker-registry.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/hostbroker/broker/bench"
	"github.com/hostbroker/broker/bench/invload"
)

// command is how the driver is run, printed in the report.
const command = "cd bench && go run ./cmd/benchdriver"

func main() {
	if spec := os.Getenv(bench.InventoryChildEnv); spec != "" {
		path, n, _ := strings.Cut(spec, ":")
		ops, _ := strconv.Atoi(n)
		if err := bench.InventoryWriter(path, ops, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	rounds := flag.Int("rounds", 10, "samples per contender")
	quick := flag.Bool("quick", false, "3 rounds and small sizes: a smoke run, not for the report")
	only := flag.String("cases", "lifecycle,twenty,stream,exec,transfer,transfer-mem,pool,inventory,pull,pull-twenty", "cases to run, comma-separated")
	out := flag.String("out", "../BENCHMARKS.md", "file whose bench section is rewritten (\"\" prints it)")
	flag.Parse()
	if *quick {
		*rounds = 3
	}
	// No image can be pulled here, so testcontainers-go's reaper (Ryuk) cannot run.
	os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	dir, err := os.MkdirTemp("", "brokerbench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// sshd reads the test user's authorized keys below dir as that user.
	if err := os.Chmod(dir, 0o711); err != nil {
		log.Fatal(err)
	}
	cli, err := client.New(client.FromEnv)
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	env := &bench.Env{Dir: dir, Engine: cli, Rounds: *rounds}
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	machine := describeMachine(ctx, cli)
	log.Printf("machine: %s", strings.Join(machine, "; "))

	perRound, size, streamSize, pullSize := 100, int64(256<<20), int64(32<<20), int64(bench.PullSize)
	if *quick {
		perRound, size, streamSize, pullSize = 20, 16<<20, 8<<20, 8<<20
	}
	runs := map[string]func() (bench.Case, error){
		"lifecycle":    func() (bench.Case, error) { return env.Lifecycle(ctx) },
		"twenty":       func() (bench.Case, error) { return env.Twenty(ctx) },
		"stream":       func() (bench.Case, error) { return env.Stream(ctx, perRound, streamSize) },
		"exec":         func() (bench.Case, error) { return env.Exec(ctx, perRound) },
		"transfer":     func() (bench.Case, error) { return env.Transfer(ctx, size, false) },
		"transfer-mem": func() (bench.Case, error) { return env.Transfer(ctx, size, true) },
		"pool":         func() (bench.Case, error) { return env.Pool(ctx) },
		"inventory":    func() (bench.Case, error) { return env.Inventory(ctx, self) },
		"pull":         func() (bench.Case, error) { return env.Pull(ctx, pullSize) },
		"pull-twenty":  func() (bench.Case, error) { return env.PullTwenty(ctx, pullSize) },
	}
	var cases []bench.Case
	for _, name := range strings.Split(*only, ",") {
		run, ok := runs[name]
		if !ok {
			log.Fatalf("unknown case %q", name)
		}
		start := time.Now()
		c, err := run()
		if err != nil {
			log.Fatalf("%s: %v", name, err)
		}
		log.Printf("%s: done in %s", name, time.Since(start).Round(time.Second))
		for _, s := range c.Series {
			log.Printf("  %-50s median %.4g %s (min %.4g, max %.4g)", s.Name, s.Median(), s.Unit, s.Min(), s.Max())
		}
		for _, r := range c.Ratios {
			log.Printf("  %-50s %.2f× met=%v", r.Label, r.Value, r.Met())
		}
		cases = append(cases, c)
	}

	section := bench.Markdown(machine, cases, "bench/ratios.svg", command)
	if *out == "" {
		fmt.Print(section)
		return
	}
	doc, err := os.ReadFile(*out)
	if err != nil && !os.IsNotExist(err) {
		log.Fatal(err)
	}
	updated, err := bench.ReplaceSection(string(doc), section)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, []byte(updated), 0o644); err != nil {
		log.Fatal(err)
	}
	svg := filepath.Join(filepath.Dir(*out), "bench", "ratios.svg")
	if err := os.WriteFile(svg, []byte(bench.SVG(cases)), 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s and %s", *out, svg)
}

// describeMachine names what the figures were measured on.
func describeMachine(ctx context.Context, cli *client.Client) []string {
	out := invload.Hardware()
	if v, err := cli.ServerVersion(ctx, client.ServerVersionOptions{}); err == nil {
		out = append(out, fmt.Sprintf("Docker Engine %s (API %s)", v.Version, v.APIVersion))
	}
	if b, err := exec.CommandContext(ctx, "podman", "--version").Output(); err == nil {
		out = append(out, strings.TrimSpace(string(b)))
	}
	if b, err := exec.CommandContext(ctx, "ssh", "-V").CombinedOutput(); err == nil {
		out = append(out, strings.TrimSpace(string(b)))
	}
	if b, err := exec.CommandContext(ctx, "uname", "-sr").Output(); err == nil {
		out = append(out, strings.TrimSpace(string(b)))
	}
	out = append(out, runtime.Version(), "testcontainers-go v0.45.0", time.Now().UTC().Format("2006-01-02"))
	return out
}
