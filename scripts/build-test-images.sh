#!/usr/bin/env bash
# Build the container images the tests use, from Debian packages only (no
# registry is needed or contacted):
#
#   brokertest/debian-sshd:12  debootstrap minbase bookworm + openssh-server;
#                              an ed25519 host key made at build time (as
#                              `RUN ssh-keygen -A` in a Dockerfile would; made
#                              at each start it cost ~30 ms of it); CMD runs
#                              sshd, without PAM.
#   brokertest/busybox:1       /bin/busybox (busybox-static) and its applet
#                              symlinks; no sshd (the engine-exec path).
#
# Usage: build-test-images.sh [--docker] [--podman] [--force]
#   default: build into docker; also load into podman when podman is installed.
#   --podman   load the images into podman (from `docker save`); with
#              PODMAN_HOST or CONTAINER_HOST=unix://... it uses that service
#              via `podman --url`.
#   --force    rebuild even when a tag exists.
#
# The Debian mirror is read from this machine's apt sources at run time
# (deb822 *.sources URIs: lines, or sources.list deb lines), so no hostname is
# written in the repository. Idempotent: existing tags are kept.
set -euo pipefail

DEBIAN_IMAGE=brokertest/debian-sshd:12
# Bump when the Debian image's recipe changes: an image with another recipe
# label is rebuilt, not kept.
DEBIAN_RECIPE=5
BUSYBOX_IMAGE=brokertest/busybox:1
SUITE=bookworm

want_docker=1
want_podman=auto
force=0
for a in "$@"; do
	case "$a" in
	--docker) want_docker=1 ;;
	--podman) want_podman=1 ;;
	--no-podman) want_podman=0 ;;
	--force) force=1 ;;
	-h | --help)
		sed -n '2,20p' "$0"
		exit 0
		;;
	*)
		echo "build-test-images: unknown argument $a" >&2
		exit 2
		;;
	esac
done

die() {
	echo "build-test-images: $*" >&2
	exit 1
}
log() { echo "build-test-images: $*" >&2; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"

work=$(mktemp -d /tmp/brokertest-images.XXXXXX)
cleanup() { rm -rf --one-file-system "$work"; }
trap cleanup EXIT

# debian_mirror prints the first Debian archive URI of the apt sources (not the
# security archive).
debian_mirror() {
	local f uri=""
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		# deb822: stanzas separated by blank lines; take URIs of a stanza whose
		# Suites include the plain suite name.
		uri=$(awk -v suite="$SUITE" '
			BEGIN { RS=""; FS="\n" }
			{
				u=""; ok=0; deb=0
				for (i=1; i<=NF; i++) {
					if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); u=a[2] }
					if ($i ~ /^Types:/ && $i ~ /(^|[ \t])deb([ \t]|$)/) deb=1
					if ($i ~ /^Suites:/) { n=split($i, s, /[ \t]+/); for (j=2; j<=n; j++) if (s[j]==suite) ok=1 }
				}
				if (u != "" && ok && deb) { print u; exit }
			}' "$f")
		[ -n "$uri" ] && break
	done
	if [ -z "$uri" ]; then
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[ -r "$f" ] || continue
			uri=$(awk -v suite="$SUITE" '
				$1 == "deb" {
					i = 2
					if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
					if ($(i+1) == suite) { print $i; exit }
				}' "$f")
			[ -n "$uri" ] && break
		done
	fi
	[ -n "$uri" ] || die "no Debian $SUITE mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
	echo "$uri"
}

have_docker_image() { docker image inspect "$1" >/dev/null 2>&1; }

# have_recipe TAG RECIPE: the image exists and carries that recipe label.
have_recipe() {
	[ "$(docker image inspect --format '{{index .Config.Labels "io.hostbroker.recipe"}}' "$1" 2>/dev/null)" = "$2" ]
}

# docker_import TAG CHANGES... imports a rootfs tar from stdin as TAG and
# removes the image TAG named before (a rebuild), when nothing uses it.
docker_import() {
	local tag=$1 old
	shift
	old=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
	docker import "$@" - "$tag" >/dev/null
	if [ -n "$old" ] && [ "$old" != "$(docker image inspect --format '{{.Id}}' "$tag")" ]; then
		docker rmi "$old" >/dev/null 2>&1 || log "old $tag image $old still in use; left"
	fi
}

build_debian() {
	if [ "$force" = 0 ] && have_recipe "$DEBIAN_IMAGE" "$DEBIAN_RECIPE"; then
		log "$DEBIAN_IMAGE (recipe $DEBIAN_RECIPE) exists; skipping"
		return
	fi
	command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
	command -v ssh-keygen >/dev/null || die "ssh-keygen is not installed (apt-get install openssh-client)"
	local mirror root
	mirror=$(debian_mirror)
	root="$work/debian"
	log "debootstrap $SUITE from $mirror (minbase + openssh-server)"
	debootstrap --variant=minbase --include=openssh-server --exclude=ifupdown,isc-dhcp-client,isc-dhcp-common \
		"$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		{
			tail -n 30 "$work/debootstrap.log" >&2
			die "debootstrap failed (log above)"
		}

	# One ed25519 host key, made here: generating it at each start cost
	# ~30 ms of every checkout (a fresh container's first processes are
	# slow). Each machine that builds the image gets its own key.
	rm -f "$root"/etc/ssh/ssh_host_*
	ssh-keygen -q -t ed25519 -N '' -C brokertest -f "$root/etc/ssh/ssh_host_ed25519_key"
	install -d -m 0755 "$root/run/sshd"
	install -d -m 0700 "$root/root/.ssh"
	mkdir -p "$root/etc/ssh/sshd_config.d"
	cat >"$root/etc/ssh/sshd_config.d/brokertest.conf" <<'CONF'
# brokertest: root by key only; no DNS lookups and no PAM (a container
# has no use for its session modules, which cost ~10 ms per login); the
# host key made at build time.
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
UsePAM no
HostKey /etc/ssh/ssh_host_ed25519_key
CONF
	cat >"$root/usr/local/sbin/brokertest-sshd" <<'ENTRY'
#!/bin/sh
# brokertest entry: sshd in the foreground (and a host key first, if someone
# removed the image's).
# sshd is not PID 1: PID 1 ignores a SIGTERM it has no handler for, and
# sshd installs its own only after start-up, so a stop in those first
# milliseconds would wait out the engine's stop timeout. The shell forwards
# SIGTERM instead; to a child without a handler it is fatal, as it should.
pid=
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; exit 143' TERM INT
set -e
k=/etc/ssh/ssh_host_ed25519_key
[ -s "$k" ] || ssh-keygen -q -t ed25519 -N '' -C brokertest -f "$k"
[ -d /run/sshd ] || mkdir -m 0755 /run/sshd
/usr/sbin/sshd -D -e "$@" &
pid=$!
set +e
wait "$pid"
ENTRY
	chmod 0755 "$root/usr/local/sbin/brokertest-sshd"

	# Keep it small: no docs, man pages, locales, apt lists or caches.
	rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
		"$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
		"$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log "$root"/var/log/apt/* \
		"$root"/debootstrap
	# The image's apt sources name the mirror it was built from; that is this
	# machine's choice, not the repository's, so it stays out of the repo.

	log "importing $DEBIAN_IMAGE"
	tar -C "$root" --numeric-owner -c . |
		docker_import "$DEBIAN_IMAGE" \
			--change 'CMD ["/usr/local/sbin/brokertest-sshd"]' \
			--change 'EXPOSE 22' \
			--change "LABEL io.hostbroker.recipe=$DEBIAN_RECIPE" \
			--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 
	rm -rf --one-file-system "$root"
}

build_busybox() {
	if [ "$force" = 0 ] && have_docker_image "$BUSYBOX_IMAGE"; then
		log "$BUSYBOX_IMAGE exists; skipping"
		return
	fi
	local bb root
	bb=$(command -v busybox || true)
	[ -n "$bb" ] || die "busybox is not installed (apt-get install busybox-static)"
	# Only a static busybox runs in a scratch image.
	if ldd "$bb" >/dev/null 2>&1; then
		die "$bb is dynamically linked; install busybox-static"
	fi
	root="$work/busybox"
	mkdir -p "$root/bin" "$root/tmp" "$root/root" "$root/etc"
	chmod 1777 "$root/tmp"
	cp "$bb" "$root/bin/busybox"
	# Applet symlinks: list the applets and link each into /bin, as
	# `busybox --install -s` would inside the image.
	"$bb" --list | while read -r applet; do
		[ "$applet" = busybox ] && continue
		ln -sf busybox "$root/bin/$applet"
	done
	echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
	echo 'root:x:0:' >"$root/etc/group"
	log "importing $BUSYBOX_IMAGE"
	tar -C "$root" --numeric-owner -c . |
		docker_import "$BUSYBOX_IMAGE" \
			--change 'CMD ["/bin/sh"]' \
			--change 'ENV PATH=/bin' 
	rm -rf --one-file-system "$root"
}

# load_podman copies the docker images into podman's store (or the podman
# service at PODMAN_URL), skipping tags it already has with the same id.
load_podman() {
	command -v podman >/dev/null || die "podman is not installed"
	local pod=(podman)
	if [ -n "${PODMAN_URL:-}" ]; then
		pod=(podman --url "$PODMAN_URL")
	fi
	local img
	for img in "$DEBIAN_IMAGE" "$BUSYBOX_IMAGE"; do
		have_docker_image "$img" || die "podman: $img is not in docker; build it first"
		if [ "$force" = 0 ] && "${pod[@]}" image exists "$img" 2>/dev/null &&
			[ "$("${pod[@]}" image inspect --format '{{.Id}}' "$img")" = "$(docker image inspect --format '{{.Id}}' "$img" | sed 's/^sha256://')" ]; then
			log "podman: $img exists; skipping"
			continue
		fi
		log "podman: loading $img"
		local out old
		old=$("${pod[@]}" image inspect --format '{{.Id}}' "$img" 2>/dev/null || true)
		out=$(docker save "$img" | "${pod[@]}" load 2>&1) ||
			die "podman load of $img failed: $out"
		if [ -n "$old" ] && [ "$old" != "$("${pod[@]}" image inspect --format '{{.Id}}' "$img")" ]; then
			"${pod[@]}" rmi "$old" >/dev/null 2>&1 || log "podman: old $img image $old still in use; left"
		fi
	done
}

if [ "$want_docker" = 1 ]; then
	command -v docker >/dev/null || die "docker CLI is not installed"
	docker info >/dev/null 2>&1 || die "docker engine does not answer (docker info)"
	build_debian
	build_busybox
fi
case "$want_podman" in
1) load_podman ;;
auto) if command -v podman >/dev/null; then (load_podman) || log "podman load failed; podman tests will skip"; fi ;;
esac
log "done"
