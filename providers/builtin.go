package providers

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// ErrNotImported is returned (wrapped, along with ErrUnknown) for a
// provider of this module that the program does not import: a request
// named it, or used an argument that picks it.
var ErrNotImported = errors.New("provider not imported")

// builtin is a provider of this module, known here as plain data so that a
// request for one the program does not import can say which import it
// needs, without the core linking it (and, for Container, the Docker
// client). As database/sql never imports a driver, only Local is imported
// by the broker package.
type builtin struct {
	name    string   // the name it registers
	path    string   // its import path
	argKeys []string // its Driver's ArgKeys
}

var builtins = []builtin{
	{"AnsibleTower", "github.com/hostbroker/broker/providers/ansibletower", []string{"workflow", "job_template"}},
	{"Container", "github.com/hostbroker/broker/providers/container", []string{"container_host", "container_app"}},
	{"Kubernetes", "github.com/hostbroker/broker/providers/kubernetes", []string{"kubernetes_image"}},
	{"Local", "github.com/hostbroker/broker/providers/local", []string{"local"}},
	{"SSH", "github.com/hostbroker/broker/providers/ssh", []string{"ssh_host"}},
}

// builtinPrefix is the import path under which this module's providers live.
const builtinPrefix = "github.com/hostbroker/broker/providers/"

// checkBuiltin panics when a driver of this module disagrees with its entry
// in builtins, so that every test binary of a built-in provider catches a
// table left behind by a change.
func checkBuiltin(name string, d Driver) {
	t := reflect.TypeOf(d)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if !strings.HasPrefix(t.PkgPath(), builtinPrefix) {
		return
	}
	i := slices.IndexFunc(builtins, func(b builtin) bool { return b.name == name })
	if i < 0 || builtins[i].path != t.PkgPath() || !slices.Equal(builtins[i].argKeys, d.ArgKeys()) {
		panic(fmt.Sprintf("providers: %s (%s, argument keys %v) is not as listed in providers/builtin.go", name, t.PkgPath(), d.ArgKeys()))
	}
}

// unimportedLocked returns the built-in providers nobody registered.
func unimportedLocked() []builtin {
	var out []builtin
	for _, b := range builtins {
		if _, ok := drivers[strings.ToLower(b.name)]; !ok {
			out = append(out, b)
		}
	}
	return out
}

// unimportedNamedLocked returns the unregistered built-in named name
// (case-insensitively).
func unimportedNamedLocked(name string) (builtin, bool) {
	for _, b := range unimportedLocked() {
		if strings.EqualFold(b.name, name) {
			return b, true
		}
	}
	return builtin{}, false
}

// notImportedError says which import a request needs.
type notImportedError struct {
	b   builtin
	why string // what asked for it, e.g. `argument "workflow"`; "" when named
}

func (e *notImportedError) Error() string {
	what := fmt.Sprintf("provider %s", e.b.name)
	if e.why != "" {
		what = fmt.Sprintf("%s picks provider %s, which", e.why, e.b.name)
	}
	return fmt.Sprintf("%s is not imported: add import _ %q to the program (for tests, to a _test.go file)", what, e.b.path)
}

func (e *notImportedError) Is(target error) bool {
	return target == ErrNotImported || target == ErrUnknown
}
