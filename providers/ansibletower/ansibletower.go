// Package ansibletower is the AnsibleTower provider: hosts are VMs made by
// workflows (or job templates) of Ansible Tower, AWX or Red Hat AAP, over
// their REST API with plain net/http.
//
// A checkout launches the workflow named by the "workflow" argument (or the
// job template named by "job_template") with the other arguments as
// extra_vars, waits for it, and reads the host from the job's artifacts
// (_broker_facts with a *fqdn key, _broker_args), as the Python broker does.
// Check-in runs the release workflow (release_workflow, default remove-vm)
// with source_vm; Extend runs extend_workflow with target_vm and
// new_expire_time. Execute runs any workflow or template that makes no host;
// Sync lists the hosts of the user's inventories.
//
// Every launch carries the extra var _broker_request_id (a checkout's
// inventory id, recorded with the template before the launch as
// launch_marker and friends; a fresh id for other launches): a launch whose
// answer is lost (timed out, cancelled, connection broken) is found among
// its template's recent jobs by it. A checkout cancels such a job and checks
// in what it made, as it does for a job it knows, and so does check-in of a
// record that holds only the marker; the launches of release, extend and
// execute wait for their job instead.
//
// Settings (AnsibleTower: section, instances allowed), as the Python broker's:
//
//	base_url                 https://tower.example.com/ (required)
//	token                    OAuth2/personal token (preferred; BROKER_AnsibleTower__token)
//	username, password       a login session instead of a token
//	inventory                inventory name or id used for every launch
//	release_workflow         remove-vm
//	extend_workflow          extend-vm
//	new_expire_time          +172800
//	workflow_timeout         3600 (seconds a job may take)
//	workflow_poll_interval   5 (longest pause between polls; polls start at 250 ms)
//	max_resilient_wait       7200 (seconds transient API failures are retried)
//	request_timeout          60 (seconds for one API request)
//	error_scope              last | all (failure reasons reported)
//	dangling_behavior        checkin | store (hosts a failed workflow made)
//	aap_version, api_path    force the API root (AAP ≥ 2.5: /api/controller/v2/)
//	verify_ssl               true
//	provider_labels          {team: qa}: AWX labels on every launch
//	results_limit            the Python broker's; accepted and ignored
//
// Values are checked when the settings load (Driver.CheckSettings): a wrong
// type fails broker.New, other keys get a warning; base_url and the
// credentials are required only when the provider is opened.
//
// The API root is detected with GET /api/: AWX and AAP before 2.5 serve the
// controller under /api/v2/, AAP 2.5+ behind its gateway under
// /api/controller/v2/. Hosts are reached over SSH with the global ssh:
// settings (user, key or password, known_hosts); a host's port comes from its
// facts (ansible_port) when given.
//
// The package awxtest serves a fake AWX API for tests.
package ansibletower

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// Name is the provider's registered name.
const Name = "AnsibleTower"

func init() { providers.Register(Name, Driver{}) }

// Driver opens AnsibleTower providers.
type Driver struct{}

// SettingKeys lists the keys the AnsibleTower section and its instances
// take (see the package documentation).
func (Driver) SettingKeys() []string { return slices.Clone(settingKeys) }

// CheckSettings checks the values the settings set as Open does, without
// requiring base_url or credentials, and without reaching the server.
func (Driver) CheckSettings(cfg providers.Config) error {
	_, _, err := readConfig(cfg)
	return err
}

// ArgKeys returns the arguments that select AnsibleTower.
func (Driver) ArgKeys() []string { return []string{"workflow", "job_template"} }

// Open opens a provider for one configured instance.
func (Driver) Open(ctx context.Context, cfg providers.Config) (providers.Provider, error) {
	return Open(ctx, cfg)
}

// Provider checks hosts out of one Tower/AWX/AAP instance.
type Provider struct {
	cfg      providers.Config
	set      config
	c        *client
	log      *slog.Logger
	username string
	aap25    bool // controller behind the AAP 2.5+ gateway (UI URLs differ)

	invMu  sync.Mutex
	invIDs map[string]int // inventory name → id

	doneMu   sync.Mutex
	resolved map[string]bool // api_url of unfinished checkouts already resolved
}

// config is the instance's settings, validated.
type config struct {
	baseURL          *url.URL
	creds            credentials
	inventory        string // name or id
	releaseWorkflow  string
	extendWorkflow   string
	newExpireTime    string
	workflowTimeout  time.Duration
	pollInterval     time.Duration
	maxResilientWait time.Duration
	requestTimeout   time.Duration
	errorScope       string
	dangling         string
	aapVersion       string
	apiPath          string
	verifySSL        bool
	providerLabels   map[string]any // labels for every launch (over the request's)
}

// Open validates cfg's settings, finds the API root and authenticates.
func Open(ctx context.Context, cfg providers.Config) (*Provider, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	set, err := parseConfig(cfg)
	if err != nil {
		return nil, err
	}
	p := &Provider{cfg: cfg, set: set, log: cfg.Logger, invIDs: map[string]int{}, resolved: map[string]bool{}}
	p.c = newClient(set.baseURL, set.creds, cfg.Logger, set.requestTimeout, set.maxResilientWait, !set.verifySSL)
	if err := p.detectAPI(ctx); err != nil {
		return nil, fmt.Errorf("ansibletower: %s: %w", p.where(), err)
	}
	if set.creds.token == "" {
		if err := p.c.login(ctx); err != nil {
			return nil, fmt.Errorf("ansibletower: %s: log in as %q: %w", p.where(), set.creds.username, err)
		}
	}
	p.username = set.creds.username
	var me page[user]
	if err := p.c.get(ctx, "me/", &me); err != nil {
		return nil, fmt.Errorf("ansibletower: %s: who am I: %w", p.where(), authHint(err))
	}
	if p.username == "" && len(me.Results) > 0 {
		p.username = me.Results[0].Username
	}
	p.log.Debug("ansibletower: connected", "url", set.baseURL.String(), "api", p.c.api, "user", p.username)
	return p, nil
}

// where names the instance in errors.
func (p *Provider) where() string {
	s := Name
	if p.cfg.Instance != "" {
		s += "::" + p.cfg.Instance
	}
	return s + " at " + p.set.baseURL.String()
}

// authHint adds what to check to a 401.
func authHint(err error) error {
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == 401 {
		return fmt.Errorf("%w (check the token, or username and password, of this instance: AnsibleTower.token or BROKER_AnsibleTower__token)", err)
	}
	return err
}

// Close releases the provider's idle HTTP connections. Hosts stay checked
// out.
func (p *Provider) Close() error {
	p.c.http.CloseIdleConnections()
	return nil
}

// Username is the user the provider acts as.
func (p *Provider) Username() string { return p.username }

// APIPath is the API root in use, e.g. "/api/v2/".
func (p *Provider) APIPath() string { return p.c.api }

// Requests is how many HTTP requests the provider has made, for benchmarks.
func (p *Provider) Requests() int64 { return p.c.requests.Load() }

// detectAPI finds the controller's API root.
func (p *Provider) detectAPI(ctx context.Context) error {
	switch {
	case p.set.apiPath != "":
		p.c.api = "/" + strings.Trim(p.set.apiPath, "/") + "/"
		p.aap25 = strings.Contains(p.c.api, "/controller/")
	case p.set.aapVersion != "":
		p.aap25 = versionAtLeast(p.set.aapVersion, 2, 5)
		p.c.api = "/api/v2/"
		if p.aap25 {
			p.c.api = "/api/controller/v2/"
		}
	default:
		var root struct {
			CurrentVersion    string            `json:"current_version"`
			AvailableVersions map[string]string `json:"available_versions"`
			APIs              map[string]any    `json:"apis"`
		}
		if err := p.c.get(ctx, "/api/", &root); err != nil {
			return fmt.Errorf("detect the API (GET /api/): %w", err)
		}
		if v := root.AvailableVersions["v2"]; v != "" {
			p.c.api = relativeURL(v)
			break
		}
		// AAP 2.5+: /api/ is the gateway's; the controller is below it.
		var ctrl struct {
			AvailableVersions map[string]string `json:"available_versions"`
		}
		if err := p.c.get(ctx, "/api/controller/", &ctrl); err != nil || ctrl.AvailableVersions["v2"] == "" {
			return fmt.Errorf("detect the API: GET /api/ has no available_versions.v2 and GET /api/controller/ has none either (%v); set aap_version or api_path", err)
		}
		p.c.api = relativeURL(ctrl.AvailableVersions["v2"])
		p.aap25 = true
	}
	p.c.loginPath = "/api/login/"
	if p.aap25 {
		p.c.loginPath = "/api/gateway/v1/login/"
	}
	return nil
}

func versionAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	ma, err := strconv.Atoi(parts[0])
	if err != nil {
		return false
	}
	mi := 0
	if len(parts) > 1 {
		mi, _ = strconv.Atoi(parts[1])
	}
	return ma > major || ma == major && mi >= minor
}

// Checkout launches the request's workflow (or job template), waits for it
// and returns the host its artifacts describe. When the workflow fails, the
// hosts it made on the way are checked in (dangling_behavior: checkin) and
// the error says which nodes failed and why.
func (p *Provider) Checkout(ctx context.Context, req providers.CheckoutRequest) (providers.CheckoutResult, error) {
	rec, err := p.checkout(ctx, req)
	if err != nil {
		return providers.CheckoutResult{}, err
	}
	return providers.ResultOf(rec), nil
}

// checkout is Checkout, giving the host's record.
func (p *Provider) checkout(ctx context.Context, req providers.CheckoutRequest) (*inventory.Record, error) {
	args := maps.Clone(req.Args)
	if args == nil {
		args = map[string]any{}
	}
	strategy := stringArg(args, "artifacts", "last")
	delete(args, "artifacts")
	if req.Labels["test"] != "" {
		args["_broker_origin"] = req.Labels["test"]
	}
	marker := req.ID
	if marker == "" {
		marker = inventory.NewID()
	}
	var launched map[string]any
	res, err := p.runNotify(ctx, args, launchHooks{
		marker:   marker,
		onIntent: req.Progress,
		onLaunch: func(data map[string]any) {
			launched = data
			if req.Progress != nil {
				req.Progress(data)
			}
		},
	})
	if err != nil {
		return nil, p.afterFailedRun(ctx, err, marker, launched, req.Progress)
	}
	return p.recordOf(ctx, res, strategy, req)
}

// afterFailedRun cleans up after a run that failed with err, and returns
// err with what went wrong in the cleanup. launched is the data of the job
// it launched, nil when none is known. When the launch's answer was lost,
// the job it may have started is looked for by marker (and told to
// progress). A job that was cancelled or timed out while it ran is stopped
// and what it made so far checked in; one that failed (JobError) has had
// its hosts dealt with already.
func (p *Provider) afterFailedRun(ctx context.Context, err error, marker string, launched map[string]any, progress func(map[string]any)) error {
	var lost *lostLaunchError
	if errors.As(err, &lost) {
		// The launch's answer was lost (timed out, cancelled, connection
		// broken) but it may have started a job: find it by the marker,
		// with a context of its own since the caller's may have ended.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.set.workflowTimeout)
		defer cancel()
		found, ferr := p.findLaunch(fctx, lost.data, lost.inFlight, time.Time{})
		switch {
		case ferr != nil:
			err = errors.Join(err, fmt.Errorf("ansibletower: the launch may have started a job (extra var %s=%s): %w", markerVar, marker, ferr))
		case found != nil:
			p.log.Warn("ansibletower: the launch's answer was lost but it started a job", "marker", marker, "api_url", found["api_url"], "ui_url", found["ui_url"])
			launched = found
			if progress != nil {
				progress(found)
			}
		default:
			p.log.Info("ansibletower: the launch whose answer was lost started no job", "marker", marker)
		}
	}
	var jerr *JobError
	if launched != nil && !errors.As(err, &jerr) {
		// Cancelled or timed out while the workflow ran: stop it and check in
		// what it made so far.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.set.workflowTimeout)
		defer cancel()
		if cerr := p.releaseUnfinished(cctx, launched); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up the unfinished workflow: %w", cerr))
		}
	}
	return err
}

// recordOf returns the inventory record of the host that res's successful
// job made, from its artifacts (merged by strategy: last or merge). A job
// whose artifacts describe no host has the VMs they name checked in.
func (p *Provider) recordOf(ctx context.Context, res *runResult, strategy string, req providers.CheckoutRequest) (*inventory.Record, error) {
	artifacts, err := p.artifacts(ctx, res.job, strategy)
	if err != nil {
		return nil, fmt.Errorf("ansibletower: %s %q (job %d): read artifacts: %w", res.kind, res.name, res.job.ID, err)
	}
	rec, err := hostFromArtifacts(artifacts)
	if err != nil {
		err = fmt.Errorf("ansibletower: %s %q (job %d, %s): %w", res.kind, res.name, res.job.ID, res.uiURL, err)
		if names := vmNames(artifacts); len(names) > 0 {
			err = errors.Join(err, p.releaseAll(context.WithoutCancel(ctx), names, nil))
		}
		return nil, err
	}
	for k, v := range req.Args {
		if _, ok := rec.Args[k]; !ok {
			rec.Args[k] = v
		}
	}
	rec.Broker = &inventory.Meta{
		ID: req.ID,
		Data: map[string]any{
			"job_id":   res.job.ID,
			"job_type": res.job.Type,
			"api_url":  res.apiURL,
			"ui_url":   res.uiURL,
		},
	}
	if port := intFact(rec.Facts, "ansible_port", "ssh_port", "host_ssh_port"); port > 0 {
		rec.Broker.SSH = &inventory.SSH{Port: port}
	}
	inv := res.inventory
	if inv == "" && res.template.SummaryFields.Inventory != nil {
		inv = res.template.SummaryFields.Inventory.Name
	}
	if inv != "" {
		if _, ok := rec.Extra["tower_inventory"]; !ok {
			if rec.Extra == nil {
				rec.Extra = map[string]any{}
			}
			rec.Extra["tower_inventory"] = inv
		}
	}
	return rec, nil
}

// Connect builds an SSH host from rec with the global ssh: settings. It
// does not dial.
func (p *Provider) Connect(ctx context.Context, rec *inventory.Record) (*hostkit.Host, error) {
	if rec == nil || rec.Hostname == "" {
		return nil, fmt.Errorf("ansibletower: connect: record has no hostname")
	}
	s := p.cfg.SSH
	port := s.Port
	if port == 0 {
		port = 22
	}
	host := rec.Hostname
	var cfg hostkit.Config
	if rec.Broker != nil && rec.Broker.SSH != nil {
		var err error
		if cfg, err = providers.ConfigFromRecord(rec); err != nil {
			return nil, fmt.Errorf("ansibletower: connect %s: %w", rec.Name, err)
		}
	} else {
		cfg.Addr = net.JoinHostPort(host, strconv.Itoa(port))
	}
	if rec.Broker == nil || rec.Broker.SSH == nil || rec.Broker.SSH.User == "" {
		cfg.User = "root"
		if s.Username != "" {
			cfg.User = s.Username
		}
	}
	if s.KeyFilename != "" {
		cfg.KeyFiles = append(cfg.KeyFiles, s.KeyFilename)
	}
	cfg.Password = s.Password
	cfg.UseAgent = os.Getenv("SSH_AUTH_SOCK") != ""
	cfg.KnownHostsFiles = append(cfg.KnownHostsFiles, s.KnownHosts...)
	cfg.InsecureIgnoreHostKey = cfg.InsecureIgnoreHostKey || s.Insecure
	if s.ConnectTimeout > 0 {
		cfg.ConnectTimeout = s.ConnectTimeout
	}
	if s.CommandTimeout > 0 {
		cfg.CommandTimeout = s.CommandTimeout
	}
	cfg.Logger = p.log
	h := hostkit.New(host, cfg)
	h.Name = rec.Name
	return h, nil
}

// Checkin runs the release workflow for rec. A record of a checkout that
// never finished (no VM name: its process died, or it was cancelled) is
// resolved through the job it launched, when it got that far: the job is
// cancelled if still running, and the VMs it made are released. A record
// whose launch was sent but never answered (no api_url, a launch_marker) has
// its job looked up by the marker first; an error keeps the record.
func (p *Provider) Checkin(ctx context.Context, rec *inventory.Record) error {
	if rec == nil {
		return nil
	}
	if rec.Name == "" {
		if rec.Broker == nil {
			return nil
		}
		data := rec.Broker.Data
		if api, _ := data["api_url"].(string); api == "" && data[dataMarker] != nil {
			found, err := p.findLaunch(ctx, data, true, rec.Broker.CheckedOut)
			if err != nil {
				return fmt.Errorf("ansibletower: unfinished checkout %s: %w", rec.Broker.ID, err)
			}
			if found == nil {
				return nil // the launch started no job
			}
			p.log.Warn("ansibletower: found the job of an unfinished checkout by its marker", "id", rec.Broker.ID, "api_url", found["api_url"], "ui_url", found["ui_url"])
			data = found
		}
		return p.releaseUnfinished(ctx, data)
	}
	return p.release(ctx, rec.Name, rec)
}

// releaseUnfinished cancels the job of data["api_url"] if it still runs,
// waits for it to stop, and releases every VM it made.
func (p *Provider) releaseUnfinished(ctx context.Context, data map[string]any) error {
	api, _ := data["api_url"].(string)
	if api == "" {
		return nil
	}
	// Once resolved, a job's hosts are released; a second check-in of the
	// same record (the reaper's second pass) has nothing left to do.
	p.doneMu.Lock()
	done := p.resolved[api]
	p.doneMu.Unlock()
	if done {
		return nil
	}
	path := relativeURL(api)
	var j job
	if err := p.c.get(ctx, path, &j); err != nil {
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.StatusCode == 404 {
			return nil // the job is gone, and with it what we could know
		}
		return fmt.Errorf("ansibletower: unfinished checkout: %w", err)
	}
	if !finished(j.Status) {
		p.log.Warn("ansibletower: cancelling the job of an unfinished checkout", "api_url", api, "ui_url", data["ui_url"])
		if err := p.c.post(ctx, strings.TrimSuffix(path, "/")+"/cancel/", nil, nil); err != nil {
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 405 { // 405: finished meanwhile
				return fmt.Errorf("ansibletower: cancel %s: %w", api, err)
			}
		}
		var err error
		if j, err = p.wait(ctx, path); err != nil {
			return fmt.Errorf("ansibletower: unfinished checkout %s: %w", api, err)
		}
	}
	names, err := p.danglingHosts(ctx, j)
	if j.Status == "successful" {
		if arts, aerr := p.artifacts(ctx, j, "merge"); aerr == nil {
			if rec, herr := hostFromArtifacts(arts); herr == nil && !slices.Contains(names, rec.Name) {
				names = append(names, rec.Name)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("ansibletower: unfinished checkout %s: %w", api, err)
	}
	if err := p.releaseAll(ctx, names, nil); err != nil {
		return err
	}
	p.doneMu.Lock()
	p.resolved[api] = true
	p.doneMu.Unlock()
	return nil
}

// release runs release_workflow with source_vm, passing the host's
// arguments on (minus the ones that choose a workflow) as the Python broker
// does, so release playbooks see what the deploy saw.
func (p *Provider) release(ctx context.Context, name string, rec *inventory.Record) error {
	args := map[string]any{}
	if rec != nil {
		for k, v := range rec.Args {
			args[k] = v
		}
		if inv := askedInventory(rec); inv != nil {
			args["inventory"] = inv
		}
	}
	for _, k := range []string{"workflow", "job_template", "artifacts", "tower_inventory", "count", "_broker_origin", markerVar} {
		delete(args, k)
	}
	args["workflow"] = p.set.releaseWorkflow
	args["source_vm"] = name
	if _, err := p.run(ctx, args); err != nil {
		return fmt.Errorf("ansibletower: check in %s: %w", name, err)
	}
	return nil
}

// askedInventory is the inventory rec's checkout asked for (its
// tower_inventory or inventory argument), which release and extend pass on
// as the Python broker does; nil when it asked for none, and then only the
// inventory setting is sent (see runNotify). The record's own
// tower_inventory, where the host was found, is not sent: a release or
// extend workflow that does not prompt for an inventory refuses a launch
// that names another one than its own.
func askedInventory(rec *inventory.Record) any {
	for _, k := range []string{"tower_inventory", "inventory"} {
		if inv, ok := rec.Args[k]; ok && inv != nil && inv != "" {
			return inv
		}
	}
	return nil
}

// releaseAll releases names concurrently and joins the failures.
func (p *Provider) releaseAll(ctx context.Context, names []string, rec *inventory.Record) error {
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			p.log.Warn("ansibletower: checking in a host left by a failed workflow", "host", name)
			errs[i] = p.release(ctx, name, rec)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Extend runs extend_workflow for rec with target_vm and new_expire_time
// (args["new_expire_time"], else the setting, default +172800).
func (p *Provider) Extend(ctx context.Context, rec *inventory.Record, args map[string]any) error {
	if rec == nil || rec.Name == "" {
		return fmt.Errorf("ansibletower: extend: record has no VM name")
	}
	run := map[string]any{
		"workflow":        p.set.extendWorkflow,
		"target_vm":       rec.Name,
		"new_expire_time": stringArg(args, "new_expire_time", p.set.newExpireTime),
	}
	if inv := askedInventory(rec); inv != nil {
		run["inventory"] = inv
	}
	if _, err := p.run(ctx, run); err != nil {
		return fmt.Errorf("ansibletower: extend %s: %w", rec.Name, err)
	}
	return nil
}

// Execute launches a workflow or job template that makes no host. It
// returns the job's artifacts when args has artifacts: merge|last, else a
// map with the job's id, status and URLs.
func (p *Provider) Execute(ctx context.Context, args map[string]any) (any, error) {
	args = maps.Clone(args)
	strategy := stringArg(args, "artifacts", "")
	delete(args, "artifacts")
	res, err := p.run(ctx, args)
	if err != nil {
		return nil, err
	}
	if strategy != "" {
		return p.artifacts(ctx, res.job, strategy)
	}
	return map[string]any{"id": res.job.ID, "type": res.job.Type, "name": res.name, "status": res.job.Status, "api_url": res.apiURL, "ui_url": res.uiURL}, nil
}

// stringArg returns args[key] as a string, or def.
func stringArg(args map[string]any, key, def string) string {
	v, ok := args[key]
	if !ok || v == nil {
		return def
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// intFact returns the first of keys in facts that is a port number.
func intFact(facts map[string]any, keys ...string) int {
	for _, k := range keys {
		switch v := facts[k].(type) {
		case int:
			return v
		case int64:
			return int(v)
		case float64:
			return int(v)
		case string:
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
		}
	}
	return 0
}

// sortedKeys lists a map's keys for messages.
func sortedKeys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }
