// Package podmantest starts a Podman API service for tests: `podman system
// service` on a private unix socket, with a generated containers.conf that
// makes Podman work on this kind of machine (runc, explicit ulimits no
// higher than the caller's hard limits), a registries.conf that lets it
// pull from registries on 127.0.0.1 over plain HTTP (internal/registrytest), and the test images copied in from
// Docker when Podman lacks them.
package podmantest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/moby/client"

	"github.com/hostbroker/broker/internal/registrytest"
)

// Service is a running podman API service.
type Service struct {
	URI  string // unix:///…/podman.sock
	dir  string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	once sync.Once
	done chan struct{}
}

// Start runs `podman system service` on a socket in a new temporary
// directory, waits until it answers, and makes sure it has images (copied
// from the Docker engine at DOCKER_HOST or the default socket with `docker
// save` semantics when missing). Stop it with Stop.
func Start(ctx context.Context, images ...string) (*Service, error) {
	podman, err := exec.LookPath("podman")
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return nil, fmt.Errorf("podman needs runc here: %w", err)
	}
	// Short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "podmantest")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(conf, []byte(containersConf()), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// Pulls from the tests' registries (internal/registrytest) on
	// 127.0.0.1 go over plain HTTP.
	regConf, err := registrytest.RegistriesConf(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	sock := filepath.Join(dir, "podman.sock")
	s := &Service{URI: "unix://" + sock, dir: dir, out: &bytes.Buffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(podman, "system", "service", "--time=0", s.URI)
	s.cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf, "CONTAINERS_REGISTRIES_CONF="+regConf)
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	// Its own process group, so Stop reaches what it started.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start podman system service: %w", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()

	cli, err := client.New(client.WithHost(s.URI))
	if err != nil {
		s.Stop()
		return nil, err
	}
	defer cli.Close()
	if err := s.waitReady(ctx, cli); err != nil {
		s.Stop()
		return nil, err
	}
	if err := loadImages(ctx, cli, images); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// containersConf is the configuration Podman needs here: runc (crun is
// not usable) and ulimits within the hard limits this process may grant
// (Podman's defaults exceed them and runc then fails with EPERM). A short
// exit_command_delay makes the conmon of each exec session exit seconds,
// not 5 minutes, after its command (so tests leave no processes behind).
func containersConf() string {
	nofile := uint64(65535)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Max < nofile {
		nofile = rl.Max
	}
	nproc := uint64(4096)
	if err := syscall.Getrlimit(6 /* RLIMIT_NPROC */, &rl); err == nil && rl.Max < nproc {
		nproc = rl.Max
	}
	return fmt.Sprintf("[engine]\nruntime = \"runc\"\nexit_command_delay = 5\n\n[containers]\ndefault_ulimits = [\"nofile=%d:%d\", \"nproc=%d:%d\"]\n",
		nofile, nofile, nproc, nproc)
}

func (s *Service) waitReady(ctx context.Context, cli *client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		_, last = cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true})
		pcancel()
		if last == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("podman system service exited: %s", bytes.TrimSpace(s.out.Bytes()))
		case <-ctx.Done():
			return fmt.Errorf("podman system service at %s did not answer: %w", s.URI, errors.Join(ctx.Err(), last))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// loadImages copies from the Docker engine the images podman lacks or holds
// in another version (a different image id).
func loadImages(ctx context.Context, pod *client.Client, images []string) error {
	docker, derr := client.New(client.FromEnv)
	if derr == nil {
		defer docker.Close()
	}
	var missing, stale []string
	for _, img := range images {
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		pi, err := pod.ImageInspect(ictx, img)
		cancel()
		if err != nil {
			missing = append(missing, img)
			continue
		}
		if derr != nil {
			continue
		}
		ictx, cancel = context.WithTimeout(ctx, 30*time.Second)
		di, err := docker.ImageInspect(ictx, img)
		cancel()
		if err == nil && strings.TrimPrefix(di.ID, "sha256:") != strings.TrimPrefix(pi.ID, "sha256:") {
			missing = append(missing, img)
			stale = append(stale, pi.ID)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if derr != nil {
		return fmt.Errorf("podman lacks %v and docker is unavailable: %w", missing, derr)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	saved, err := docker.ImageSave(ctx, missing)
	if err != nil {
		return fmt.Errorf("docker save %v (build them with scripts/build-test-images.sh): %w", missing, err)
	}
	defer saved.Close()
	loaded, err := pod.ImageLoad(ctx, saved)
	if err != nil {
		return fmt.Errorf("podman load %v: %w", missing, err)
	}
	defer loaded.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(loaded)
	for _, img := range missing {
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := pod.ImageInspect(ictx, img)
		cancel()
		if err != nil {
			return fmt.Errorf("podman load %s: image still missing after load (%s): %w", img, bytes.TrimSpace(out.Bytes()), err)
		}
	}
	// The versions replaced are untagged now; drop them unless in use.
	for _, id := range stale {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, _ = pod.ImageRemove(rctx, id, client.ImageRemoveOptions{})
		cancel()
	}
	return nil
}

// Stop stops the service and removes its directory. Safe to call twice.
func (s *Service) Stop() {
	s.once.Do(func() {
		if s.cmd.Process != nil {
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
				<-s.done
			}
		}
		os.RemoveAll(s.dir)
	})
}
