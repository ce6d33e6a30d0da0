// Package hostkit drives a host over SSH: commands (Execute), files over SFTP
// (ReadFile, WriteFile, Upload, Download, CopyTo, FS) and interactive shells.
//
// One SSH connection per host is dialed on first use and reused; every command
// runs in a new session, so commands on one host may run concurrently. Hosts
// with no SSH server (e.g. containers without sshd) are driven through a
// Transport (the engine's exec and archive API): Execute, ReadFile,
// WriteFile, Upload, Download and CopyTo give the same results there, while
// what needs SSH itself (SFTP, FS, Shell, SSHClient) returns an error
// wrapping ErrNoSSH.
//
// Whole-file writes never leave a half file under the destination's name:
// WriteFile, Upload and CopyTo write to a temporary file beside the
// destination (".<name>.broker-<random>.tmp", see IsTempName), with its mode
// set before any byte, and rename it over the destination once complete
// (over SFTP: OpenSSH's posix-rename@openssh.com, atomic; on servers without
// it, SFTP's rename, removing the destination first when the server will
// not replace it); Download does the same locally. A write that fails or is
// cut short (sshd killed, a container killed or paused past the deadline)
// leaves the destination as it was and removes its temporary, or, when the
// connection is gone, the host's next SFTP client does (the Container
// provider's engine transport, its next call). So a replaced file is a new
// file: owned by the user writing it; over SFTP and locally, symbolic links
// at the destination are followed (the file they point to is replaced; the
// Container provider's engine transport replaces the link, as the engine's
// archive API always did), and a destination that is not a regular file (a
// device, a FIFO), or whose directory the user may not write in, is written
// in place as before.
package hostkit

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"time"

	"golang.org/x/crypto/ssh"
)

// Result is what a command left: its exit status and its output.
// A non-zero Status is a Result, not an error.
type Result struct {
	Status int
	Stdout string
	Stderr string
}

// Config says how to reach a host: over SSH, or through a Transport.
type Config struct {
	Addr string // "host:port" to dial
	User string

	// Authentication: every method given is offered, in this order.
	Signers  []ssh.Signer
	KeyFiles []string // private key files (unencrypted)
	Password string   // secret: never logged
	UseAgent bool     // offer the keys of the agent at $SSH_AUTH_SOCK

	// Host key verification: pinned keys win; else known_hosts files; an
	// unverified host key is accepted only with InsecureIgnoreHostKey.
	HostKeys              []ssh.PublicKey
	KnownHostsFiles       []string
	InsecureIgnoreHostKey bool

	ConnectTimeout time.Duration // each dial+handshake attempt; default 10s
	ConnectRetries int           // attempts after the first; default 3
	CommandTimeout time.Duration // default for Execute; 0 means the context's deadline only

	// Env is set for every command Execute runs over SSH (WithEnv's values
	// win): e.g. a container's environment, which sshd's sessions do not
	// inherit from the container's main process. Values may be secrets:
	// they are never logged.
	Env map[string]string

	Logger *slog.Logger // nil: discard

	// Dial opens the network connection the SSH client runs over; nil: a
	// net.Dialer. E.g. to go through a jump host or to observe connections.
	Dial DialFunc
	// DialOnly says that Addr is only a name handed to Dial, which reaches
	// the host another way (a container engine's exec stream): no other
	// SSH client can dial Addr, and Host.Addr reports "".
	DialOnly bool
	// Transport drives the host when it has no SSH address (Addr empty):
	// the engine's exec and archive API of a container without sshd. New
	// takes it over: Close closes it.
	Transport Transport
}

// ExecOptions are the settings of one Execute call.
type ExecOptions struct {
	Stdin   io.Reader
	Env     map[string]string
	Timeout time.Duration
}

// ExecOption sets one of ExecOptions.
type ExecOption func(*ExecOptions)

// WithStdin feeds r to the command's standard input.
func WithStdin(r io.Reader) ExecOption { return func(o *ExecOptions) { o.Stdin = r } }

// WithEnv sets environment variables for the command.
func WithEnv(env map[string]string) ExecOption { return func(o *ExecOptions) { o.Env = env } }

// WithTimeout bounds the command's run time, over the context's deadline.
func WithTimeout(d time.Duration) ExecOption { return func(o *ExecOptions) { o.Timeout = d } }

// Transport drives a host that has no SSH server.
type Transport interface {
	Execute(ctx context.Context, cmd string, opts ExecOptions) (Result, error)
	// Open streams a remote file. A reader that also has
	// Stat() (fs.FileInfo, error) gives the file's size and mode, which
	// Download keeps; otherwise the mode is 0644.
	Open(ctx context.Context, path string) (io.ReadCloser, error)
	// Create writes r to a remote file with the given mode. A Create that
	// fails or is cut short must leave the file as it was, and no
	// temporary behind (once the host can be reached again): write to a
	// temporary beside it (TempName) and rename it over the file.
	Create(ctx context.Context, path string, perm fs.FileMode, r io.Reader) error
	Close() error
}
