// Package codec reads and writes the inventory file shared with the
// Python broker: its records (Record, Meta, Owner, SSH), every value read
// as the Python broker's ruamel.yaml reads it and written so that ruamel.yaml
// and PyYAML read it back (resolve.go), with a fast reader for the plain
// block form, a general one on yaml.v3's parser for any other, and each
// record's bytes kept so that a write changes only the records it touches.
// Package inventory (the store) re-exports the record types.
package codec

import (
	"math/bits"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// Record is one host in the inventory. Known fields are typed; every other key
// (fields written by the Python broker or by providers) is kept in Extra and
// written back unchanged.
type Record struct {
	Hostname string         `yaml:"hostname" json:"hostname"`
	Name     string         `yaml:"name,omitempty" json:"name,omitempty"`
	IP       string         `yaml:"ip,omitempty" json:"ip,omitempty"`
	Provider string         `yaml:"_broker_provider,omitempty" json:"_broker_provider,omitempty"`
	Instance string         `yaml:"_broker_provider_instance,omitempty" json:"_broker_provider_instance,omitempty"`
	Args     map[string]any `yaml:"_broker_args,omitempty" json:"_broker_args,omitempty"`
	Facts    map[string]any `yaml:"_broker_facts,omitempty" json:"_broker_facts,omitempty"`

	// Broker is this project's own block: what is needed to rebuild the host
	// and to reap it. Records written by other tools have none.
	Broker *Meta `yaml:"_brokertest,omitempty" json:"_brokertest,omitempty"`

	// Extra holds every other key, so nothing in a foreign file is lost.
	Extra map[string]any `yaml:",inline" json:"-"`

	// nameNull records a foreign file's "name: null" (the Python broker's
	// host without a name), so it is written back as it was read.
	nameNull bool
	// nulls and empties note the fields (bit* of codec_encode.go) read
	// as null or as empty text, written back so while still empty.
	nulls, empties uint8
	// plains notes the fields read from a plain scalar that is not text
	// to the Python broker (name: 123, hostname: 10.5): written back
	// plain while they still read as such, so their type is kept.
	plains uint8
	// held is the text of the plains fields as read (by bits.TrailingZeros8
	// of the field's bit), allocated only for a record that has any: a
	// field is written plain again only while Go still holds that text, so
	// text a Go caller sets ("007" where the file held 7) is quoted.
	held *[5]string
	// plainKeys holds the places (keyPlace) of the keys read as something
	// other than text (null:, 1:), held as their text and written back
	// plain, as read, while still there.
	plainKeys map[string]bool
}

// record is Record without its YAML methods, for decoding into.
type record Record

// UnmarshalYAML decodes a record, noting a null name.
func (r *Record) UnmarshalYAML(n *yaml.Node) error {
	if err := n.Decode((*record)(r)); err != nil {
		return err
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, v := n.Content[i], n.Content[i+1]; k.Value == "name" && v.Tag == "!!null" {
			r.nameNull = true
		}
	}
	return nil
}

// recordOut is how a record is written: _broker_args always (the Python
// broker's inventory listing reads it from every host), _broker_facts
// whenever the record has it, even empty, and name null when it was read so.
type recordOut struct {
	Hostname string         `yaml:"hostname"`
	Name     *yaml.Node     `yaml:"name,omitempty"`
	IP       string         `yaml:"ip,omitempty"`
	Provider string         `yaml:"_broker_provider,omitempty"`
	Instance string         `yaml:"_broker_provider_instance,omitempty"`
	Args     map[string]any `yaml:"_broker_args"`
	Facts    any            `yaml:"_broker_facts,omitempty"`
	Broker   *Meta          `yaml:"_brokertest,omitempty"`
	Extra    map[string]any `yaml:",inline"`
}

// MarshalYAML writes the record so that the Python broker reads it, and a
// foreign record as it was read.
func (r Record) MarshalYAML() (any, error) {
	out := recordOut{
		Hostname: r.Hostname, IP: r.IP, Provider: r.Provider, Instance: r.Instance,
		Args: r.Args, Broker: r.Broker, Extra: r.Extra,
	}
	switch {
	case r.Name != "":
		out.Name = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: r.Name}
	case r.nameNull:
		out.Name = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
	}
	if out.Args == nil {
		out.Args = map[string]any{}
	}
	if r.Facts != nil {
		out.Facts = r.Facts
	}
	return out, nil
}

// States a record moves through.
const (
	StateCreating = "creating" // written before the provider is asked for a host
	StateReady    = "ready"    // checked out and in use by its owner
	StateFree     = "free"     // kept for reuse until KeepUntil; leasable
	StateLeased   = "leased"   // a kept host leased by a later run
	StateKept     = "kept"     // kept after a failure, for a person to inspect
	StateRemoving = "removing" // check-in under way
)

// Meta is the _brokertest block of a record.
type Meta struct {
	ID    string `yaml:"id" json:"id"`
	State string `yaml:"state,omitempty" json:"state,omitempty"`
	Owner Owner  `yaml:"owner" json:"owner"`
	Test  string `yaml:"test,omitempty" json:"test,omitempty"`
	// User is whose host it is: the local user who checked it out, or the
	// user a sync (Provider:user) found it for; "sync Provider:user"
	// replaces only the records of that user.
	User       string         `yaml:"user,omitempty" json:"user,omitempty"`
	CheckedOut time.Time      `yaml:"checked_out" json:"checked_out"`
	KeepUntil  *time.Time     `yaml:"keep_until" json:"keep_until"`
	RequestKey string         `yaml:"request_key,omitempty" json:"request_key,omitempty"`
	SSH        *SSH           `yaml:"ssh,omitempty" json:"ssh,omitempty"`
	Data       map[string]any `yaml:"data,omitempty" json:"data,omitempty"` // provider-specific, never secrets
}

// Owner identifies the run that checked a host out. A host whose owner is
// provably dead on this machine is stale.
type Owner struct {
	Run     string `yaml:"run" json:"run"`
	PID     int    `yaml:"pid" json:"pid"`
	Started uint64 `yaml:"started" json:"started"` // process start time, clock ticks since boot (/proc/PID/stat field 22)
	BootID  string `yaml:"boot_id" json:"boot_id"`
	Machine string `yaml:"machine" json:"machine"`
}

// SSH is how to reach a host over SSH. It holds no secret: a private key is
// referred to by path, passwords come from settings.
type SSH struct {
	Host     string `yaml:"host,omitempty" json:"host,omitempty"` // address to dial when not Hostname
	Port     int    `yaml:"port,omitempty" json:"port,omitempty"`
	User     string `yaml:"user,omitempty" json:"user,omitempty"`
	HostKey  string `yaml:"host_key,omitempty" json:"host_key,omitempty"` // authorized_keys form, pinned
	KeyFile  string `yaml:"key_file,omitempty" json:"key_file,omitempty"`
	Insecure bool   `yaml:"insecure,omitempty" json:"insecure,omitempty"` // host key not verified
	// Transport says how the provider reaches sshd when it is not by
	// dialing Host and Port: "engine-stream" (the Container provider's
	// `sshd -i` through the engine's exec stream; Host and Port, when
	// set, are a published port that also reaches it). Empty, or "tcp":
	// Host and Port.
	Transport string `yaml:"transport,omitempty" json:"transport,omitempty"`
	// ProxyCommand is a command whose stdin and stdout reach the host's
	// sshd, for OpenSSH's ProxyCommand (ssh -o ProxyCommand=…): how a
	// person reaches a host that has no address to dial. Informational:
	// providers dial by Transport.
	ProxyCommand string `yaml:"proxy_command,omitempty" json:"proxy_command,omitempty"`
}

// ID returns the record's _brokertest id, or "" for foreign records.
func (r *Record) ID() string {
	if r == nil || r.Broker == nil {
		return ""
	}
	return r.Broker.ID
}

// Same reports whether a and b describe the same host: by _brokertest id when
// either has one, else by name and hostname together. An empty hostname never
// matches, so unrelated hosts are never confused.
func Same(a, b *Record) bool {
	if a == nil || b == nil {
		return false
	}
	if a.ID() != "" || b.ID() != "" {
		return a.ID() == b.ID()
	}
	return a.Hostname != "" && a.Hostname == b.Hostname && a.Name == b.Name
}

// Map returns the record as the inventory file holds it: every key,
// foreign ones included, with _brokertest as a nested map.
func (r *Record) Map() map[string]any {
	m := make(map[string]any, len(r.Extra)+8)
	for k, v := range r.Extra {
		m[k] = v
	}
	// A field read as null or as '' is in the map so while still empty,
	// as it is written back.
	set := func(k, v string, bit uint8) {
		switch {
		case v != "" && r.heldPlain(bit, v):
			m[k] = v
			if tag, x := resolvePlain(v); tag != tagStr && tag != tagInvalid && tag != tagMerge {
				m[k] = x
			}
		case v != "":
			m[k] = v
		case r.nulls&bit != 0:
			m[k] = nil
		case r.empties&bit != 0:
			m[k] = ""
		}
	}
	m["hostname"] = r.Hostname
	set("hostname", r.Hostname, bitHostname)
	if r.Hostname == "" && r.nulls&bitHostname != 0 {
		m["hostname"] = nil
	}
	set("name", r.Name, bitName)
	if r.nameNull && r.Name == "" {
		m["name"] = nil
	}
	set("ip", r.IP, bitIP)
	set("_broker_provider", r.Provider, bitProvider)
	set("_broker_provider_instance", r.Instance, bitInstance)
	if r.Args != nil {
		m["_broker_args"] = r.Args
	} else if r.nulls&bitArgs != 0 {
		m["_broker_args"] = nil
	}
	if r.Facts == nil && r.nulls&bitFacts != 0 {
		m["_broker_facts"] = nil
	}
	if r.Facts != nil {
		m["_broker_facts"] = r.Facts
	}
	if r.Broker != nil {
		if meta, ok := r.Broker.Map(); ok {
			m["_brokertest"] = meta
		}
	}
	return m
}

// Label names a record in a message: its name and id, or what it has.
func Label(r *Record) string {
	switch {
	case r.Name != "" && r.ID() != "":
		return r.Name + " (" + r.ID() + ")"
	case r.Name != "":
		return r.Name
	case r.ID() != "":
		return r.ID()
	case r.Hostname != "":
		return r.Hostname
	}
	return strconv.Quote("")
}

// String names the record for people, in one line: its name and hostname,
// then provider (and instance), id and state when it has them, e.g.
// "local-3f2a9c vm1.example.com (Local, id 3f2a9c, ready)". It shows no
// arguments, facts or SSH settings, so a record printed with %v leaks
// nothing and shows no pointers.
func (r *Record) String() string {
	if r == nil {
		return "<nil>"
	}
	label := r.Name
	if r.Hostname != "" && r.Hostname != r.Name {
		if label != "" {
			label += " "
		}
		label += r.Hostname
	}
	if label == "" {
		label = "(unnamed host)"
	}
	details := ""
	add := func(s string) {
		if s == "" {
			return
		}
		if details != "" {
			details += ", "
		}
		details += s
	}
	provider := r.Provider
	if r.Instance != "" {
		provider += "::" + r.Instance
	}
	add(provider)
	if id := r.ID(); id != "" {
		add("id " + id)
	}
	if r.Broker != nil {
		add(r.Broker.State)
	}
	if details == "" {
		return label
	}
	return label + " (" + details + ")"
}

// heldPlain reports whether v, the text of the field of bit, is what the
// file held as a plain scalar that is not text (name: 123), unchanged.
func (r *Record) heldPlain(bit uint8, v string) bool {
	return r.plains&bit != 0 && r.held != nil && r.held[bits.TrailingZeros8(bit)] == v
}
