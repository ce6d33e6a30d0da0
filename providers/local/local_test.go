package local

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/providertest"
)

func TestRegistered(t *testing.T) {
	d, name, err := providers.Lookup("local")
	require.NoError(t, err)
	assert.Equal(t, "Local", name)
	assert.Equal(t, []string{"local"}, d.ArgKeys())
	got, err := providers.Infer(map[string]any{"local": true})
	require.NoError(t, err)
	assert.Equal(t, "Local", got)
}

func TestConformance(t *testing.T) {
	cfg := providers.Config{Provider: Name, Instance: "test", Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}
	var dirs []string
	providertest.Run(t, func(t *testing.T) providers.Provider {
		c := cfg
		c.Dir = t.TempDir()
		p, err := Open(c)
		require.NoError(t, err)
		t.Cleanup(func() {
			_ = p.Close()
			entries, err := os.ReadDir(p.Dir())
			if !os.IsNotExist(err) {
				require.NoError(t, err)
			}
			assert.Empty(t, entries, "every host directory is removed")
		})
		dirs = append(dirs, p.Dir())
		return p
	}, providertest.Options{
		Args:               map[string]any{"local": true},
		BadArgs:            map[string]any{"env": "not-a-map"},
		BadArgsMention:     "env",
		Driver:             Driver{},
		Config:             cfg,
		BadSettings:        map[string]any{"shell": "/no/such/shell"},
		BadSettingsMention: "/no/such/shell",
		Exists: func(ctx context.Context, rec *inventory.Record) (bool, error) {
			for _, dir := range dirs {
				if _, err := os.Stat(filepath.Join(dir, rec.ID())); err == nil || !os.IsNotExist(err) {
					return err == nil, err
				}
			}
			return false, nil
		},
	})
}

func TestOpenSettings(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(providers.Config{Settings: map[string]any{"shell": "/no/such/shell"}, Dir: dir})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "shell")
	assert.Contains(t, err.Error(), "/no/such/shell")

	_, err = Open(providers.Config{Settings: map[string]any{"dir": 5}, Dir: dir})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dir")

	_, err = Open(providers.Config{})
	require.Error(t, err, "no directory at all")

	other := filepath.Join(t.TempDir(), "hosts")
	p, err := Open(providers.Config{Settings: map[string]any{"dir": other, "shell": "/bin/sh", "unknown": 1}, Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	rec := checkout(t, p, nil)
	assert.Equal(t, filepath.Join(other, rec.ID()), rec.Broker.Data["dir"])
	assert.DirExists(t, filepath.Join(other, rec.ID(), "home"))

	// The default is <cfg.Dir>/local.
	d := openProvider(t, nil)
	assert.Equal(t, "local", filepath.Base(d.Dir()))
}

func TestRecord(t *testing.T) {
	p := openProvider(t, nil)
	id := inventory.NewID()
	args := map[string]any{"local": map[string]any{"whatever": 1}}
	res, err := p.Checkout(t.Context(), providers.CheckoutRequest{ID: id, Args: args})
	require.NoError(t, err)
	rec := res.Record(id)
	t.Cleanup(func() { _ = p.Checkin(context.Background(), rec) })
	name, _ := os.Hostname()
	assert.Equal(t, name, rec.Hostname, "this machine's name")
	assert.Equal(t, "127.0.0.1", rec.IP)
	assert.Equal(t, "local-"+id, rec.Name)
	assert.Equal(t, args, rec.Args)
	args["changed"] = true
	assert.NotContains(t, rec.Args, "changed", "Args is a copy")
	require.NotNil(t, rec.Broker)
	require.NotNil(t, rec.Broker.SSH)
	assert.Equal(t, id, rec.Broker.ID)
	assert.Equal(t, "127.0.0.1", rec.Broker.SSH.Host)
	assert.NotZero(t, rec.Broker.SSH.Port)
	assert.Equal(t, currentUser(), rec.Broker.SSH.User)
	assert.True(t, strings.HasPrefix(rec.Broker.SSH.HostKey, "ssh-ed25519 "))
	assert.Equal(t, os.Getpid(), rec.Broker.Data["pid"])
	dir := filepath.Join(p.Dir(), id)
	assert.Equal(t, dir, rec.Broker.Data["dir"])
	for name, mode := range map[string]os.FileMode{"": 0o700 | os.ModeDir, "home": 0o700 | os.ModeDir, "client_key": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, mode, fi.Mode(), "mode of %s", filepath.Join(dir, name))
	}
	assert.Equal(t, filepath.Join(dir, "client_key"), rec.Broker.SSH.KeyFile)

	// The same id twice is refused.
	_, err = p.Checkout(t.Context(), providers.CheckoutRequest{ID: id})
	assert.Error(t, err)
}

func TestBadRequests(t *testing.T) {
	p := openProvider(t, nil)
	for _, c := range []struct {
		id      string
		args    map[string]any
		mention string
	}{
		{"", nil, "id"},
		{"../escape", nil, "id"},
		{".hidden", nil, "id"},
		{inventory.NewID(), map[string]any{"local": 5}, "local"},
		{inventory.NewID(), map[string]any{"local": false}, "local"},
		{inventory.NewID(), map[string]any{"env": []any{"A=1", "hunter2-secret"}}, "env: item 1"},
		{inventory.NewID(), map[string]any{"env": "API_TOKEN=hunter2-secret"}, "env"},
		{inventory.NewID(), map[string]any{"env": map[string]any{"A=B": "1"}}, "A=B"},
		{inventory.NewID(), map[string]any{"env": map[string]any{"A": map[string]any{}}}, "env.A"},
		// Another tool's name for a container's image must not run here.
		{inventory.NewID(), map[string]any{"image": "brokertest/busybox:1"}, `unknown argument "image"`},
		{inventory.NewID(), map[string]any{"container_hots": "x"}, "local (Local)"},
	} {
		_, err := p.Checkout(t.Context(), providers.CheckoutRequest{ID: c.id, Args: c.args})
		if assert.Error(t, err, "%q %v", c.id, c.args) {
			assert.Contains(t, err.Error(), c.mention)
			assert.NotContains(t, err.Error(), "hunter2", "an env value may be a secret")
		}
	}
	entries, _ := os.ReadDir(p.Dir())
	assert.Empty(t, entries, "refused checkouts leave nothing behind")

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := p.Checkout(ctx, providers.CheckoutRequest{ID: inventory.NewID()})
	assert.ErrorIs(t, err, context.Canceled)
}

func TestExecuteThroughHostkit(t *testing.T) {
	p := openProvider(t, nil)
	rec := checkout(t, p, map[string]any{"env": map[string]any{"GREETING": "hello"}})
	listed := checkout(t, p, map[string]any{"env": []any{"GREETING=hi=there"}}) // the Container provider's form
	lh, err := p.Connect(t.Context(), listed)
	require.NoError(t, err)
	defer lh.Close()
	res, err := lh.Execute(t.Context(), `echo "$GREETING"`)
	require.NoError(t, err)
	assert.Equal(t, "hi=there\n", res.Stdout)

	h, err := p.Connect(t.Context(), rec)
	require.NoError(t, err)
	defer h.Close()
	assert.Equal(t, rec.Name, h.Name)
	assert.Equal(t, rec.Hostname, h.Hostname)

	res, err = h.Execute(t.Context(), `echo "$GREETING $EXTRA"; echo oops >&2; exit 2`, hostkit.WithEnv(map[string]string{"EXTRA": "world"}))
	require.NoError(t, err)
	assert.Equal(t, hostkit.Result{Status: 2, Stdout: "hello world\n", Stderr: "oops\n"}, res)

	res, err = h.Execute(t.Context(), "tr a-z A-Z", hostkit.WithStdin(strings.NewReader("upper")))
	require.NoError(t, err)
	assert.Equal(t, "UPPER", res.Stdout)

	require.NoError(t, h.WriteFile(t.Context(), "note.txt", []byte("written"), 0o640))
	res, err = h.Execute(t.Context(), "cat note.txt; stat -c %a note.txt")
	require.NoError(t, err)
	assert.Equal(t, "written640\n", res.Stdout)
	b, err := h.ReadFile(t.Context(), "note.txt")
	require.NoError(t, err)
	assert.Equal(t, "written", string(b))

	// A command outliving its context is killed with its group.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := h.Execute(ctx, "echo $$ > pgid.tmp; mv pgid.tmp pgid; sleep 300")
		errc <- err
	}()
	pgidFile := filepath.Join(rec.Broker.Data["dir"].(string), "home", "pgid")
	eventually(t, func() bool { _, err := os.Stat(pgidFile); return err == nil }, "the command did not start")
	cancel()
	require.Error(t, <-errc)
	b, err = os.ReadFile(pgidFile)
	require.NoError(t, err)
	pgid := atoi(t, string(b))
	eventually(t, func() bool { return groupGone(pgid) }, "the command survived its context")
}

func TestGlobalSSHSettingsIgnored(t *testing.T) {
	prov, err := Driver{}.Open(t.Context(), providers.Config{
		Provider: Name,
		Dir:      t.TempDir(),
		SSH: providers.SSHSettings{
			Username:    "someone-else",
			Password:    "not-used",
			Port:        2222,
			KeyFilename: "/nonexistent/id_rsa",
			KnownHosts:  []string{"/nonexistent/known_hosts"},
		},
	})
	require.NoError(t, err)
	p := prov.(*Provider)
	t.Cleanup(func() { _ = p.Close() })
	rec := checkout(t, p, nil)
	assert.Equal(t, currentUser(), rec.Broker.SSH.User)
	h, err := p.Connect(t.Context(), rec)
	require.NoError(t, err)
	defer h.Close()
	res, err := h.Execute(t.Context(), "echo fine")
	require.NoError(t, err)
	assert.Equal(t, "fine\n", res.Stdout)
}

func TestCheckinForms(t *testing.T) {
	p := openProvider(t, nil)
	ctx := t.Context()

	// Only the id, as in an intent record written before a crash.
	rec := checkout(t, p, nil)
	require.NoError(t, p.Checkin(ctx, &inventory.Record{Broker: &inventory.Meta{ID: rec.ID()}}))
	assert.NoDirExists(t, filepath.Join(p.Dir(), rec.ID()))
	require.NoError(t, p.Checkin(ctx, rec), "idempotent")

	// Only the name.
	rec = checkout(t, p, nil)
	require.NoError(t, p.Checkin(ctx, &inventory.Record{Name: rec.Name}))
	assert.NoDirExists(t, filepath.Join(p.Dir(), rec.ID()))

	// A directory of a host this process never served (a dead process's).
	id := inventory.NewID()
	require.NoError(t, os.MkdirAll(filepath.Join(p.Dir(), id, "home"), 0o700))
	require.NoError(t, p.Checkin(ctx, &inventory.Record{Broker: &inventory.Meta{ID: id}}))
	assert.NoDirExists(t, filepath.Join(p.Dir(), id))

	// Never existed.
	require.NoError(t, p.Checkin(ctx, &inventory.Record{Broker: &inventory.Meta{ID: inventory.NewID()}}))

	// Nothing to find it by, or an id that would escape the directory.
	assert.Error(t, p.Checkin(ctx, &inventory.Record{Hostname: "127.0.0.1"}))
	assert.Error(t, p.Checkin(ctx, &inventory.Record{Broker: &inventory.Meta{ID: "../.."}}))
	assert.Error(t, p.Checkin(ctx, nil))
	assert.DirExists(t, p.Dir())
}

// TestCheckinByAnotherProvider checks a host in through a second provider on
// the same directory, as another process (a reaper) would: the host's
// processes die, its directory goes and its server stops serving.
func TestCheckinByAnotherProvider(t *testing.T) {
	dir := t.TempDir()
	p1, err := Open(providers.Config{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p1.Close() })
	p2, err := Open(providers.Config{Dir: dir})
	require.NoError(t, err)

	rec := checkout(t, p1, nil)
	c := mustDial(t, rec)
	bg := atoi(t, run(t, c, `sleep 300 >/dev/null 2>&1 </dev/null & echo $!`, "", nil).stdout)
	key, err := os.ReadFile(rec.Broker.SSH.KeyFile)
	require.NoError(t, err)
	keyCopy := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(keyCopy, key, 0o600))

	require.NoError(t, p2.Checkin(t.Context(), rec))
	assert.NoDirExists(t, filepath.Join(dir, "local", rec.ID()))
	eventually(t, func() bool { return gone(bg) }, "the host's process survived a checkin from elsewhere")

	// The owner's server refuses new sessions and connections, then stops.
	s, err := c.NewSession()
	if err == nil {
		s.Close()
	}
	assert.Error(t, err, "new session on a checked-in host")
	_, err = dial(t, rec, keyCopy)
	assert.Error(t, err, "new connection to a checked-in host")
	eventually(t, func() bool {
		p1.mu.Lock()
		defer p1.mu.Unlock()
		return len(p1.servers) == 0
	}, "the owner's server did not stop")
}

func TestSync(t *testing.T) {
	p := openProvider(t, nil)
	a := checkout(t, p, nil)
	b := checkout(t, p, nil)

	// A host of a process that died, and a directory being created.
	dead := inventory.CurrentOwner("")
	dead.PID, dead.Started = deadPID(t), 1
	staleID := inventory.NewID()
	staleDir := filepath.Join(p.Dir(), staleID)
	require.NoError(t, os.MkdirAll(staleDir, 0o700))
	info, err := json.Marshal(hostInfo{Owner: dead, Record: &inventory.Record{Name: "local-" + staleID, Broker: &inventory.Meta{ID: staleID}}})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(staleDir, hostFile), info, 0o600))
	creating := filepath.Join(p.Dir(), inventory.NewID())
	require.NoError(t, os.MkdirAll(creating, 0o700))

	recs, err := p.Sync(t.Context(), "")
	require.NoError(t, err)
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.ID())
		assert.NotNil(t, r.Broker.SSH)
	}
	assert.ElementsMatch(t, []string{a.ID(), b.ID()}, ids)
	assert.NoDirExists(t, staleDir, "a dead process's host is removed")
	assert.DirExists(t, creating, "a directory without host file is left alone")

	recs, err = p.Sync(t.Context(), "someone-else")
	require.NoError(t, err)
	assert.Empty(t, recs)
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	return cmd.Process.Pid
}

func TestDescribe(t *testing.T) {
	p := openProvider(t, nil)
	var d providers.Describer = p
	text, err := d.Describe(t.Context(), "")
	require.NoError(t, err)
	assert.Contains(t, text, "env")
	assert.Contains(t, text, p.Dir())
}

// TestHostOfAnotherProcess checks a host served by a child process: this
// process reaches it from its record, Sync lists it while the child lives,
// and once the child is SIGKILLed its host is stale and Sync reaps it, its
// processes included.
func TestHostOfAnotherProcess(t *testing.T) {
	if os.Getenv("LOCAL_TEST_CHILD_DIR") != "" {
		t.Skip("child")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildHolder$", "-test.v")
	cmd.Env = append(os.Environ(), "LOCAL_TEST_CHILD_DIR="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var rec *inventory.Record
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if js, ok := strings.CutPrefix(sc.Text(), "record "); ok {
			require.NoError(t, json.Unmarshal([]byte(js), &rec))
			break
		}
	}
	require.NotNil(t, rec, "the child printed its host's record")

	p, err := Open(providers.Config{Dir: dir})
	require.NoError(t, err)
	h, err := p.Connect(t.Context(), rec)
	require.NoError(t, err)
	defer h.Close()
	res, err := h.Execute(t.Context(), `sleep 300 >/dev/null 2>&1 </dev/null & echo $!`)
	require.NoError(t, err)
	bg := atoi(t, res.Stdout)
	recs, err := p.Sync(t.Context(), "")
	require.NoError(t, err)
	require.Len(t, recs, 1, "the live child's host is listed")
	assert.Equal(t, rec.ID(), recs[0].ID())

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	h.Close()
	recs, err = p.Sync(t.Context(), "")
	require.NoError(t, err)
	assert.Empty(t, recs, "a dead process's host is stale")
	assert.NoDirExists(t, filepath.Join(dir, "local", rec.ID()))
	eventually(t, func() bool { return gone(bg) }, "the dead process's host's processes are killed")
}

// TestChildHolder is the child of TestHostOfAnotherProcess: it checks out a
// host, prints its record and waits to be killed.
func TestChildHolder(t *testing.T) {
	dir := os.Getenv("LOCAL_TEST_CHILD_DIR")
	if dir == "" {
		t.Skip("run by TestHostOfAnotherProcess")
	}
	p, err := Open(providers.Config{Dir: dir})
	require.NoError(t, err)
	id := inventory.NewID()
	res, err := p.Checkout(t.Context(), providers.CheckoutRequest{ID: id})
	require.NoError(t, err)
	js, err := json.Marshal(res.Record(id))
	require.NoError(t, err)
	fmt.Println("record", string(js))
	time.Sleep(2 * time.Minute)
}

// TestNoGoroutineLeft: after check-in, no goroutine of the host remains.
func TestNoGoroutineLeft(t *testing.T) {
	p := openProvider(t, nil)
	before := runtime.NumGoroutine()
	rec := checkout(t, p, nil)
	h, err := p.Connect(t.Context(), rec)
	require.NoError(t, err)
	_, err = h.Execute(t.Context(), "echo hi")
	require.NoError(t, err)
	_, err = h.ReadFile(t.Context(), "/etc/hostname")
	require.NoError(t, err)
	// A connection left open: check-in closes it.
	c := mustDial(t, rec)
	s, err := c.NewSession()
	require.NoError(t, err)
	require.NoError(t, s.Start("sleep 300"))
	require.NoError(t, h.Close())
	require.NoError(t, p.Checkin(t.Context(), rec))
	c.Close()
	eventually(t, func() bool { return runtime.NumGoroutine() <= before }, fmt.Sprintf("goroutines left after checkin (before %d, now %d)", before, runtime.NumGoroutine()))
}

func BenchmarkCheckoutCheckin(b *testing.B) {
	p := openProvider(b, nil)
	ctx := context.Background()
	for b.Loop() {
		id := inventory.NewID()
		res, err := p.Checkout(ctx, providers.CheckoutRequest{ID: id})
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Checkin(ctx, res.Record(id)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkExecute(b *testing.B) {
	p := openProvider(b, nil)
	rec := checkout(b, p, nil)
	h, err := p.Connect(context.Background(), rec)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	ctx := context.Background()
	for b.Loop() {
		res, err := h.Execute(ctx, "true")
		if err != nil || res.Status != 0 {
			b.Fatal(res, err)
		}
	}
}

// Keys given in authorized_keys may log in besides the host's own; other
// keys may not, and a bad key line is refused naming the line.
func TestAuthorizedKeys(t *testing.T) {
	p := openProvider(t, nil)
	other := checkout(t, p, nil) // its client key is a stranger to the host below
	otherPub := authorizedKeyOf(t, other.Broker.SSH.KeyFile)
	rec := checkout(t, p, map[string]any{"authorized_keys": []any{otherPub}})
	c, err := dial(t, rec, other.Broker.SSH.KeyFile)
	require.NoError(t, err, "the authorized key logs in")
	c.Close()
	c, err = dial(t, rec, "")
	require.NoError(t, err, "the host's own key still logs in")
	c.Close()
	_, err = dial(t, other, rec.Broker.SSH.KeyFile)
	require.Error(t, err, "keys are per host")

	_, err = p.Checkout(context.Background(), providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"authorized_keys": "# comment\nssh-ed25519 not-base64"}})
	require.ErrorContains(t, err, "authorized_keys, line 2")
}

func authorizedKeyOf(t *testing.T, keyFile string) string {
	t.Helper()
	pemBytes, err := os.ReadFile(keyFile)
	require.NoError(t, err)
	signer, err := ssh.ParsePrivateKey(pemBytes)
	require.NoError(t, err)
	return string(ssh.MarshalAuthorizedKey(signer.PublicKey()))
}
