package local

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkg/sftp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
)

func TestExecStatusAndOutput(t *testing.T) {
	p := openProvider(t, nil)
	rec := checkout(t, p, nil)
	c := mustDial(t, rec)

	r := run(t, c, "echo out; echo err >&2; exit 3", "", nil)
	assert.Equal(t, result{3, "out\n", "err\n"}, r)

	r = run(t, c, "true", "", nil)
	assert.Equal(t, result{0, "", ""}, r)

	// HOME and the working directory are the host's own.
	home := filepath.Join(p.Dir(), rec.Broker.ID, "home")
	r = run(t, c, `echo "$HOME"; pwd`, "", nil)
	assert.Equal(t, home+"\n"+home+"\n", r.stdout)
	assert.Equal(t, home, rec.Broker.Data["dir"].(string)+"/home")

	// Standard input reaches the command; large output arrives whole.
	in := strings.Repeat("0123456789abcdef\n", 1<<14)
	r = run(t, c, "cat", in, nil)
	assert.Equal(t, in, r.stdout)
	r = run(t, c, "wc -c", in, nil)
	assert.Equal(t, len(in), atoi(t, r.stdout))
}

func TestExecEnvironment(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "/nonexistent/agent")
	t.Setenv("BROKER_LOCAL_TEST_PARENT", "inherited")
	p := openProvider(t, nil)
	rec := checkout(t, p, map[string]any{"local": true, "env": map[string]any{"HOSTVAR": "host", "NUM": 5, "BOTH": "host"}})
	c := mustDial(t, rec)

	r := run(t, c, `echo "$HOSTVAR $NUM $BOTH $SESSVAR $BROKER_LOCAL_TEST_PARENT ${SSH_AUTH_SOCK-unset} $BROKER_LOCAL_HOST"`, "",
		map[string]string{"SESSVAR": "sess", "BOTH": "session"})
	assert.Equal(t, "host 5 session sess inherited unset "+rec.Broker.ID+"\n", r.stdout)

	// A client cannot drop the marker that check-in finds processes by.
	r = run(t, c, `echo "$BROKER_LOCAL_HOST"`, "", map[string]string{markerVar: "other"})
	assert.Equal(t, rec.Broker.ID+"\n", r.stdout)
}

func TestSignalForwardedToGroup(t *testing.T) {
	p := openProvider(t, nil)
	c := mustDial(t, checkout(t, p, nil))

	// A trap sees the signal and chooses the exit status.
	s, err := c.NewSession()
	require.NoError(t, err)
	defer s.Close()
	out, err := s.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, s.Start(`trap 'echo got; exit 7' USR1; echo ready; while :; do sleep 0.05; done`))
	rd := bufio.NewReader(out)
	line, err := rd.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)
	require.NoError(t, s.Signal(ssh.SIGUSR1))
	rest, _ := io.ReadAll(rd)
	err = s.Wait()
	var ee *ssh.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 7, ee.ExitStatus())
	assert.Equal(t, "got\n", string(rest))

	// A command killed by a signal reports exit-signal.
	s2, err := c.NewSession()
	require.NoError(t, err)
	defer s2.Close()
	out2, err := s2.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, s2.Start(`echo ready; sleep 300`))
	line, err = bufio.NewReader(out2).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)
	require.NoError(t, s2.Signal(ssh.SIGTERM))
	err = s2.Wait()
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, "TERM", ee.Signal())
}

func TestDisconnectKillsRunningCommand(t *testing.T) {
	p := openProvider(t, nil)
	rec := checkout(t, p, nil)
	c, err := dial(t, rec, "")
	require.NoError(t, err)
	s, err := c.NewSession()
	require.NoError(t, err)
	out, err := s.StdoutPipe()
	require.NoError(t, err)
	// The shell's pid is its process group id; sleep is a member.
	require.NoError(t, s.Start(`echo $$; sleep 300; echo never`))
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	pgid := atoi(t, line)
	require.False(t, groupGone(pgid), "the command runs")
	c.Close()
	eventually(t, func() bool { return groupGone(pgid) }, "the command's process group survived the client's disconnection")

	// The host still serves other clients.
	c2 := mustDial(t, rec)
	assert.Equal(t, "ok\n", run(t, c2, "echo ok", "", nil).stdout)
}

func TestChannelClosedEarlyKillsCommand(t *testing.T) {
	p := openProvider(t, nil)
	c := mustDial(t, checkout(t, p, nil))
	s, err := c.NewSession()
	require.NoError(t, err)
	out, err := s.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, s.Start(`echo $$; sleep 300`))
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	pgid := atoi(t, line)
	require.NoError(t, s.Close())
	eventually(t, func() bool { return groupGone(pgid) }, "the command survived the close of its session")
}

func TestCheckinKillsBackgroundProcesses(t *testing.T) {
	p := openProvider(t, nil)
	rec := checkout(t, p, nil)
	c := mustDial(t, rec)
	// One child in the command's group, one that left it (setsid), both
	// detached from the session's output: the commands end at once.
	bg := atoi(t, run(t, c, `sleep 300 >/dev/null 2>&1 </dev/null & echo $!`, "", nil).stdout)
	escaped := atoi(t, run(t, c, `setsid sleep 301 >/dev/null 2>&1 </dev/null & echo $!`, "", nil).stdout)
	// Background processes of finished commands live on, as on a real host.
	require.False(t, gone(bg), "background process alive before checkin")
	require.False(t, gone(escaped), "setsid process alive before checkin")
	assert.Equal(t, "ok\n", run(t, c, "echo ok", "", nil).stdout)

	key, err := os.ReadFile(rec.Broker.SSH.KeyFile)
	require.NoError(t, err)
	keyCopy := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(keyCopy, key, 0o600))

	require.NoError(t, p.Checkin(context.Background(), rec))
	eventually(t, func() bool { return gone(bg) }, "background process survived checkin")
	eventually(t, func() bool { return gone(escaped) }, "setsid process survived checkin")
	_, err = os.Stat(rec.Broker.Data["dir"].(string))
	assert.ErrorIs(t, err, os.ErrNotExist, "checkin removes the host's directory")
	_, err = dial(t, rec, keyCopy)
	assert.Error(t, err, "the server is gone")
}

func TestSFTPSubsystem(t *testing.T) {
	p := openProvider(t, nil)
	rec := checkout(t, p, nil)
	c := mustDial(t, rec)
	sc, err := sftp.NewClient(c)
	require.NoError(t, err)
	defer sc.Close()

	wd, err := sc.Getwd()
	require.NoError(t, err)
	assert.Equal(t, rec.Broker.Data["dir"].(string)+"/home", wd)

	f, err := sc.Create("hello.txt")
	require.NoError(t, err)
	_, err = f.Write([]byte("hello over sftp\n"))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	assert.Equal(t, "hello over sftp\n", run(t, c, "cat hello.txt", "", nil).stdout)

	run(t, c, "printf remote > made.txt", "", nil)
	g, err := sc.Open("made.txt")
	require.NoError(t, err)
	b, err := io.ReadAll(g)
	require.NoError(t, err)
	g.Close()
	assert.Equal(t, "remote", string(b))

	// An unknown subsystem is refused.
	s, err := c.NewSession()
	require.NoError(t, err)
	defer s.Close()
	assert.Error(t, s.RequestSubsystem("nosuch"))
}

func TestWrongKeyRefused(t *testing.T) {
	p := openProvider(t, nil)
	rec := checkout(t, p, nil)
	other := checkout(t, p, nil)

	// Another host's key does not open this one.
	_, err := dial(t, rec, other.Broker.SSH.KeyFile)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "unable to authenticate")

	// Nor does a fresh key, nor no key at all.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	keyFile := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600))
	_, err = dial(t, rec, keyFile)
	assert.Error(t, err)

	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(rec.Broker.SSH.HostKey))
	require.NoError(t, err)
	_, err = ssh.Dial("tcp", rec.Broker.SSH.Host+":"+itoa(rec.Broker.SSH.Port), &ssh.ClientConfig{
		User: rec.Broker.SSH.User, HostKeyCallback: ssh.FixedHostKey(hostKey),
	})
	assert.Error(t, err)

	// The host's own key works, and its host key is the one recorded.
	mustDial(t, rec)
	otherKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(other.Broker.SSH.HostKey))
	require.NoError(t, err)
	assert.NotEqual(t, hostKey.Marshal(), otherKey.Marshal(), "each host has its own host key")
}

func TestShell(t *testing.T) {
	p := openProvider(t, nil)
	c := mustDial(t, checkout(t, p, nil))

	t.Run("pty", func(t *testing.T) {
		s, err := c.NewSession()
		require.NoError(t, err)
		defer s.Close()
		require.NoError(t, s.RequestPty("xterm", 40, 100, ssh.TerminalModes{}))
		var out bytes.Buffer
		s.Stdout = &out
		s.Stdin = strings.NewReader("echo sum-$((40+2)) $TERM; tty; stty size; exit 5\n")
		require.NoError(t, s.Shell())
		require.NoError(t, s.WindowChange(41, 101) /* no reply wanted */)
		err = s.Wait()
		var ee *ssh.ExitError
		require.ErrorAs(t, err, &ee, "output: %q", out.String())
		assert.Equal(t, 5, ee.ExitStatus())
		assert.Contains(t, out.String(), "sum-42 xterm")
		assert.Contains(t, out.String(), "/dev/pts/")
		assert.Regexp(t, `4[01] 10[01]`, out.String())
	})
	t.Run("no pty", func(t *testing.T) {
		s, err := c.NewSession()
		require.NoError(t, err)
		defer s.Close()
		var out bytes.Buffer
		s.Stdout = &out
		s.Stdin = strings.NewReader("echo plain-$((1+1))\nexit 4\n")
		require.NoError(t, s.Shell())
		err = s.Wait()
		var ee *ssh.ExitError
		require.ErrorAs(t, err, &ee)
		assert.Equal(t, 4, ee.ExitStatus())
		assert.Equal(t, "plain-2\n", out.String())
	})
}

func TestOneCommandPerSession(t *testing.T) {
	p := openProvider(t, nil)
	c := mustDial(t, checkout(t, p, nil))
	s, err := c.NewSession()
	require.NoError(t, err)
	defer s.Close()
	in, err := s.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, s.Start("cat >/dev/null")) // runs until its input ends
	ok, err := s.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{"true"}))
	require.NoError(t, err)
	assert.False(t, ok, "a second exec on one session is refused")
	require.NoError(t, in.Close())
	require.NoError(t, s.Wait())
}
