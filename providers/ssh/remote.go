package ssh

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
)

// The lease a lab machine records itself, so that it holds whoever takes
// it: another broker directory, another user, another machine. It is one
// line in /tmp/broker-ssh-leases/<sshd port>.lease on the host — the id,
// the expiry (the host's clock, Unix seconds) and the owner as JSON —
// changed only under flock(1) of <sshd port>.lock beside it. The port is
// the one sshd answered on (SSH_CONNECTION), so two sshd of one machine
// are two hosts, and one machine reached by two names is one. The holder
// renews the expiry every third of lease_ttl; a holder on the taker's
// machine is known dead at once (inventory.Owner.Dead), any other once
// its lease has expired.

// leaseDir is where lab machines keep their leases: every user of the
// host may write there (mode 0777, made by the first).
const leaseDir = "/tmp/broker-ssh-leases"

// leaseScript runs on the host: sh -c leaseScript lease OP ID TTL REPLACE OWNER.
// It prints one line: STATUS NOW [ID EXPIRY OWNER]. take writes the lease
// when there is none, it has expired, or it is ID's or REPLACE's
// (a holder the caller proved dead); renew and release act only on ID's.
const leaseScript = `set -u
op=$1 id=$2 ttl=$3 replace=$4 owner=$5
port=${SSH_CONNECTION##* }
case $port in ''|*[!0-9]*) echo "ERR no server port in SSH_CONNECTION"; exit 0;; esac
d=` + leaseDir + `
[ -d "$d" ] || (umask 0; mkdir -m 0777 "$d") 2>/dev/null
if [ -L "$d" ] || [ ! -d "$d" ]; then echo "ERR $d is not a directory"; exit 0; fi
f=$d/$port.lease l=$d/$port.lock
(set -C; umask 0; : > "$l") 2>/dev/null
command -v flock >/dev/null 2>&1 || { echo "ERR no flock(1) on the host (util-linux)"; exit 0; }
exec 9<"$l" || { echo "ERR cannot open $l"; exit 0; }
flock -w 10 9 || { echo "ERR $l: not locked within 10 s"; exit 0; }
now=$(date +%s)
cur=
if [ -f "$f" ] && [ ! -L "$f" ]; then cur=$(head -n 1 "$f" | head -c 4096); fi
cid=${cur%% *} rest=${cur#* }
cexp=${rest%% *}
case $cexp in ''|*[!0-9]*) cexp=0;; esac
put() {
	t=$(mktemp "$d/.$port.XXXXXX") || return 1
	printf '%s %s %s\n' "$id" "$((now + ttl))" "$owner" > "$t" && chmod 0666 "$t" && mv -f "$t" "$f" || { rm -f "$t"; return 1; }
}
case $op in
take)
	if [ -n "$cur" ] && [ "$cid" != "$id" ] && [ "$cid" != "$replace" ] && [ "$cexp" -gt "$now" ]; then
		echo "BUSY $now $cur"
	else
		put && echo "TAKEN $now"
	fi;;
renew)
	if [ -n "$cur" ] && [ "$cid" = "$id" ]; then put && echo "RENEWED $now"; else echo "LOST $now $cur"; fi;;
release)
	if [ -n "$cur" ] && [ "$cid" = "$id" ]; then rm -f "$f" && echo "RELEASED $now"; else echo "NOTOURS $now $cur"; fi;;
show)
	echo "LEASE $now $cur";;
esac
`

// remoteLease is a lease as the host records it.
type remoteLease struct {
	ID      string
	Expires int64 // the host's clock
	Owner   inventory.Owner
}

// leaseAnswer is what the host said to a lease operation.
type leaseAnswer struct {
	Status string       // TAKEN, BUSY, RENEWED, LOST, RELEASED, NOTOURS, LEASE
	Now    int64        // the host's clock
	Cur    *remoteLease // the lease found, when the answer carries it
}

// remoteOp runs a lease operation on the host of addr; a lease it writes
// names this process, of run, as its owner.
func (p *Provider) remoteOp(ctx context.Context, addr, op, id, replace, run string) (leaseAnswer, error) {
	owner, _ := json.Marshal(inventory.CurrentOwner(run))
	ttl := int64((p.ttl + time.Second - 1) / time.Second)
	cmd := "sh -c " + hostkit.ShellQuote(leaseScript) + " lease " + strings.Join([]string{
		op, hostkit.ShellQuote(id), strconv.FormatInt(ttl, 10), hostkit.ShellQuote(cmp.Or(replace, "-")), hostkit.ShellQuote(string(owner)),
	}, " ")
	h := p.conn(addr)
	ctx, cancel := context.WithTimeout(ctx, p.opTimeout())
	defer cancel()
	res, err := h.Execute(ctx, cmd)
	if err != nil {
		return leaseAnswer{}, fmt.Errorf("ssh: lease of %s on the host: %w", addr, err)
	}
	line := strings.TrimSpace(res.Stdout)
	status, rest, _ := strings.Cut(line, " ")
	if status == "ERR" || res.Status != 0 || status == "" {
		msg := strings.TrimSpace(rest + " " + res.Stderr)
		return leaseAnswer{}, fmt.Errorf("ssh: lease of %s on the host: %s (status %d)", addr, msg, res.Status)
	}
	a := leaseAnswer{Status: status}
	nowText, cur, _ := strings.Cut(rest, " ")
	a.Now, _ = strconv.ParseInt(nowText, 10, 64)
	if cur = strings.TrimSpace(cur); cur != "" {
		a.Cur = parseRemoteLease(cur)
	}
	return a, nil
}

// parseRemoteLease reads "ID EXPIRY OWNER-JSON"; a line it cannot read is a
// lease of unknown owner.
func parseRemoteLease(line string) *remoteLease {
	id, rest, _ := strings.Cut(line, " ")
	exp, owner, _ := strings.Cut(rest, " ")
	l := &remoteLease{ID: id}
	l.Expires, _ = strconv.ParseInt(exp, 10, 64)
	_ = json.Unmarshal([]byte(owner), &l.Owner)
	return l
}

// takeRemote takes addr's lease on the host for id. It reports false, with
// the holder, when a live holder (or one not provably dead, on another
// machine, whose lease has not expired) has it.
func (p *Provider) takeRemote(ctx context.Context, addr, id, run string) (bool, *remoteLease, error) {
	a, err := p.remoteOp(ctx, addr, "take", id, "", run)
	if err != nil || a.Status == "TAKEN" {
		return err == nil, nil, err
	}
	if a.Status != "BUSY" || a.Cur == nil {
		return false, nil, fmt.Errorf("ssh: lease of %s on the host: unexpected answer %q", addr, a.Status)
	}
	if !a.Cur.Owner.Dead() {
		return false, a.Cur, nil
	}
	// Its holder ran on this machine and is gone: take it over, unless
	// someone else did meanwhile.
	a, err = p.remoteOp(ctx, addr, "take", id, a.Cur.ID, run)
	if err != nil || a.Status == "TAKEN" {
		return err == nil, nil, err
	}
	return false, a.Cur, nil
}

// releaseRemote gives addr's lease on the host back if id holds it.
func (p *Provider) releaseRemote(ctx context.Context, addr, id string) error {
	p.stopRenewing(addr, id)
	_, err := p.remoteOp(ctx, addr, "release", id, "", "")
	return err
}

// renew keeps addr's lease for id until stop is closed or the lease is
// lost (released by a check-in elsewhere).
func (p *Provider) renew(addr, id, run string, stop <-chan struct{}) {
	every := p.ttl / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		// Stopping (a check-in, Close) cuts a renewal under way short; a
		// slow one may take until the lease would lapse.
		ctx, cancel := context.WithTimeout(context.Background(), p.ttl)
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		a, err := p.remoteOp(ctx, addr, "renew", id, "", run)
		cancel()
		select {
		case <-stop:
			return
		default:
		}
		switch {
		case err != nil:
			p.log.Warn("ssh: lease not renewed; it lapses if this goes on", "address", addr, "id", id, "ttl", p.ttl, "err", err)
		case a.Status == "LOST":
			p.log.Debug("ssh: lease no longer held; not renewed", "address", addr, "id", id)
			p.stopRenewing(addr, id)
			return
		}
	}
}

// startRenewing renews addr's lease for id in the background.
func (p *Provider) startRenewing(addr, id, run string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if b, ok := p.beats[addr]; ok {
		close(b.stop)
	}
	stop := make(chan struct{})
	p.beats[addr] = beat{id: id, stop: stop}
	p.wg.Go(func() { p.renew(addr, id, run, stop) })
}

// stopRenewing stops the renewal of addr's lease for id, if it runs.
func (p *Provider) stopRenewing(addr, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b, ok := p.beats[addr]; ok && b.id == id {
		close(b.stop)
		delete(p.beats, addr)
	}
}

// beat is the renewal of one lease.
type beat struct {
	id   string
	stop chan struct{}
}

// conn is the provider's own connection to the host of addr, for leases.
func (p *Provider) conn(addr string) *hostkit.Host {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h, ok := p.conns[addr]; ok {
		return h
	}
	rec := p.record(addr, "")
	cfg, err := p.hostConfig(rec)
	if err != nil {
		cfg = hostkit.Config{}
	}
	h := hostkit.New(rec.Hostname, cfg)
	h.Name = addr
	p.conns[addr] = h
	return h
}

// opTimeout bounds one lease operation: a dial and one short command.
func (p *Provider) opTimeout() time.Duration {
	return max(p.connect, 10*time.Second) + 15*time.Second
}

// closeRemote stops renewing and closes the lease connections.
func (p *Provider) closeRemote() error {
	p.mu.Lock()
	p.closed = true
	for addr, b := range p.beats {
		close(b.stop)
		delete(p.beats, addr)
	}
	conns := p.conns
	p.conns = map[string]*hostkit.Host{}
	p.mu.Unlock()
	p.wg.Wait()
	var errs []error
	for _, h := range conns {
		errs = append(errs, h.Close())
	}
	return errors.Join(errs...)
}
