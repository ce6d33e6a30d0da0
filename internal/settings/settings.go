// Package settings loads broker_settings.yaml from BROKER_DIRECTORY, applies
// BROKER_<Section>__<key> environment overrides and resolves provider
// instances and nicks. The format is the Python broker's, so its users'
// files load unchanged.
package settings

import "time"

// Settings is a loaded, validated settings tree.
type Settings struct {
	Dir  string         // BROKER_DIRECTORY (default ~/.broker), absolute
	File string         // the settings file path; it may not exist
	Data map[string]any // the whole tree after env overrides; unknown keys kept
	SSH  SSH            // from the top-level ssh: section (or the Python broker's top-level host_* keys)
}

// SSH holds the global SSH settings.
type SSH struct {
	Username       string
	Password       string // secret
	Port           int
	KeyFilename    string
	ConnectTimeout time.Duration
	CommandTimeout time.Duration
	Insecure       bool     // ssh.insecure_ignore_host_key
	KnownHosts     []string // ssh.known_hosts: file paths
}

// Options control Load.
type Options struct {
	Dir     string   // overrides BROKER_DIRECTORY
	File    string   // overrides Dir/broker_settings.yaml
	Environ []string // environment to read (os.Environ() when nil)
}

// Instance is one provider instance's merged settings.
type Instance struct {
	Provider string         // the section name as written in the file (e.g. "AnsibleTower")
	Name     string         // instance name; "" when the section has no instances
	Values   map[string]any // section keys overlaid by the instance's keys; no "instances" key
}

// Load reads and validates the settings. No settings file is fine.
func Load(opts Options) (*Settings, error) { panic("todo") }

// Instance returns the named instance of provider (section name matched
// case-insensitively); name "" picks the instance with default: true. A
// provider with no section gives an Instance with empty Values.
func (s *Settings) Instance(provider, name string) (Instance, error) { panic("todo") }

// Nick returns the arguments of a nick from the nicks: section.
func (s *Settings) Nick(name string) (map[string]any, error) { panic("todo") }
