#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine, for the Kubernetes
# provider's tests (providers/kubernetes), from packages reachable here:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubelet built
# from k8s.io/kubernetes through a wrapper module; Debian's etcd-server,
# containerd (an instance of its own: the system one, Docker's, is never
# touched), runc and containernetworking-plugins.
#
# Usage: k8s-cluster.sh install|build|start|stop|status|env|import IMAGE...
#   install  apt-get the Debian packages the cluster needs
#   build    build the four binaries of $BROKER_K8S_VERSION once; they are
#            cached by version in $BROKER_K8S_CACHE (not the ~14 GB of Go
#            build cache), so later runs skip the build
#   start    build if needed, then start etcd, the control plane, a private
#            containerd and the kubelet; wait for the node to be Ready; import
#            the test images (brokertest/debian-sshd:12, brokertest/busybox:1)
#            from `docker save`; write the admin kubeconfig
#   stop     delete every pod, stop everything started, and undo what the
#            kubelet changed on the machine (sysctls, iptables chains,
#            /kubepods cgroups, directories it made, CNI results, the bridge)
#   status   say whether the cluster runs (exit 0) or not (exit 1)
#   env      print `export KUBECONFIG=...` for a running cluster
#   import   import docker images (by name) into the cluster's containerd
#
# Everything the cluster keeps lives in $BROKER_K8S_DIR. All traffic stays on
# loopback: every server listens on 127.0.0.1, and the API server reaches the
# kubelet by the node's host name, which must resolve to 127.0.0.1 (the
# script checks), never by the machine's network address.
#
# Environment:
#   BROKER_K8S_VERSION   Kubernetes version (default v1.34.4)
#   BROKER_K8S_CACHE     binary cache (default /var/cache/brokertest-k8s)
#   BROKER_K8S_DIR       the running cluster's state (default /var/lib/brokertest-k8s)
#   BROKER_K8S_API_PORT  the API server's port on 127.0.0.1 (default 16443)
#   BROKER_K8S_IMAGES    docker images imported at start (default the test images)
#   BROKER_K8S_GOCACHE   Go build cache of the build (default a temporary one,
#                        removed after it: several GB)
set -euo pipefail

VERSION=${BROKER_K8S_VERSION:-v1.34.4}
CACHE=${BROKER_K8S_CACHE:-/var/cache/brokertest-k8s}
STATE=${BROKER_K8S_DIR:-/var/lib/brokertest-k8s}
API_PORT=${BROKER_K8S_API_PORT:-16443}
IMAGES=${BROKER_K8S_IMAGES:-brokertest/debian-sshd:12 brokertest/busybox:1}
ETCD_PORT=${BROKER_K8S_ETCD_PORT:-12379}
BIN=$CACHE/$VERSION
PAUSE_IMAGE=docker.io/brokertest/k8s-pause:1
BRIDGE=brokertest0
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
CTRD_SOCK=$STATE/containerd/containerd.sock
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
# What the kubelet makes outside its root dir; removed at stop when it was
# not there at start.
MADE_DIRS=(/var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /var/run/netns)

die() {
	echo "k8s-cluster: $*" >&2
	exit 1
}
log() { echo "k8s-cluster: $*" >&2; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (containerd, kubelet, cgroups)"; }

# staging_version turns v1.34.4 into v0.34.4, the staging modules' version.
staging_version() { echo "v0.${VERSION#v1.}"; }

cmd_install() {
	need_root
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends \
		etcd-server containerd runc containernetworking-plugins iptables iproute2 \
		openssl curl jq ca-certificates >/dev/null
	# Where systemd runs, Debian starts the packaged etcd and containerd;
	# they are left alone: the cluster runs its own instances on other
	# ports and sockets.
}

have_binaries() {
	local b
	for b in "${BINARIES[@]}"; do
		[ -x "$BIN/$b" ] || return 1
	done
	[ -f "$BIN/pause.tar" ]
}

# cmd_build runs in a subshell: its work directory goes with it, however
# it ends.
cmd_build() (
	if have_binaries; then
		log "binaries of $VERSION cached in $BIN"
		return 0
	fi
	command -v go >/dev/null || die "go is not on PATH"
	local work staging gomod t0
	t0=$(date +%s)
	work=$(mktemp -d /tmp/brokertest-k8s-build.XXXXXX)
	# shellcheck disable=SC2064
	trap "rm -rf '$work'" EXIT
	staging=$(staging_version)
	# A build cache of its own, removed with the work dir: the binaries are
	# what later runs need, not the gigabytes of compiled packages.
	export GOCACHE=${BROKER_K8S_GOCACHE:-$work/gocache}
	log "building Kubernetes $VERSION (cold: several minutes)"
	gomod=$(cd "$work" && GOFLAGS= go mod download -json "k8s.io/kubernetes@$VERSION" | jq -r .GoMod)
	[ -f "$gomod" ] || die "k8s.io/kubernetes@$VERSION: no go.mod downloaded"
	# The wrapper module: k8s.io/kubernetes replaces its staging modules
	# with ./staging/src/..., which only works inside its own tree; here
	# each is required and replaced by itself at the published version.
	{
		echo "module brokertest.local/k8sbuild"
		echo
		grep -E '^(go|godebug) ' "$gomod"
		echo
		echo "require k8s.io/kubernetes $VERSION"
		grep -E '=> \./staging/src/' "$gomod" | awk '{print $1}' | grep -v '^k8s.io/sample-' |
			while read -r m; do
				echo "require $m $staging"
				echo "replace $m => $m $staging"
			done
	} >"$work/go.mod"
	local tmpbin=$work/bin b
	mkdir -p "$tmpbin"
	for b in "${BINARIES[@]}"; do
		log "go build $b"
		(cd "$work" && CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 19 go build -trimpath \
			-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$VERSION" | cut -d. -f2)" \
			-o "$tmpbin/$b" "k8s.io/kubernetes/cmd/$b")
	done
	build_pause "$work" "$tmpbin/pause.tar"
	mkdir -p "$BIN"
	for b in "${BINARIES[@]}" pause.tar; do
		mv "$tmpbin/$b" "$BIN/$b.tmp" && mv "$BIN/$b.tmp" "$BIN/$b"
	done
	log "built $VERSION in $(($(date +%s) - t0)) s, cached in $BIN"
)

# build_pause writes an OCI image archive of a pause program (the pod
# sandbox's process: waits for a signal, reaps orphans) to $2, built with Go
# so that no registry is needed.
build_pause() {
	local work=$1/pause out=$2
	mkdir -p "$work/src" "$work/root" "$work/oci/blobs/sha256"
	cat >"$work/src/main.go" <<'EOF'
// Command pause is a pod sandbox's process: it holds the pod's namespaces,
// reaps orphaned children and exits on SIGINT or SIGTERM.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
EOF
	printf 'module pause\n\ngo 1.22\n' >"$work/src/go.mod"
	(cd "$work/src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/root/pause" .)
	tar -C "$work/root" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$work/layer.tar" pause
	local layer diff cfg cfgd man mand
	diff=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
	gzip -n -c "$work/layer.tar" >"$work/layer.tgz"
	layer=$(sha256sum "$work/layer.tgz" | cut -d' ' -f1)
	mv "$work/layer.tgz" "$work/oci/blobs/sha256/$layer"
	cat >"$work/config.json" <<EOF
{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff"]}}
EOF
	cfg=$(sha256sum "$work/config.json" | cut -d' ' -f1)
	cfgd=$(stat -c %s "$work/config.json")
	mv "$work/config.json" "$work/oci/blobs/sha256/$cfg"
	cat >"$work/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$cfg","size":$cfgd},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer","size":$(stat -c %s "$work/oci/blobs/sha256/$layer")}]}
EOF
	man=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
	mand=$(stat -c %s "$work/manifest.json")
	mv "$work/manifest.json" "$work/oci/blobs/sha256/$man"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$work/oci/oci-layout"
	cat >"$work/oci/index.json" <<EOF
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$man","size":$mand,"annotations":{"io.containerd.image.name":"$PAUSE_IMAGE","org.opencontainers.image.ref.name":"1"}}]}
EOF
	tar -C "$work/oci" -cf "$out" oci-layout index.json blobs
}

# --- start -----------------------------------------------------------------

node_name() { hostname | tr '[:upper:]' '[:lower:]'; }

# cert NAME CN [O] [SAN]: a key and a certificate signed by the cluster's CA.
cert() {
	local name=$1 cn=$2 o=${3:-} san=${4:-} subj ext
	subj="/CN=$cn"
	[ -n "$o" ] && subj="/O=$o$subj"
	ext=$STATE/pki/$name.ext
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=serverAuth,clientAuth"
		[ -n "$san" ] && echo "subjectAltName=$san"
	} >"$ext"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$STATE/pki/$name.key" -out "$STATE/pki/$name.csr" -subj "$subj" 2>/dev/null
	openssl x509 -req -in "$STATE/pki/$name.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" \
		-CAcreateserial -days 30 -extfile "$ext" -out "$STATE/pki/$name.crt" 2>/dev/null
	rm -f "$STATE/pki/$name.csr" "$ext"
}

make_pki() {
	local node=$1 pki=$STATE/pki
	mkdir -p "$pki"
	chmod 700 "$pki"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
		-keyout "$pki/ca.key" -out "$pki/ca.crt" -subj "/CN=brokertest-k8s-ca" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	cert apiserver kube-apiserver "" \
		"DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
	cert admin brokertest-admin system:masters
	cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
	cert controller-manager system:kube-controller-manager
	cert scheduler system:kube-scheduler
	cert kubelet "system:node:$node" system:nodes
	cert kubelet-serving "$node" "" "DNS:$node,DNS:localhost,IP:127.0.0.1"
	openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$pki/sa.key"
	openssl ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

# kubeconfig FILE CERTNAME: a kubeconfig for the API server with that client
# certificate (embedded, so the file stands alone).
kubeconfig() {
	local file=$1 name=$2 pki=$STATE/pki
	cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: brokertest
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 "$pki/$name.crt")
    client-key-data: $(base64 -w0 "$pki/$name.key")
contexts:
- name: brokertest
  context: {cluster: brokertest, user: $name, namespace: default}
current-context: brokertest
EOF
	chmod 600 "$file"
}

# daemon NAME CMD...: start CMD in its own session, logging to
# $STATE/log/NAME.log; its pid goes to $STATE/run/NAME.pid.
daemon() {
	local name=$1
	shift
	setsid "$@" </dev/null >"$STATE/log/$name.log" 2>&1 &
	echo $! >"$STATE/run/$name.pid"
}

alive() {
	local f=$STATE/run/$1.pid
	[ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# wait_for WHAT SECONDS CMD...: run CMD until it succeeds.
wait_for() {
	local what=$1 secs=$2 i
	shift 2
	for ((i = 0; i < secs * 5; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	log "$what not ready after ${secs}s"
	return 1
}

api() {
	curl -sSf --max-time 10 --cacert "$STATE/pki/ca.crt" --cert "$STATE/pki/admin.crt" \
		--key "$STATE/pki/admin.key" "$@"
}

node_ready() {
	api "https://127.0.0.1:$API_PORT/api/v1/nodes/$(node_name)" |
		jq -e '.status.conditions[] | select(.type == "Ready") | .status == "True"' | grep -q true
}

# record_machine notes what the kubelet may change, so stop undoes only that.
record_machine() {
	local f=$STATE/machine s d
	: >"$f"
	for s in "${SYSCTLS[@]}"; do
		echo "sysctl $s $(sysctl -n "$s")" >>"$f"
	done
	for d in "${MADE_DIRS[@]}"; do
		[ -e "$d" ] && echo "dir $d" >>"$f"
	done
	for ipt in iptables ip6tables; do
		command -v $ipt >/dev/null || continue
		for t in filter nat mangle; do
			$ipt -t $t -S 2>/dev/null | awk -v ipt=$ipt -v t=$t '$1 == "-N" && $2 ~ /^KUBE-/ {print "chain", ipt, t, $2}' >>"$f"
		done
	done
}

cmd_start() {
	need_root
	local t0 node
	t0=$(date +%s.%N)
	if [ -f "$STATE/run/kubelet.pid" ] && alive kubelet && alive kube-apiserver; then
		log "already running (KUBECONFIG=$STATE/admin.kubeconfig)"
		return 0
	fi
	[ ! -e "$STATE" ] || die "$STATE exists but the cluster is not running: run '$0 stop' first"
	node=$(node_name)
	getent hosts "$node" | awk '{print $1}' | grep -qx '127.0.0.1' ||
		die "host name $node does not resolve to 127.0.0.1; the API server must reach the kubelet over loopback"
	for b in etcd containerd runc ctr openssl curl jq; do
		command -v $b >/dev/null || die "$b is not installed (run: $0 install)"
	done
	[ -x /usr/lib/cni/bridge ] || die "CNI plugins are not installed (run: $0 install)"
	cmd_build
	mkdir -p "$STATE"/{run,log,etcd,kubelet,kubelet-pki,pod-logs,cni/net.d,cni/ipam,containerd}
	chmod 700 "$STATE" "$STATE/etcd" "$STATE/kubelet-pki"
	record_machine
	make_pki "$node"
	kubeconfig "$STATE/admin.kubeconfig" admin
	kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
	kubeconfig "$STATE/scheduler.kubeconfig" scheduler
	kubeconfig "$STATE/kubelet.kubeconfig" kubelet

	daemon etcd etcd --name brokertest --data-dir "$STATE/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
		--initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
		--initial-cluster "brokertest=http://127.0.0.1:$((ETCD_PORT + 1))" --logger zap --log-level warn

	# containerd: its own config, socket, root and state.
	cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
plugin_dir = ""
disabled_plugins = []
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
	cat >"$STATE/cni/net.d/10-brokertest.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "brokertest",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
	daemon containerd containerd --config "$STATE/containerd/config.toml"

	wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
	local pki=$STATE/pki
	daemon kube-apiserver "$BIN/kube-apiserver" \
		--etcd-servers="http://127.0.0.1:$ETCD_PORT" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
		--service-cluster-ip-range="$SERVICE_CIDR" \
		--tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
		--client-ca-file="$pki/ca.crt" \
		--kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$pki/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types=Hostname \
		--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
		--service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--allow-privileged=false --profiling=false --endpoint-reconciler-type=none
	wait_for "containerd" 30 ctr -a "$CTRD_SOCK" version
	ctr -a "$CTRD_SOCK" -n k8s.io images import "$BIN/pause.tar" >/dev/null
	# /readyz answers an anonymous probe before the server is ready; only
	# the admin's request proves it.
	wait_for kube-apiserver 90 api "https://127.0.0.1:$API_PORT/readyz"
	daemon kube-controller-manager "$BIN/kube-controller-manager" \
		--kubeconfig="$STATE/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
		--authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
		--service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
		--use-service-account-credentials=true --controllers='*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle,-route'
	daemon kube-scheduler "$BIN/kube-scheduler" \
		--kubeconfig="$STATE/scheduler.kubeconfig" \
		--authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
		--authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port=0 --leader-elect=false

	cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://$CTRD_SOCK
podLogsDir: $STATE/pod-logs
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization:
  mode: Webhook
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
maxPods: 250
registerNode: true
EOF
	daemon kubelet "$BIN/kubelet" --config="$STATE/kubelet.yaml" \
		--kubeconfig="$STATE/kubelet.kubeconfig" --root-dir="$STATE/kubelet" \
		--cert-dir="$STATE/kubelet-pki" --hostname-override="$node" --v=1
	wait_for "node $node Ready" 120 node_ready
	cmd_import $IMAGES
	log "cluster up in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo 0)") s; KUBECONFIG=$STATE/admin.kubeconfig"
}

cmd_import() {
	local img
	[ -S "$CTRD_SOCK" ] || die "the cluster's containerd is not running"
	for img in "$@"; do
		if ! docker image inspect "$img" >/dev/null 2>&1; then
			log "docker has no image $img (scripts/build-test-images.sh builds the test images); not imported"
			continue
		fi
		docker save "$img" | ctr -a "$CTRD_SOCK" -n k8s.io images import - >/dev/null
	done
}

cmd_status() {
	if alive kube-apiserver && alive kubelet && node_ready; then
		echo "running: KUBECONFIG=$STATE/admin.kubeconfig"
		return 0
	fi
	echo "not running"
	return 1
}

cmd_env() {
	alive kube-apiserver || die "not running"
	echo "export KUBECONFIG=$STATE/admin.kubeconfig"
}

# --- stop ------------------------------------------------------------------

stop_daemon() {
	local name=$1 f=$STATE/run/$1.pid pid i
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

# delete_pods deletes every pod at once (grace 0) and waits until the
# kubelet has stopped their containers.
delete_pods() {
	local ns i
	alive kube-apiserver || return 0
	for ns in $(api "https://127.0.0.1:$API_PORT/api/v1/namespaces" 2>/dev/null | jq -r '.items[].metadata.name'); do
		api -X DELETE "https://127.0.0.1:$API_PORT/api/v1/namespaces/$ns/pods?gracePeriodSeconds=0" >/dev/null 2>&1 || true
	done
	alive kubelet || return 0
	for ((i = 0; i < 150; i++)); do
		[ -z "$(ctr -a "$CTRD_SOCK" -n k8s.io tasks ls -q 2>/dev/null)" ] && return 0
		sleep 0.2
	done
	log "pods' containers still running after 30 s; killing them"
}

# our_pids lists processes whose command line names our containerd socket
# or state dir (containerd's shims), then those in the /kubepods cgroups.
our_pids() {
	local f pid
	for f in /proc/[0-9]*/cmdline; do
		pid=${f#/proc/}
		pid=${pid%/cmdline}
		local cmd
		cmd=$(tr '\0' ' ' 2>/dev/null <"$f") || continue
		[[ $cmd == *"$STATE/"* ]] && echo "$pid"
	done
	find /sys/fs/cgroup/*/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null || true
}

restore_machine() {
	local f=$STATE/machine kind a b c d
	# cgroups: depth first.
	for d in /sys/fs/cgroup/*/kubepods; do
		[ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
	done
	[ -f "$f" ] || return 0
	while read -r kind a b; do
		[ "$kind" = sysctl ] && sysctl -qw "$a=$b" >/dev/null
	done <"$f"
	for ipt in iptables ip6tables; do
		command -v $ipt >/dev/null || continue
		for t in filter nat mangle; do
			local chains
			chains=$($ipt -t $t -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}')
			for c in $chains; do
				grep -qx "chain $ipt $t $c" "$f" && continue
				# Jumps to it from other chains, then the chain.
				$ipt -t $t -S 2>/dev/null | grep -E -- "-j $c( |\$)" | sed 's/^-A /-D /' |
					while read -r rule; do
						eval "$ipt -t $t $rule" 2>/dev/null || true
					done
				$ipt -t $t -F "$c" 2>/dev/null || true
			done
			for c in $chains; do
				grep -qx "chain $ipt $t $c" "$f" && continue
				$ipt -t $t -X "$c" 2>/dev/null || true
			done
		done
	done
	for d in "${MADE_DIRS[@]}"; do
		if ! grep -qx "dir $d" "$f" && [ -e "$d" ]; then
			umount_under "$d"
			rm -rf "$d"
		fi
	done
}

# umount_under unmounts every mount point under $1, deepest first.
umount_under() {
	awk -v p="$1" '$5 == p || index($5, p "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
		while read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		done
}

cmd_stop() {
	need_root
	[ -d "$STATE" ] || {
		log "not running"
		return 0
	}
	# Best effort from here: a step that fails must not keep the next
	# ones from undoing what they can.
	set +e +o pipefail
	delete_pods
	stop_daemon kubelet
	stop_daemon kube-scheduler
	stop_daemon kube-controller-manager
	# What the kubelet left running (a stop cut short): the sandboxes too.
	if [ -S "$CTRD_SOCK" ]; then
		local c
		for c in $(ctr -a "$CTRD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
			ctr -a "$CTRD_SOCK" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
		done
	fi
	stop_daemon containerd
	stop_daemon kube-apiserver
	stop_daemon etcd
	local pids
	pids=$(our_pids | sort -u | grep -vx "$$" || true)
	if [ -n "$pids" ]; then
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		sleep 0.5
	fi
	# Network namespaces containerd made for our sandboxes, when their pods
	# were not stopped: named cni-*, made since the cluster started.
	if [ -d /var/run/netns ] && [ -f "$STATE/machine" ]; then
		local n
		for n in $(find /var/run/netns -maxdepth 1 -name 'cni-*' -newer "$STATE/machine" 2>/dev/null); do
			umount "$n" 2>/dev/null || true
			rm -f "$n"
		done
	fi
	ip link del "$BRIDGE" 2>/dev/null || true
	# CNI results of our network, cached by libcni.
	rm -rf /var/lib/cni/results/brokertest-* 2>/dev/null || true
	umount_under "$STATE"
	restore_machine
	rm -rf "$STATE"
	log "stopped"
}

case "${1:-}" in
install) cmd_install ;;
build) cmd_build ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
import)
	shift
	cmd_import "$@"
	;;
*)
	sed -n '2,37p' "$0" >&2
	exit 2
	;;
esac
