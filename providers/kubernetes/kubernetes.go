// Package kubernetes is the Kubernetes provider: hosts are pods on a
// Kubernetes cluster, driven through the API server alone.
//
// Import it for its side effect (it is a module of its own, so that a suite
// that does not use it downloads no client-go):
//
//	import _ "github.com/hostbroker/broker/providers/kubernetes"
//
// A request picks the provider with the argument kubernetes_image, the
// pod's image. A checkout creates one pod (one container, named "host")
// labelled with its owner, waits until it runs, and reaches it through the
// API server's exec subresource (WebSocket where the server offers it,
// SPDY otherwise): nothing dials the pod's address. When the image has
// sshd, each SSH connection is an exec of `sshd -i` whose stdin and stdout
// carry it (TransportStream), with a per-host client key (under
// <BROKER_DIRECTORY>/kubernetes/<id>/) handed to sshd on its command line
// (AuthorizedKeysCommand: nothing is written in the pod) and sshd's host key
// pinned. Without sshd, commands and files go through exec itself
// (TransportExec): Execute, ReadFile, WriteFile, Upload, Download and CopyTo
// work; SFTP, FS and Shell need SSH.
//
// Arguments (a nick can carry them):
//
//	kubernetes_image     the pod's image (required)
//	kubernetes_command   the container's command, a string (run by /bin/sh -c)
//	                     or a list; default a shell that sleeps until it is
//	                     stopped, so that the pod stays up whatever the
//	                     image's own command does
//	kubernetes_env       environment variables, a map
//
// Settings (the Kubernetes: section or one of its instances):
//
//	kubeconfig          kubeconfig file (default: $KUBECONFIG, ~/.kube/config,
//	                    then the in-cluster service account)
//	context             the kubeconfig's context (default its current one)
//	namespace           where pods go (default the context's namespace, else
//	                    "default")
//	labels              extra pod labels, a map
//	resources           {requests: {cpu: 100m, memory: 64Mi}, limits: {…}}
//	node_selector       a map of node labels
//	service_account     the pods' service account; its token is mounted only
//	                    when one is named
//	image_pull_policy   Always, IfNotPresent or Never (default: Kubernetes's)
//	image_pull_secrets  a list of secret names
//	restart_policy      Never (default: a host whose command ends fails its
//	                    checkout at once, with its exit code), Always or OnFailure
//	host_username       SSH user in the pods (default root)
//	name_prefix         pod name prefix (default "broker")
//	timeout             seconds allowed to each API call (default 60)
//	pod_wait            seconds to wait for a pod to run (default 300)
//
// A pod that cannot run fails its checkout with the reason
// (ImagePullBackOff, ErrImageNeverPull, Unschedulable, CrashLoopBackOff, an
// exit code) and is deleted. Check-in deletes the pod (grace period 0) and
// waits until the API server no longer has it; a record holding only the
// broker id is enough, since every pod carries the id as a label. Sync
// lists the pods of a user by label; Describe, the arguments and the
// images of the nodes.
package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hostbroker/broker/providers"
)

// Name is the provider's registered name.
const Name = "Kubernetes"

// ArgImage is the request argument that picks this provider: the pod's image.
const ArgImage = "kubernetes_image"

// Other request arguments.
const (
	ArgCommand = "kubernetes_command"
	ArgEnv     = "kubernetes_env"
)

// Labels and annotations on every pod. Labels select (check-in, sync);
// annotations keep what a label value cannot hold (the arguments, the
// owner's test name).
const (
	LabelPrefix    = "hostbroker.io/"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "hostbroker"
	LabelID        = LabelPrefix + "id"
	LabelUser      = LabelPrefix + "user"
	LabelInstance  = LabelPrefix + "instance"
	// AnnotationArgs holds the checkout arguments as JSON.
	AnnotationArgs = LabelPrefix + "args"
)

// ContainerName is the name of the pod's one container.
const ContainerName = "host"

func init() { providers.Register(Name, Driver{}) }

// Driver opens Kubernetes providers.
type Driver struct{}

// ArgKeys lists kubernetes_image.
func (Driver) ArgKeys() []string { return []string{ArgImage} }

var settingKeys = []string{"kubeconfig", "context", "namespace", "labels", "resources", "node_selector",
	"service_account", "image_pull_policy", "image_pull_secrets", "restart_policy", "host_username",
	"name_prefix", "timeout", "pod_wait"}

// SettingKeys lists the keys the Kubernetes section and its instances take.
func (Driver) SettingKeys() []string { return slices.Clone(settingKeys) }

// CheckSettings checks the values the settings set, without reading the
// kubeconfig or reaching the cluster.
func (Driver) CheckSettings(cfg providers.Config) error {
	_, err := readSettings(cfg)
	return err
}

// Open reads the settings and the kubeconfig. It does not reach the cluster.
func (Driver) Open(_ context.Context, cfg providers.Config) (providers.Provider, error) {
	return Open(cfg)
}

// settings are an instance's settings, read.
type settings struct {
	kubeconfig      string
	context         string
	namespace       string
	labels          map[string]string
	resources       corev1.ResourceRequirements
	nodeSelector    map[string]string
	serviceAccount  string
	pullPolicy      corev1.PullPolicy
	pullSecrets     []string
	restartPolicy   corev1.RestartPolicy
	username        string
	namePrefix      string
	callTimeout     time.Duration
	podWait         time.Duration
	namespaceIsFrom string // where the namespace came from, for errors
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func readSettings(cfg providers.Config) (*settings, error) {
	m := cfg.Settings
	s := &settings{username: "root", namePrefix: "broker", callTimeout: 60 * time.Second, podWait: 300 * time.Second, restartPolicy: corev1.RestartPolicyNever}
	str := func(key string, dst *string) error {
		v, k, ok := providers.Setting(m, key)
		if !ok {
			return nil
		}
		x, isStr := v.(string)
		if !isStr || x == "" {
			return &providers.SettingError{Key: k, Err: fmt.Errorf("want a non-empty string, got %T %v", v, v)}
		}
		*dst = x
		return nil
	}
	for key, dst := range map[string]*string{"kubeconfig": &s.kubeconfig, "context": &s.context, "namespace": &s.namespace,
		"service_account": &s.serviceAccount, "host_username": &s.username, "name_prefix": &s.namePrefix} {
		if err := str(key, dst); err != nil {
			return nil, err
		}
	}
	if s.namespace != "" {
		s.namespaceIsFrom = "setting namespace"
		if !dnsLabel.MatchString(s.namespace) {
			_, k, _ := providers.Setting(m, "namespace")
			return nil, &providers.SettingError{Key: k, Err: fmt.Errorf("%q is not a namespace name (lower-case letters, digits, '-')", s.namespace)}
		}
	}
	if !dnsLabel.MatchString(s.namePrefix) || len(s.namePrefix) > 40 {
		_, k, _ := providers.Setting(m, "name_prefix")
		return nil, &providers.SettingError{Key: k, Err: fmt.Errorf("%q is not usable in a pod name (lower-case letters, digits, '-', at most 40)", s.namePrefix)}
	}
	s.kubeconfig = expandHome(s.kubeconfig)
	var err error
	if s.labels, err = stringMap(m, "labels"); err != nil {
		return nil, err
	}
	if s.nodeSelector, err = stringMap(m, "node_selector"); err != nil {
		return nil, err
	}
	if v, k, ok := providers.Setting(m, "resources"); ok {
		if s.resources, err = readResources(v); err != nil {
			return nil, &providers.SettingError{Key: k, Err: err}
		}
	}
	if v, k, ok := providers.Setting(m, "image_pull_policy"); ok {
		x, _ := v.(string)
		switch p := corev1.PullPolicy(x); p {
		case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
			s.pullPolicy = p
		default:
			return nil, &providers.SettingError{Key: k, Err: fmt.Errorf("want Always, IfNotPresent or Never, got %v", v)}
		}
	}
	if v, k, ok := providers.Setting(m, "restart_policy"); ok {
		x, _ := v.(string)
		switch p := corev1.RestartPolicy(x); p {
		case corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
			s.restartPolicy = p
		default:
			return nil, &providers.SettingError{Key: k, Err: fmt.Errorf("want Never, Always or OnFailure, got %v", v)}
		}
	}
	if v, k, ok := providers.Setting(m, "image_pull_secrets"); ok {
		list, isList := v.([]any)
		if !isList {
			return nil, &providers.SettingError{Key: k, Err: fmt.Errorf("want a list of secret names, got %T %v", v, v)}
		}
		for i, x := range list {
			name, _ := x.(string)
			if name == "" {
				return nil, &providers.SettingError{Key: fmt.Sprintf("%s[%d]", k, i), Err: fmt.Errorf("want a secret name, got %v", x)}
			}
			s.pullSecrets = append(s.pullSecrets, name)
		}
	}
	for key, dst := range map[string]*time.Duration{"timeout": &s.callTimeout, "pod_wait": &s.podWait} {
		if v, k, ok := providers.Setting(m, key); ok {
			d, err := providers.Seconds(v)
			if err != nil {
				return nil, &providers.SettingError{Key: k, Err: err}
			}
			*dst = d
		}
	}
	return s, nil
}

// stringMap reads a map of strings (numbers and booleans are written as
// YAML would).
func stringMap(m map[string]any, key string) (map[string]string, error) {
	v, k, ok := providers.Setting(m, key)
	if !ok {
		return nil, nil
	}
	mm, isMap := v.(map[string]any)
	if !isMap {
		return nil, &providers.SettingError{Key: k, Err: fmt.Errorf("want a map, got %T %v", v, v)}
	}
	out := make(map[string]string, len(mm))
	for mk, mv := range mm {
		switch x := mv.(type) {
		case string:
			out[mk] = x
		case int, int64, uint64, float64, bool:
			out[mk] = fmt.Sprint(x)
		default:
			return nil, &providers.SettingError{Key: k + "." + mk, Err: fmt.Errorf("want a string, got %T", mv)}
		}
	}
	return out, nil
}

// readResources reads {requests: {name: quantity}, limits: {…}}.
func readResources(v any) (corev1.ResourceRequirements, error) {
	var r corev1.ResourceRequirements
	m, ok := v.(map[string]any)
	if !ok {
		return r, fmt.Errorf("want a map with requests and limits, got %T %v", v, v)
	}
	for k, x := range m {
		var dst *corev1.ResourceList
		switch strings.ToLower(k) {
		case "requests":
			dst = &r.Requests
		case "limits":
			dst = &r.Limits
		default:
			return r, fmt.Errorf("key %q: want requests or limits", k)
		}
		q, ok := x.(map[string]any)
		if !ok {
			return r, fmt.Errorf("%s: want a map of quantities, got %T %v", k, x, x)
		}
		*dst = corev1.ResourceList{}
		for name, qv := range q {
			qty, err := resource.ParseQuantity(fmt.Sprint(qv))
			if err != nil {
				return r, fmt.Errorf("%s.%s: %q: %w", k, name, fmt.Sprint(qv), err)
			}
			(*dst)[corev1.ResourceName(name)] = qty
		}
	}
	return r, nil
}

func expandHome(name string) string {
	if home, err := os.UserHomeDir(); err == nil && strings.HasPrefix(name, "~/") {
		return filepath.Join(home, name[2:])
	}
	return name
}

// Provider makes pods for one configured instance.
type Provider struct {
	cfg      providers.Config
	settings *settings
	rest     *rest.Config // for API calls and exec
	http     *http.Client // the API calls' (exec streams dial their own)
	cs       k8s.Interface
	where    string // the cluster, for messages: "kubeconfig F context C" or "in-cluster"
	dir      string
	log      *slog.Logger
}

// Open reads cfg's settings and its kubeconfig (or the in-cluster
// configuration) and returns a provider. It does not reach the cluster: a
// cluster that does not answer fails the first checkout, naming it.
func Open(cfg providers.Config) (*Provider, error) {
	s, err := readSettings(cfg)
	if err != nil {
		return nil, err
	}
	rc, ns, where, err := loadConfig(s)
	if err != nil {
		return nil, err
	}
	if s.namespace == "" {
		s.namespace, s.namespaceIsFrom = ns, where
	}
	// Exec streams live as long as their host's connection: no client
	// timeout; every call has its own context deadline.
	rc.Timeout = 0
	rc.QPS, rc.Burst = 100, 200
	rc.UserAgent = "hostbroker-kubernetes-provider"
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client for %s: %w", where, err)
	}
	cs, err := k8s.NewForConfigAndClient(rc, hc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client for %s: %w", where, err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir := cfg.Dir
	if dir == "" {
		dir = os.TempDir()
	}
	return &Provider{cfg: cfg, settings: s, rest: rc, http: hc, cs: cs, where: where, dir: dir, log: logger}, nil
}

// loadConfig finds the cluster: the kubeconfig setting, else $KUBECONFIG,
// else ~/.kube/config, else the in-cluster service account. It returns the
// client configuration, the context's namespace ("default" when it names
// none) and a description of where it came from.
func loadConfig(s *settings) (*rest.Config, string, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	from := "$KUBECONFIG or ~/.kube/config"
	if s.kubeconfig != "" {
		if _, err := os.Stat(s.kubeconfig); err != nil {
			return nil, "", "", &providers.SettingError{Key: "kubeconfig", Err: fmt.Errorf("kubeconfig %s: %w", s.kubeconfig, err)}
		}
		rules = &clientcmd.ClientConfigLoadingRules{ExplicitPath: s.kubeconfig}
		from = s.kubeconfig
	} else if env := os.Getenv("KUBECONFIG"); env != "" {
		from = "$KUBECONFIG (" + env + ")"
	} else if home, err := os.UserHomeDir(); err == nil {
		from = filepath.Join(home, ".kube", "config")
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: s.context}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, "", "", fmt.Errorf("kubernetes: read kubeconfig %s: %w", from, err)
	}
	if len(raw.Contexts) == 0 && s.kubeconfig == "" {
		// No kubeconfig at all: a pod's own service account, if any.
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, "", "", fmt.Errorf("kubernetes: no cluster configured: no kubeconfig (%s: none found; setting kubeconfig unset) and not in a cluster (%v)", from, err)
		}
		ns := "default"
		if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil && len(b) > 0 {
			ns = strings.TrimSpace(string(b))
		}
		return rc, ns, "in-cluster service account", nil
	}
	name := s.context
	if name == "" {
		name = raw.CurrentContext
	}
	if _, ok := raw.Contexts[name]; !ok || name == "" {
		known := slices.Sorted(maps.Keys(raw.Contexts))
		if s.context != "" {
			return nil, "", "", &providers.SettingError{Key: "context", Err: fmt.Errorf("context %q is not in kubeconfig %s (it has: %s)", s.context, from, strings.Join(known, ", "))}
		}
		return nil, "", "", fmt.Errorf("kubernetes: kubeconfig %s has no current context; set the context setting (contexts: %s)", from, strings.Join(known, ", "))
	}
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, "", "", fmt.Errorf("kubernetes: kubeconfig %s context %s: %w", from, name, err)
	}
	ns, _, err := cc.Namespace()
	if err != nil || ns == "" {
		ns = "default"
	}
	return rc, ns, fmt.Sprintf("kubeconfig %s context %s", from, name), nil
}

// Close releases the instance's idle connections.
func (p *Provider) Close() error {
	p.http.CloseIdleConnections()
	return nil
}

// Namespace is where the instance makes its pods.
func (p *Provider) Namespace() string { return p.settings.namespace }

// Clientset is the instance's client, for tests and tools.
func (p *Provider) Clientset() k8s.Interface { return p.cs }

// callCtx bounds one API call by the timeout setting.
func (p *Provider) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, p.settings.callTimeout)
}

// localUser is who checks out, for the user label.
func localUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "broker"
}

var badLabelChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// labelValue makes s a valid label value (at most 63 characters of
// [A-Za-z0-9_.-], alphanumeric at both ends).
func labelValue(s string) string {
	s = badLabelChars.ReplaceAllString(s, "_")
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.Trim(s, "_.-")
}

var errNoSSHD = errors.New("the image has no sshd")

// Describe gives the arguments the provider takes, where its pods go, and
// the images the cluster's nodes hold (when the kubeconfig's user may list
// nodes; the Role docs/kubernetes.md gives does not need to).
func (p *Provider) Describe(ctx context.Context, _ string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "Kubernetes: pods in namespace %s (%s)\n", p.settings.namespace, p.where)
	fmt.Fprintf(&b, "arguments: %s (the image, required), %s (string or list), %s (map)\n", ArgImage, ArgCommand, ArgEnv)
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	nodes, err := p.cs.CoreV1().Nodes().List(cctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(&b, "nodes: not readable (%v)\n", err)
		return b.String(), nil
	}
	for _, n := range nodes.Items {
		var names []string
		for _, im := range n.Status.Images {
			names = append(names, im.Names...)
		}
		slices.Sort(names)
		fmt.Fprintf(&b, "node %s images: %s\n", n.Name, strings.Join(names, ", "))
	}
	return b.String(), nil
}
