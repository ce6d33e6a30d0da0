package kubernetes

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// How a pod is reached, recorded as the SSH block's transport and the
// data's "transport".
const (
	// TransportStream is SSH through the API server's exec stream: each
	// connection is an exec of the image's `sshd -i`.
	TransportStream = "kubernetes-stream"
	// TransportExec is no SSH: commands and files through exec itself.
	TransportExec = "kubernetes-exec"
)

// keepAlive is the default command: the pod runs until it is deleted,
// whatever the image's own command does, and ends at once on SIGTERM.
var keepAlive = []string{"/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"}

var validID = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// argNames are the arguments the provider takes.
var argNames = []string{ArgImage, ArgCommand, ArgEnv}

// podName is the name of host id's pod.
func (p *Provider) podName(id string) string {
	return p.settings.namePrefix + "-" + strings.ToLower(strings.ReplaceAll(id, "_", "-"))
}

// Checkout creates a pod, waits until it runs and finds how to reach it.
// A pod that does not come up is deleted.
func (p *Provider) Checkout(ctx context.Context, req providers.CheckoutRequest) (providers.CheckoutResult, error) {
	if !validID.MatchString(req.ID) {
		return providers.CheckoutResult{}, fmt.Errorf("kubernetes: checkout: id %q is not a broker id", req.ID)
	}
	pod, err := p.podSpec(req)
	if err != nil {
		return providers.CheckoutResult{}, err
	}
	if req.Progress != nil {
		req.Progress(map[string]any{"namespace": pod.Namespace, "pod": pod.Name})
	}
	if err := ctx.Err(); err != nil {
		return providers.CheckoutResult{}, fmt.Errorf("kubernetes: checkout: %w", err)
	}
	res, err := p.checkout(ctx, req.ID, pod)
	if err != nil {
		p.cleanup(req.ID, pod.Namespace, pod.Name)
		return providers.CheckoutResult{}, err
	}
	return res, nil
}

func (p *Provider) checkout(ctx context.Context, id string, pod *corev1.Pod) (providers.CheckoutResult, error) {
	cctx, cancel := p.callCtx(ctx)
	created, err := p.cs.CoreV1().Pods(pod.Namespace).Create(cctx, pod, metav1.CreateOptions{})
	cancel()
	if err != nil {
		return providers.CheckoutResult{}, fmt.Errorf("kubernetes: create pod %s in namespace %s (%s, %s): %w", pod.Name, pod.Namespace, p.settings.namespaceIsFrom, p.where, explain(err))
	}
	running, err := p.waitRunning(ctx, created)
	if err != nil {
		return providers.CheckoutResult{}, err
	}
	// How to reach it: sshd -i through exec when the image has sshd.
	var sshd, hostKey string
	for restarts := 0; ; restarts++ {
		sshd, hostKey, err = p.findSSHD(ctx, running.Namespace, running.Name)
		if err == nil || errors.Is(err, errNoSSHD) {
			break
		}
		// A command that ended just after it started is why exec failed:
		// the checkout fails with its exit, or, when the container is
		// restarted, waits for it to run again (CrashLoopBackOff ends that).
		now, ended := p.endedSince(ctx, running)
		if ended != nil {
			return providers.CheckoutResult{}, ended
		}
		if now == nil || restarts >= 10 {
			return providers.CheckoutResult{}, fmt.Errorf("kubernetes: pod %s: %w", running.Name, err)
		}
		if running, err = p.waitRunning(ctx, now); err != nil {
			return providers.CheckoutResult{}, err
		}
	}
	res := p.result(id, running)
	if errors.Is(err, errNoSSHD) {
		res.Data["transport"] = TransportExec
		return res, nil
	}
	keyFile, err := p.newClientKey(id)
	if err != nil {
		return providers.CheckoutResult{}, err
	}
	res.Data["transport"] = TransportStream
	res.Data["sshd"] = sshd
	pub, err := clientPub(keyFile)
	if err != nil {
		return providers.CheckoutResult{}, err
	}
	var proxy strings.Builder
	fmt.Fprintf(&proxy, "kubectl exec -i -n %s %s -c %s --", running.Namespace, running.Name, ContainerName)
	for _, a := range sshdCommand(sshd, pub) {
		proxy.WriteString(" " + hostkit.ShellQuote(a))
	}
	res.SSH = &inventory.SSH{User: p.settings.username, HostKey: hostKey, KeyFile: keyFile, Transport: TransportStream, ProxyCommand: proxy.String()}
	return res, nil
}

// podSpec is the pod of a request.
func (p *Provider) podSpec(req providers.CheckoutRequest) (*corev1.Pod, error) {
	for k := range req.Args {
		if !slices.Contains(argNames, k) {
			return nil, fmt.Errorf("kubernetes: unknown argument %q (takes %s)", k, strings.Join(argNames, ", "))
		}
	}
	image, _ := req.Args[ArgImage].(string)
	if strings.TrimSpace(image) == "" {
		return nil, fmt.Errorf("kubernetes: argument %s: want an image name, got %v", ArgImage, req.Args[ArgImage])
	}
	cmd := keepAlive
	if v, ok := req.Args[ArgCommand]; ok {
		var err error
		if cmd, err = command(v); err != nil {
			return nil, fmt.Errorf("kubernetes: argument %s: %w", ArgCommand, err)
		}
	}
	var env []corev1.EnvVar
	if v, ok := req.Args[ArgEnv]; ok {
		m, isMap := v.(map[string]any)
		if !isMap {
			return nil, fmt.Errorf("kubernetes: argument %s: want a map of variables, got %T %v", ArgEnv, v, v)
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			env = append(env, corev1.EnvVar{Name: k, Value: fmt.Sprint(m[k])})
		}
	}
	s := p.settings
	lbl, ann := p.metadata(req)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.podName(req.ID), Namespace: s.namespace, Labels: lbl, Annotations: ann},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: ContainerName, Image: image, Command: cmd, Env: env,
				ImagePullPolicy: s.pullPolicy, Resources: s.resources,
			}},
			RestartPolicy:                 s.restartPolicy,
			NodeSelector:                  s.nodeSelector,
			ServiceAccountName:            s.serviceAccount,
			AutomountServiceAccountToken:  ptr.To(s.serviceAccount != ""),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](1),
		},
	}
	for _, name := range s.pullSecrets {
		pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
	}
	return pod, nil
}

// command reads kubernetes_command: a string for /bin/sh -c, or a list.
func command(v any) ([]string, error) {
	switch x := v.(type) {
	case string:
		if strings.TrimSpace(x) == "" {
			return nil, errors.New("empty command")
		}
		return []string{"/bin/sh", "-c", x}, nil
	case []any:
		var out []string
		for _, a := range x {
			switch a.(type) {
			case string, int, int64, uint64, float64, bool:
				out = append(out, fmt.Sprint(a))
			default:
				return nil, fmt.Errorf("want strings in the list, got %T", a)
			}
		}
		if len(out) == 0 {
			return nil, errors.New("empty command")
		}
		return out, nil
	case []string:
		if len(x) == 0 {
			return nil, errors.New("empty command")
		}
		return slices.Clone(x), nil
	}
	return nil, fmt.Errorf("want a string or a list, got %T %v", v, v)
}

// metadata are the pod's labels (the id, user and instance, for
// selection; the settings' labels) and annotations (everything the
// request's labels say, the owner process, the arguments).
func (p *Provider) metadata(req providers.CheckoutRequest) (map[string]string, map[string]string) {
	ann := map[string]string{}
	for k, v := range req.Labels {
		ann[LabelPrefix+k] = v
	}
	user := req.Labels["user"]
	if user == "" {
		user = localUser()
		ann[LabelPrefix+"user"] = user
	}
	if run := req.Labels["run"]; run != "" {
		o := inventory.CurrentOwner(run)
		if ann[LabelPrefix+"machine"] == "" {
			ann[LabelPrefix+"machine"] = o.Machine
		}
		if ann[LabelPrefix+"machine"] == o.Machine {
			ann[LabelPrefix+"pid"] = strconv.Itoa(o.PID)
			if o.Started != 0 {
				ann[LabelPrefix+"started"] = strconv.FormatUint(o.Started, 10)
			}
			if o.BootID != "" {
				ann[LabelPrefix+"boot_id"] = o.BootID
			}
		}
	}
	ann[LabelPrefix+"instance"] = p.cfg.Instance
	if b, err := json.Marshal(req.Args); err == nil {
		ann[AnnotationArgs] = string(b)
	}
	lbl := maps.Clone(p.settings.labels)
	if lbl == nil {
		lbl = map[string]string{}
	}
	lbl[LabelManagedBy] = ManagedBy
	lbl[LabelID] = req.ID
	lbl[LabelUser] = labelValue(user)
	lbl[LabelInstance] = labelValue(p.cfg.Instance)
	return lbl, ann
}

// fatalWaiting are the container waiting reasons that end a checkout:
// the pod will not run without someone changing something.
var fatalWaiting = []string{"ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "CrashLoopBackOff",
	"CreateContainerConfigError", "CreateContainerError", "RunContainerError", "ErrImagePull"}

// waitRunning watches pod until its container runs; a pod that cannot run
// is an error saying why.
func (p *Provider) waitRunning(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	wctx, cancel := context.WithTimeout(ctx, p.settings.podWait)
	defer cancel()
	last := pod
	for {
		if done, err := p.podState(last); done || err != nil {
			return last, err
		}
		w, err := p.cs.CoreV1().Pods(pod.Namespace).Watch(wctx, metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", pod.Name).String(),
			ResourceVersion: last.ResourceVersion,
		})
		if err != nil {
			if wctx.Err() != nil {
				return nil, p.waitEnded(ctx, last)
			}
			return nil, fmt.Errorf("kubernetes: watch pod %s in namespace %s (%s): %w", pod.Name, pod.Namespace, p.where, explain(err))
		}
		again := false
		for !again {
			select {
			case <-wctx.Done():
				w.Stop()
				return nil, p.waitEnded(ctx, last)
			case ev, ok := <-w.ResultChan():
				if !ok {
					again = true // the server ended the watch: resume from the last version
					break
				}
				switch ev.Type {
				case watch.Deleted:
					w.Stop()
					return nil, fmt.Errorf("kubernetes: pod %s was deleted while starting", pod.Name)
				case watch.Error:
					w.Stop()
					// An expired version: read the pod again.
					cctx, c := p.callCtx(wctx)
					got, err := p.cs.CoreV1().Pods(pod.Namespace).Get(cctx, pod.Name, metav1.GetOptions{})
					c()
					if err != nil {
						return nil, fmt.Errorf("kubernetes: read pod %s: %w", pod.Name, explain(err))
					}
					last, again = got, true
				case watch.Added, watch.Modified:
					if np, ok := ev.Object.(*corev1.Pod); ok {
						last = np
						if done, err := p.podState(last); done || err != nil {
							w.Stop()
							return last, err
						}
					}
				}
			}
		}
	}
}

// endedSince reads pod again, for up to 3 s (the kubelet reports a
// container's end within about a second), and says why its container no
// longer runs (an error), or, when it ended and is to be restarted, gives
// the pod as read; nil, nil when it still seems to run.
func (p *Provider) endedSince(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for {
		now, err := p.cs.CoreV1().Pods(pod.Namespace).Get(cctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return nil, nil
		}
		if _, err := p.podState(now); err != nil {
			return nil, err
		}
		for _, cs := range now.Status.ContainerStatuses {
			if cs.State.Terminated != nil || cs.RestartCount > restartsOf(pod) {
				return now, nil // podState said: it will be restarted
			}
		}
		select {
		case <-cctx.Done():
			return nil, nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// restartsOf is the restart count of pod's container.
func restartsOf(pod *corev1.Pod) int32 {
	for _, cs := range pod.Status.ContainerStatuses {
		return cs.RestartCount
	}
	return 0
}

// waitEnded is the error of a wait that ended without a running pod.
func (p *Provider) waitEnded(ctx context.Context, last *corev1.Pod) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kubernetes: waiting for pod %s: %w", last.Name, err)
	}
	return fmt.Errorf("kubernetes: pod %s not running after %v (pod_wait): %s: %w", last.Name, p.settings.podWait, describe(last), context.DeadlineExceeded)
}

// podState says whether pod's container runs (true), or why it never will
// (an error), or neither (false, nil: wait).
func (p *Provider) podState(pod *corev1.Pod) (bool, error) {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return false, fmt.Errorf("kubernetes: pod %s is Unschedulable: %s", pod.Name, c.Message)
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && slices.Contains(fatalWaiting, w.Reason) {
			if w.Reason == "ErrImagePull" && !strings.Contains(w.Message, "not found") && !strings.Contains(w.Message, "unauthorized") {
				continue // may pass on the next try; ImagePullBackOff follows if not
			}
			msg := fmt.Sprintf("kubernetes: pod %s: container %s: %s: %s (image %s)", pod.Name, cs.Name, w.Reason, w.Message, cs.Image)
			if t := cs.LastTerminationState.Terminated; t != nil {
				msg += "; it last ended with " + terminated(t)
			}
			return false, errors.New(msg)
		}
		// A container that ended is restarted unless the policy is Never
		// (or OnFailure and it succeeded); CrashLoopBackOff says when
		// restarting is hopeless.
		if t := cs.State.Terminated; t != nil && (pod.Spec.RestartPolicy == corev1.RestartPolicyNever ||
			pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure && t.ExitCode == 0) {
			return false, fmt.Errorf("kubernetes: pod %s: container %s ended: %s", pod.Name, cs.Name, terminated(t))
		}
		if cs.State.Running != nil && pod.Status.Phase == corev1.PodRunning {
			return true, nil
		}
	}
	switch pod.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded:
		return false, fmt.Errorf("kubernetes: pod %s is %s: %s %s", pod.Name, pod.Status.Phase, pod.Status.Reason, pod.Status.Message)
	}
	return false, nil
}

func terminated(t *corev1.ContainerStateTerminated) string {
	s := fmt.Sprintf("exit code %d", t.ExitCode)
	if t.Reason != "" {
		s += ", " + t.Reason
	}
	if m := strings.TrimSpace(t.Message); m != "" {
		s += ": " + m
	}
	return s
}

// describe says where a pod stands, for a wait that timed out.
func describe(pod *corev1.Pod) string {
	parts := []string{"phase " + string(pod.Status.Phase)}
	for _, c := range pod.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			parts = append(parts, fmt.Sprintf("%s: %s", c.Type, c.Message))
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			parts = append(parts, fmt.Sprintf("container %s waiting: %s %s", cs.Name, w.Reason, w.Message))
		}
	}
	return strings.Join(parts, "; ")
}

// result is the record of a running pod (without its SSH block).
func (p *Provider) result(id string, pod *corev1.Pod) providers.CheckoutResult {
	data := map[string]any{
		"namespace": pod.Namespace,
		"pod":       pod.Name,
		"uid":       string(pod.UID),
		"node":      pod.Spec.NodeName,
		"cluster":   p.where,
	}
	if len(pod.Spec.Containers) > 0 {
		data["image"] = pod.Spec.Containers[0].Image
	}
	var args map[string]any
	if j := pod.Annotations[AnnotationArgs]; j != "" {
		_ = json.Unmarshal([]byte(j), &args)
	}
	return providers.CheckoutResult{Hostname: pod.Name, Name: pod.Name, IP: pod.Status.PodIP, Args: args, Data: data}
}

// newClientKey writes a new ed25519 key for host id under the broker
// directory and returns its path.
func (p *Provider) newClientKey(id string) (string, error) {
	dir := p.keyDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("kubernetes: key dir: %w", err)
	}
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("kubernetes: generate client key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(sk, "broker "+id)
	if err != nil {
		return "", fmt.Errorf("kubernetes: encode client key: %w", err)
	}
	path := filepath.Join(dir, "client_key")
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", fmt.Errorf("kubernetes: write client key: %w", err)
	}
	return path, nil
}

// clientPub is the public key of the client key at path, authorized_keys form.
func clientPub(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("kubernetes: client key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return "", fmt.Errorf("kubernetes: client key %s: %w", path, err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), nil
}

func (p *Provider) keyDir(id string) string { return filepath.Join(p.dir, "kubernetes", id) }

// cleanup deletes what a failed checkout made, on its own deadline (the
// checkout's may be what ended it).
func (p *Provider) cleanup(id, ns, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), p.settings.callTimeout)
	defer cancel()
	if err := p.deletePods(ctx, id, ns, name); err != nil {
		p.log.Warn("kubernetes: cleanup after failed checkout", "pod", name, "namespace", ns, "err", err)
	}
	_ = os.RemoveAll(p.keyDir(id))
}

// Checkin deletes the pod of rec (grace period 0) and waits until the API
// server no longer has it. A pod already gone is not an error. rec may hold
// only the broker id: the pod is found by its id label (and its name,
// which follows from the id).
func (p *Provider) Checkin(ctx context.Context, rec *inventory.Record) error {
	if rec == nil {
		return nil
	}
	id := rec.ID()
	if id != "" && !validID.MatchString(id) {
		return fmt.Errorf("kubernetes: checkin: record id %q is not a broker id", id)
	}
	ns, name := p.settings.namespace, ""
	if rec.Broker != nil {
		if s, ok := rec.Broker.Data["namespace"].(string); ok && s != "" {
			ns = s
		}
		if s, ok := rec.Broker.Data["pod"].(string); ok && s != "" {
			name = s
		}
	}
	switch {
	case name != "":
	case id != "":
		name = p.podName(id)
	default:
		name = rec.Name // a record of another tool
	}
	if name == "" {
		return nil
	}
	if err := p.deletePods(ctx, id, ns, name); err != nil {
		return fmt.Errorf("kubernetes: checkin %s: %w", firstNonEmpty(id, name), err)
	}
	if id != "" {
		if err := os.RemoveAll(p.keyDir(id)); err != nil {
			return fmt.Errorf("kubernetes: checkin %s: remove key dir: %w", id, err)
		}
	}
	return nil
}

// deletePods deletes pod name and every other pod labelled with id in ns,
// and waits until they are gone.
func (p *Provider) deletePods(ctx context.Context, id, ns, name string) error {
	if err := p.deletePod(ctx, ns, name); err != nil {
		return err
	}
	if id == "" {
		return nil
	}
	var list *corev1.PodList
	for delay := 100 * time.Millisecond; ; delay = min(delay*2, 2*time.Second) {
		cctx, cancel := p.callCtx(ctx)
		var err error
		list, err = p.cs.CoreV1().Pods(ns).List(cctx, metav1.ListOptions{LabelSelector: labels.Set{LabelID: id}.String()})
		cancel()
		if err == nil {
			break
		}
		if !transient(err) || ctx.Err() != nil {
			return fmt.Errorf("list pods labelled %s=%s in namespace %s (%s): %w", LabelID, id, ns, p.where, explain(err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("list pods labelled %s=%s in namespace %s (%s): %w", LabelID, id, ns, p.where, explain(err))
		case <-time.After(delay):
		}
	}
	for _, it := range list.Items {
		if it.Name != name {
			if err := p.deletePod(ctx, ns, it.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

// deletePod deletes one pod with grace period 0 and waits until it is gone.
func (p *Provider) deletePod(ctx context.Context, ns, name string) error {
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	pods := p.cs.CoreV1().Pods(ns)
	// A server that does not answer (down, restarting) is asked again
	// until the deadline: what is not deleted now is left for the reaper.
	for delay := 100 * time.Millisecond; ; delay = min(delay*2, 2*time.Second) {
		err := pods.Delete(cctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err == nil {
			break
		}
		if !transient(err) || cctx.Err() != nil {
			return fmt.Errorf("delete pod %s in namespace %s (%s): %w", name, ns, p.where, explain(err))
		}
		select {
		case <-cctx.Done():
			return fmt.Errorf("delete pod %s in namespace %s (%s): %w", name, ns, p.where, explain(err))
		case <-time.After(delay):
		}
	}
	for delay := 20 * time.Millisecond; ; delay = min(delay*2, 500*time.Millisecond) {
		_, err := pods.Get(cctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil && cctx.Err() == nil && !transient(err) {
			return fmt.Errorf("pod %s in namespace %s: deleted, but reading it again failed: %w", name, ns, explain(err))
		}
		select {
		case <-cctx.Done():
			return fmt.Errorf("pod %s in namespace %s: deleted, still there: %w", name, ns, cctx.Err())
		case <-time.After(delay):
		}
	}
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// transient reports whether err may pass if the call is made again: the
// server did not answer, or answered that it cannot now.
func transient(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err)
}

// explain adds what an API error means for the user (RBAC, namespace).
func explain(err error) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w (RBAC: the kubeconfig's user may not do this here; docs/kubernetes.md lists the Role a suite needs)", err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w (the cluster does not accept the kubeconfig's credentials)", err)
	case transient(err):
		return fmt.Errorf("%w (the API server does not answer)", err)
	}
	return err
}

// Sync lists the pods of user (default: this user) that this instance
// made, as inventory records.
func (p *Provider) Sync(ctx context.Context, user string) ([]*inventory.Record, error) {
	if user == "" {
		user = localUser()
	}
	cctx, cancel := p.callCtx(ctx)
	list, err := p.cs.CoreV1().Pods(p.settings.namespace).List(cctx, metav1.ListOptions{LabelSelector: labels.Set{
		LabelManagedBy: ManagedBy, LabelUser: labelValue(user), LabelInstance: labelValue(p.cfg.Instance)}.String()})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: sync: list pods in namespace %s (%s): %w", p.settings.namespace, p.where, explain(err))
	}
	var recs []*inventory.Record
	for i := range list.Items {
		pod := &list.Items[i]
		id := pod.Labels[LabelID]
		if id == "" || !validID.MatchString(id) || pod.DeletionTimestamp != nil {
			continue
		}
		res := p.result(id, pod)
		rec := res.Record(id)
		rec.Broker.CheckedOut = pod.CreationTimestamp.UTC().Truncate(time.Second)
		ownerFromAnnotations(rec.Broker, pod.Annotations)
		rec.Broker.Data["transport"] = TransportExec
		if key := filepath.Join(p.keyDir(id), "client_key"); fileExists(key) {
			if sshd, hostKey, err := p.findSSHD(ctx, pod.Namespace, pod.Name); err == nil {
				rec.Broker.Data["transport"], rec.Broker.Data["sshd"] = TransportStream, sshd
				rec.Broker.SSH = &inventory.SSH{User: p.settings.username, HostKey: hostKey, KeyFile: key, Transport: TransportStream}
			}
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// ownerFromAnnotations fills a synced record's owner from the pod's
// annotations, so that `brokertest cleanup --stale` can judge it.
func ownerFromAnnotations(m *inventory.Meta, ann map[string]string) {
	run := ann[LabelPrefix+"run"]
	if run == "" {
		return
	}
	m.State = inventory.StateReady
	m.Test = ann[LabelPrefix+"test"]
	m.Owner = inventory.Owner{Run: run, Machine: ann[LabelPrefix+"machine"], BootID: ann[LabelPrefix+"boot_id"]}
	if pid, err := strconv.Atoi(ann[LabelPrefix+"pid"]); err == nil && pid > 0 {
		m.Owner.PID = pid
	}
	if st, err := strconv.ParseUint(ann[LabelPrefix+"started"], 10, 64); err == nil {
		m.Owner.Started = st
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Connect builds the host of rec: SSH through exec when the record has
// an SSH block, else exec itself.
func (p *Provider) Connect(_ context.Context, rec *inventory.Record) (*hostkit.Host, error) {
	if rec == nil {
		return nil, errors.New("kubernetes: connect: nil record")
	}
	ns, pod := p.podOf(rec)
	if rec.Broker != nil && rec.Broker.SSH != nil && rec.Broker.SSH.Transport == TransportStream {
		cfg, err := providers.ConfigFromRecord(rec)
		if err != nil {
			return nil, fmt.Errorf("kubernetes: connect %s: %w", rec.Name, err)
		}
		if t := p.cfg.SSH.ConnectTimeout; t > 0 {
			cfg.ConnectTimeout = t
		}
		if t := p.cfg.SSH.CommandTimeout; t > 0 {
			cfg.CommandTimeout = t
		}
		sshd, _ := rec.Broker.Data["sshd"].(string)
		if !strings.HasPrefix(sshd, "/") {
			sshd = "/usr/sbin/sshd"
		}
		cfg.Logger = p.log
		cfg.Dial = p.sshDialer(ns, pod, sshd, rec.Broker.SSH.KeyFile)
		cfg.DialOnly = true
		h := hostkit.New(rec.Hostname, cfg)
		h.Name, h.Via = rec.Name, TransportStream
		return h, nil
	}
	cfg := hostkit.Config{Logger: p.log, Transport: &transport{p: p, ns: ns, pod: pod}}
	if t := p.cfg.SSH.CommandTimeout; t > 0 {
		cfg.CommandTimeout = t
	}
	h := hostkit.New(rec.Hostname, cfg)
	h.Name, h.Via = rec.Name, TransportExec
	return h, nil
}

// podOf is the namespace and name of rec's pod.
func (p *Provider) podOf(rec *inventory.Record) (string, string) {
	ns, name := p.settings.namespace, rec.Name
	if rec.Broker != nil {
		if s, ok := rec.Broker.Data["namespace"].(string); ok && s != "" {
			ns = s
		}
		if s, ok := rec.Broker.Data["pod"].(string); ok && s != "" {
			name = s
		}
		if name == "" && rec.Broker.ID != "" {
			name = p.podName(rec.Broker.ID)
		}
	}
	return ns, name
}
