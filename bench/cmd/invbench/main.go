// Command invbench measures one inventory under parallel load (issue 17)
// for the current tree and for a baseline commit side by side in one run,
// and writes the figures into ../BENCHMARKS.md between the invbench
// markers.
//
//	cd bench && go run ./cmd/invbench [-quick] [-cases checkout,writes,load,python] [-base 69f4458] [-base-dir /tmp/broker-base] [-json results.json]
//	cd bench && go run ./cmd/invbench -render results.json   # the report again, measuring nothing
//
// It builds itself twice: against ../ (this module's replace) and against
// the baseline (with the build tag invbase: invload/api_base.go), checked
// out with "git worktree add" at -base-dir when that does not exist yet.
// Both builds run as child processes of this one.
// It needs git, the Go toolchain and, for the Python case, python3.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hostbroker/broker/bench/invload"
)

// command is how the driver is run, printed in the report.
const command = "cd bench && go run ./cmd/invbench"

func main() {
	if len(os.Args) > 1 && os.Args[1] == invload.ChildArg {
		os.Exit(invload.Child(os.Args[2:]))
	}
	base := flag.String("base", "69f4458", "baseline commit: the code before issue 17")
	baseDir := flag.String("base-dir", "/tmp/broker-base", "the baseline's worktree (added when missing)")
	current := flag.String("current", "", "broker tree to build as current (default: ../, this module's replace)")
	quick := flag.Bool("quick", false, "small sizes: a smoke run, not for the report")
	cases := flag.String("cases", "checkout,writes,load,python", "cases to run, comma-separated")
	out := flag.String("out", "../BENCHMARKS.md", "file whose invbench section is rewritten (\"\" prints it)")
	jsonOut := flag.String("json", "", "also write every sample as JSON to this file")
	render := flag.String("render", "", "measure nothing: render the results of an earlier -json file")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var (
		res *invload.Results
		err error
	)
	if *render != "" {
		res, err = invload.ReadJSON(*render)
		if err != nil {
			log.Fatal(err)
		}
	} else {
		res, err = invload.Run(ctx, invload.Options{
			BenchDir: ".", Base: *base, BaseDir: *baseDir, Current: *current,
			Cases: strings.Split(*cases, ","), Quick: *quick,
		})
	}
	if err != nil {
		log.Print(err)
		if res == nil || (len(res.Pairs) == 0 && len(res.Writes) == 0 && len(res.Loads) == 0 && len(res.Python) == 0) {
			os.Exit(1)
		}
		log.Print("writing what was measured before the failure")
	}
	if *jsonOut != "" && *render == "" {
		if err := res.WriteJSON(*jsonOut); err != nil {
			log.Fatal(err)
		}
	}
	cmd := command
	if res.Sizes.Pairs < invload.FullSizes.Pairs {
		cmd += " -quick"
	}
	section := res.Markdown(cmd)
	if *out == "" {
		fmt.Print(section)
		return
	}
	doc, rerr := os.ReadFile(*out)
	if rerr != nil && !os.IsNotExist(rerr) {
		log.Fatal(rerr)
	}
	updated, rerr := invload.ReplaceSection(string(doc), section)
	if rerr != nil {
		log.Fatal(rerr)
	}
	if err := os.WriteFile(*out, []byte(updated), 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s", *out)
	if err != nil {
		os.Exit(1)
	}
}
