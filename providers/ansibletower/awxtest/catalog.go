package awxtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/local"
)

// VM is a machine a VMFactory made.
type VM struct {
	Name     string
	Hostname string // its fqdn
	IP       string // ansible_host
	Port     int    // SSH port; 0 means 22
	// Facts are extra facts for the host (e.g. ansible_distribution).
	Facts map[string]any
}

// VMFactory makes and removes the VMs of the deploy-vm and remove-vm
// workflows.
type VMFactory interface {
	Create(ctx context.Context, name string, vars map[string]any) (VM, error)
	// Remove removes a VM; removing one that does not exist is not an error.
	Remove(ctx context.Context, name string) error
}

// NameOnlyVMs makes VMs that exist only as names (hostname
// NAME.awxtest.invalid, nothing listening): enough for tests of the API.
type NameOnlyVMs struct {
	mu      sync.Mutex
	created int
	removed int
}

// Create returns a VM record.
func (f *NameOnlyVMs) Create(_ context.Context, name string, _ map[string]any) (VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created++
	return VM{Name: name, Hostname: name + ".awxtest.invalid", IP: "192.0.2.1"}, nil
}

// Remove forgets nothing: there is nothing to remove.
func (f *NameOnlyVMs) Remove(context.Context, string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed++
	return nil
}

// LocalVMs makes VMs that are real SSH servers of the Local provider on
// 127.0.0.1: they accept AuthorizedKey (the key in the user's ssh:
// settings) and their host keys are appended to KnownHosts, so a provider
// reaches them with ordinary settings and verified host keys.
type LocalVMs struct {
	p             *local.Provider
	authorizedKey string
	knownHosts    string

	mu   sync.Mutex
	recs map[string]*inventory.Record
}

// NewLocalVMs opens a Local provider working in dir. authorizedKey is a
// public key in authorized_keys form; knownHosts a file to append the VMs'
// host keys to.
func NewLocalVMs(dir, authorizedKey, knownHosts string) (*LocalVMs, error) {
	p, err := local.Open(providers.Config{Provider: local.Name, Dir: dir, Settings: map[string]any{"dir": dir}})
	if err != nil {
		return nil, fmt.Errorf("awxtest: local VMs: %w", err)
	}
	return &LocalVMs{p: p, authorizedKey: authorizedKey, knownHosts: knownHosts, recs: map[string]*inventory.Record{}}, nil
}

// Create starts an SSH server for name.
func (f *LocalVMs) Create(ctx context.Context, name string, _ map[string]any) (VM, error) {
	id := inventory.NewID()
	res, err := f.p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: map[string]any{"authorized_keys": f.authorizedKey}})
	if err != nil {
		return VM{}, err
	}
	rec := res.Record(id)
	ssh := res.SSH
	if f.knownHosts != "" {
		fh, err := os.OpenFile(f.knownHosts, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err == nil {
			_, err = fmt.Fprintf(fh, "[%s]:%d %s\n", ssh.Host, ssh.Port, ssh.HostKey)
			err = errors.Join(err, fh.Close())
		}
		if err != nil {
			_ = f.p.Checkin(context.WithoutCancel(ctx), rec)
			return VM{}, fmt.Errorf("awxtest: write known_hosts: %w", err)
		}
	}
	f.mu.Lock()
	f.recs[name] = rec
	f.mu.Unlock()
	return VM{Name: name, Hostname: ssh.Host, IP: ssh.Host, Port: ssh.Port}, nil
}

// Remove stops name's server.
func (f *LocalVMs) Remove(ctx context.Context, name string) error {
	f.mu.Lock()
	rec := f.recs[name]
	delete(f.recs, name)
	f.mu.Unlock()
	if rec == nil {
		return nil
	}
	return f.p.Checkin(ctx, rec)
}

// Running counts the VMs not removed.
func (f *LocalVMs) Running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.recs)
}

// Close stops every VM.
func (f *LocalVMs) Close() error { return f.p.Close() }

// addCatalog registers deploy-vm, remove-vm and extend-vm.
//
// deploy-vm has two nodes: "provision vm" makes the VM (artifact vm_name)
// and adds it to the launch's inventory; "finalize vm" publishes
// _broker_facts and _broker_args. Variables: vm_name (default
// <user>-vm-<job>), fail_at / error_at ("provision" or "finalize") and
// fail_msg make a node fail or error, for tests of failure reporting.
func (s *Server) addCatalog() {
	s.AddWorkflow(Workflow{
		Name:        "deploy-vm",
		Description: "Deploy a VM",
		ExtraVars:   map[string]any{"template": "debian-12", "vm_name": ""},
		Inventory:   s.opts.Username + " VMs",
		Nodes: []Node{
			{Name: "provision vm", Run: s.provisionVM},
			{Name: "finalize vm", Run: s.finalizeVM},
		},
	})
	s.AddWorkflow(Workflow{
		Name:        "remove-vm",
		Description: "Remove a VM",
		ExtraVars:   map[string]any{"source_vm": ""},
		// As many real release workflows: no inventory prompt, so a launch
		// that names one gets 400.
		NoInventoryPrompt: true,
		Nodes:             []Node{{Name: "remove vm", Run: s.removeVM}},
	})
	s.AddWorkflow(Workflow{
		Name:              "extend-vm",
		Description:       "Extend a VM's lease",
		ExtraVars:         map[string]any{"target_vm": "", "new_expire_time": "+172800"},
		NoInventoryPrompt: true,
		Nodes:             []Node{{Name: "extend vm", Run: s.extendVM}},
	})
}

// simulatedFailure is the failure or error that deploy-vm's variables
// fail_at, error_at and fail_msg ask of its node ("provision" or
// "finalize"), or nil.
func simulatedFailure(r *Run, node string) error {
	if at, _ := r.Vars["fail_at"].(string); at == node {
		msg, _ := r.Vars["fail_msg"].(string)
		if msg == "" {
			msg = "simulated failure in " + node
		}
		return &TaskFailure{Task: node + " vm", Msg: msg}
	}
	if at, _ := r.Vars["error_at"].(string); at == node {
		return &JobFailure{Explanation: "Job terminated due to error", Traceback: "Traceback (most recent call last):\n  simulated error in " + node}
	}
	return nil
}

// vmName is the name deploy-vm gives its VM: vm_name, else
// <user>-vm-<workflow job id>.
func vmName(r *Run) string {
	name, _ := r.Vars["vm_name"].(string)
	if name == "" {
		name = fmt.Sprintf("%s-vm-%d", r.User, r.WorkflowJobID)
	}
	return name
}

// provisionVM is deploy-vm's first node: it makes the VM, adds it to the
// launch's inventory (else the user's) and publishes its facts and the
// arguments it was made with.
func (s *Server) provisionVM(ctx context.Context, r *Run) error {
	if err := simulatedFailure(r, "provision"); err != nil {
		return err
	}
	vm, err := s.opts.VMs.Create(ctx, vmName(r), r.Vars)
	if err != nil {
		return &TaskFailure{Task: "provision vm", Msg: err.Error()}
	}
	facts := map[string]any{
		"fqdn": vm.Hostname, "name": vm.Name, "ansible_host": vm.IP,
		"template": r.Vars["template"], "os_distribution": "Debian",
	}
	if vm.Port != 0 {
		facts["ansible_port"] = vm.Port
	}
	for k, v := range vm.Facts {
		facts[k] = v
	}
	args := map[string]any{}
	for k, v := range r.Vars {
		if !strings.HasPrefix(k, "_broker_") {
			args[k] = v
		}
	}
	args["workflow"] = "deploy-vm"
	vars := map[string]any{"fqdn": vm.Hostname, "ansible_host": vm.IP}
	if vm.Port != 0 {
		vars["ansible_port"] = vm.Port
	}
	s.mu.Lock()
	inv := r.Inventory
	if inv == "" {
		inv = s.opts.Username + " VMs"
	}
	_, err = s.addHostLocked(inv, vm.Name, vars, map[string]any{
		"ansible_fqdn": vm.Hostname, "ansible_distribution": "Debian",
		"_broker_facts": facts, "_broker_args": args,
	})
	s.mu.Unlock()
	if err != nil {
		_ = s.opts.VMs.Remove(context.WithoutCancel(ctx), vm.Name)
		return &TaskFailure{Task: "add to inventory", Msg: err.Error()}
	}
	r.Artifacts["vm_name"] = vm.Name
	r.Artifacts["_broker_facts"] = facts
	r.Artifacts["_broker_args"] = args
	return nil
}

// finalizeVM is deploy-vm's second node: it publishes the VM's
// _broker_facts and _broker_args from its inventory host.
func (s *Server) finalizeVM(ctx context.Context, r *Run) error {
	if err := simulatedFailure(r, "finalize"); err != nil {
		return err
	}
	name := vmName(r)
	facts := s.HostFacts(name)
	if facts == nil {
		return &TaskFailure{Task: "finalize vm", Msg: "VM " + name + " not in any inventory"}
	}
	r.Artifacts["_broker_facts"] = facts["_broker_facts"]
	r.Artifacts["_broker_args"] = facts["_broker_args"]
	return nil
}

// removeVM is remove-vm's node: it removes the VM source_vm and its
// inventory host.
func (s *Server) removeVM(ctx context.Context, r *Run) error {
	name, _ := r.Vars["source_vm"].(string)
	if name == "" {
		return &TaskFailure{Task: "remove vm", Msg: "source_vm is required"}
	}
	if err := s.opts.VMs.Remove(ctx, name); err != nil {
		return &TaskFailure{Task: "remove vm", Msg: err.Error()}
	}
	s.mu.Lock()
	s.removeHostLocked(name)
	s.mu.Unlock()
	return nil
}

// extendVM is extend-vm's node: it sets the expire_time fact of the VM
// target_vm to new_expire_time.
func (s *Server) extendVM(_ context.Context, r *Run) error {
	name, _ := r.Vars["target_vm"].(string)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.hosts {
		if h.name == name {
			h.facts["expire_time"] = r.Vars["new_expire_time"]
			return nil
		}
	}
	return &TaskFailure{Task: "extend vm", Msg: fmt.Sprintf("VM %s not found", name)}
}
