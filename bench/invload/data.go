package invload

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// filterCase is one row of case 3: a file and a filter, with what the
// filter matches in it.
type filterCase struct {
	Name, File, Filter string
	match              func(i int) bool
}

// The files of case 3: the records of the issue's figure (231 ms, from
// inventory's BenchmarkLoadFilter10k) and records shaped as broker writes
// them for real hosts.
const (
	fileIssue     = "issue"
	fileRealistic = "realistic"
)

var loadFilters = []filterCase{
	{
		Name:   "`BenchmarkLoadFilter10k`'s records, its filter `name<host-99,_broker_args.container_host{brokertest`",
		File:   fileIssue,
		Filter: "name<host-99,_broker_args.container_host{brokertest",
		match: func(i int) bool {
			n := fmt.Sprintf("host-%d", i)
			return strings.Contains(n, "host-99")
		},
	},
	{
		Name:   "realistic records, seed filter `_broker_provider=AnsibleTower,_broker_args.workflow{deploy-rhel`",
		File:   fileRealistic,
		Filter: "_broker_provider=AnsibleTower,_broker_args.workflow{deploy-rhel",
		match:  func(i int) bool { return i%3 == 0 && (i/3)%2 == 0 },
	},
	{
		Name:   "realistic records, expression `@inv._broker_provider == \"Container\" and \"debian\" in @inv._broker_args.container_host`",
		File:   fileRealistic,
		Filter: `@inv._broker_provider == "Container" and "debian" in @inv._broker_args.container_host`,
		match:  func(i int) bool { return i%3 == 1 },
	},
}

// writeFile writes case 3's file of the kind named with n records.
func writeFile(kind, path string, n int) error {
	if kind == fileIssue {
		return writeIssue(path, n)
	}
	return writeBig(path, n)
}

// writeIssue writes the records of inventory's BenchmarkLoadFilter10k as
// this library's Marshal writes them (its figure in issue 17: 231 ms).
func writeIssue(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i := range n {
		sum := sha256.Sum256(fmt.Appendf(nil, "issue record %d", i))
		fmt.Fprintf(w, "- hostname: host-%d.example.com\n  name: host-%d\n  _broker_provider: Container\n  _broker_args:\n    container_host: brokertest/debian-sshd:12\n    \"n\": %d\n", i, i, i)
		fmt.Fprintf(w, "  _brokertest:\n    id: '%s'\n    state: ready\n    owner:\n      run: \"\"\n      pid: 0\n      started: 0\n      boot_id: \"\"\n      machine: \"\"\n", hex.EncodeToString(sum[:6]))
		fmt.Fprintf(w, "    checked_out: 0001-01-01T00:00:00Z\n    keep_until: null\n    ssh:\n      port: %d\n", 2000+i%1000)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// want returns how many of n records f matches.
func (f filterCase) want(n int) int {
	c := 0
	for i := range n {
		if f.match(i) {
			c++
		}
	}
	return c
}

// writeBig writes an inventory of n records shaped as broker writes them:
// two of three Container hosts (half on each of two images), one of three
// AnsibleTower hosts (half from each of two workflows), each with its
// _brokertest block. It is written as text, so both builds read the same
// bytes whatever their encoders do.
func writeBig(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i := range n {
		sum := sha256.Sum256(fmt.Appendf(nil, "record %d", i))
		h := hex.EncodeToString(sum[:])
		id, run := h[:12], h[12:28]
		fmt.Fprintf(w, "- hostname: %s\n", hostnameOf(i, h))
		if i%3 == 0 {
			workflow, version := "deploy-rhel", "'8.6'"
			if (i/3)%2 == 1 {
				workflow, version = "deploy-sat", "'6.14'"
			}
			fmt.Fprintf(w, "  name: jake-%s-%s\n  ip: 10.%d.%d.%d\n", workflow, h[:6], i/65536%256, i/256%256, i%256)
			fmt.Fprintf(w, "  _broker_provider: AnsibleTower\n  _broker_provider_instance: testing\n")
			fmt.Fprintf(w, "  _broker_args:\n    workflow: %s\n    deploy_version: %s\n    _broker_origin: cli:jake\n", workflow, version)
			fmt.Fprintf(w, "  _broker_facts:\n    os_distribution: RHEL\n    os_distribution_version: %s\n    vm_provider: RHEV\n", version)
		} else {
			image := "brokertest/debian-sshd:12"
			if i%3 == 2 {
				image = "ubi8:latest"
			}
			fmt.Fprintf(w, "  name: brokertest_%s\n", h[:8])
			fmt.Fprintf(w, "  _broker_provider: Container\n  _broker_provider_instance: docker\n")
			fmt.Fprintf(w, "  _broker_args:\n    container_host: %s\n", image)
		}
		fmt.Fprintf(w, "  _brokertest:\n    id: '%s'\n    state: ready\n", id)
		fmt.Fprintf(w, "    owner:\n      run: '%s'\n      pid: %d\n      started: %d\n      boot_id: 6c0f6d3e-1f7a-4b1e-9d59-%s\n      machine: ci-runner-3\n", run, 1000+i, 100000+i, h[28:40])
		fmt.Fprintf(w, "    test: TestSuite/case_%d\n    checked_out: 2026-11-30T10:%02d:%02dZ\n    keep_until: null\n", i, i/60%60, i%60)
		if i%3 == 0 {
			fmt.Fprintf(w, "    ssh:\n      port: 22\n")
			fmt.Fprintf(w, "    data:\n      job_id: %d\n      job_type: workflow_job\n      api_url: https://awx.example.com/api/v2/workflow_jobs/%d/\n      ui_url: https://awx.example.com/#/jobs/workflow/%d/output\n", 10000+i, 10000+i, 10000+i)
			fmt.Fprintf(w, "  tower_inventory: jake-inventory\n")
			continue
		}
		port := 32768 + i%20000
		fmt.Fprintf(w, "    ssh:\n      host: 127.0.0.1\n      port: %d\n      user: root\n      host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI%s\n      key_file: /home/jake/.brokertest/keys/%s/id_ed25519\n", port, h[:43], id)
		fmt.Fprintf(w, "    data:\n      container_id: '%s'\n      engine: unix:///var/run/docker.sock\n      image: %s\n      ports:\n        22/tcp: 127.0.0.1:%d\n",
			h, map[bool]string{true: "brokertest/debian-sshd:12", false: "ubi8:latest"}[i%3 == 1], port)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func hostnameOf(i int, h string) string {
	if i%3 == 0 {
		return fmt.Sprintf("dhcp-%d-%d.example.com", i/256, i%256)
	}
	return "c" + h[:11] + ".containers.example.com"
}
