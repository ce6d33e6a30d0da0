package providers

import (
	"bytes"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
)

// ConfigFromRecord returns the SSH settings stored in an inventory record,
// for a provider's Connect: Addr from SSH.Host (else Hostname) and SSH.Port
// (default 22), User (default "root"), the pinned host key(s), the key file
// and Insecure. Secrets (passwords) are never in records: add them from
// settings. A record without an SSH block gives an error wrapping
// hostkit.ErrNoSSH.
func ConfigFromRecord(rec *inventory.Record) (hostkit.Config, error) {
	if rec == nil {
		return hostkit.Config{}, fmt.Errorf("%w: nil inventory record", hostkit.ErrNoSSH)
	}
	label := recordLabel(rec)
	if rec.Broker == nil || rec.Broker.SSH == nil {
		return hostkit.Config{}, fmt.Errorf("%w: inventory record %s has no ssh block", hostkit.ErrNoSSH, label)
	}
	s := rec.Broker.SSH
	host := s.Host
	if host == "" {
		host = rec.Hostname
	}
	if host == "" {
		return hostkit.Config{}, fmt.Errorf("%w: inventory record %s has neither ssh.host nor hostname", hostkit.ErrNoSSH, label)
	}
	port := s.Port
	if port == 0 {
		port = 22
	}
	if port < 0 || port > 65535 {
		return hostkit.Config{}, fmt.Errorf("providers: inventory record %s: invalid ssh port %d", label, port)
	}
	cfg := hostkit.Config{
		Addr:                  net.JoinHostPort(host, strconv.Itoa(port)),
		User:                  s.User,
		InsecureIgnoreHostKey: s.Insecure,
	}
	if cfg.User == "" {
		cfg.User = "root"
	}
	if s.KeyFile != "" {
		cfg.KeyFiles = []string{s.KeyFile}
	}
	rest := bytes.TrimSpace([]byte(s.HostKey))
	for len(rest) > 0 {
		k, _, _, r, err := ssh.ParseAuthorizedKey(rest)
		if err != nil {
			return hostkit.Config{}, fmt.Errorf("providers: inventory record %s: ssh.host_key %q: %w", label, s.HostKey, err)
		}
		cfg.HostKeys = append(cfg.HostKeys, k)
		rest = bytes.TrimSpace(r)
	}
	return cfg, nil
}

func recordLabel(rec *inventory.Record) string {
	switch {
	case rec.Name != "" && rec.Hostname != "":
		return fmt.Sprintf("%s (%s)", rec.Name, rec.Hostname)
	case rec.Name != "":
		return rec.Name
	case rec.Hostname != "":
		return rec.Hostname
	case rec.ID() != "":
		return "id " + rec.ID()
	}
	return "(unnamed)"
}
