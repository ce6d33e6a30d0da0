package broker

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/hostbroker/broker/hostkit"
)

// checkoutErrors is the error of a Count checkout: each distinct failure
// once, with the hosts it struck, rather than n near-identical errors.
// errors.Is and errors.As see every host's error.
type checkoutErrors struct {
	text string
	errs []error
}

func (e *checkoutErrors) Error() string   { return e.text }
func (e *checkoutErrors) Unwrap() []error { return e.errs }

// maxErrorLine bounds one line of a checkoutErrors: a provider's error can
// carry kilobytes (an engine's answer); the whole stays in the wrapped
// errors.
const maxErrorLine = 1024

// volatile matches what differs between otherwise equal errors of
// different hosts: ids, container names' suffixes, hashes.
var volatile = regexp.MustCompile(`[0-9a-f]{8,}`)

// joinCheckoutErrors groups errs (one per host, nil for a host that
// succeeded) by their text with ids left out, and adds extra (an error of
// the whole checkout) on a line of its own. It returns nil when there is
// no error.
func joinCheckoutErrors(errs []error, extra error) error {
	type group struct {
		first error
		hosts []int
	}
	var order []string
	groups := map[string]*group{}
	var all []error
	for i, err := range errs {
		if err == nil {
			continue
		}
		all = append(all, err)
		key := volatile.ReplaceAllString(err.Error(), "…")
		g := groups[key]
		if g == nil {
			g = &group{first: err}
			groups[key] = g
			order = append(order, key)
		}
		g.hosts = append(g.hosts, i+1)
	}
	if extra != nil {
		all = append(all, extra)
	}
	if len(all) == 0 {
		return nil
	}
	var lines []string
	for _, key := range order {
		g := groups[key]
		who := fmt.Sprintf("host %d of %d", g.hosts[0], len(errs))
		if len(g.hosts) > 1 {
			who = fmt.Sprintf("%d of %d hosts (%s)", len(g.hosts), len(errs), ranges(g.hosts))
		}
		lines = append(lines, who+": "+oneLine(g.first.Error()))
	}
	if extra != nil {
		lines = append(lines, oneLine(extra.Error()))
	}
	return &checkoutErrors{text: strings.Join(lines, "\n"), errs: all}
}

// oneLine puts a (possibly joined, multi-line) error text on one bounded
// line.
func oneLine(s string) string {
	s = strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
	if len(s) > maxErrorLine {
		s = fmt.Sprintf("%s… (%d bytes more)", s[:maxErrorLine], len(s)-maxErrorLine)
	}
	return s
}

// ranges writes sorted host numbers as "1-11, 13, 15-40".
func ranges(ns []int) string {
	var parts []string
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, fmt.Sprint(ns[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ns[i], ns[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// nonNil returns the hosts that are set.
func nonNil(hosts []*hostkit.Host) []*hostkit.Host {
	var out []*hostkit.Host
	for _, h := range hosts {
		if h != nil {
			out = append(out, h)
		}
	}
	return out
}
