// Command stargz-grpc is the tests' stand-in for upstream's containerd-stargz-grpc: the stargz
// snapshotter served to containerd as a proxy snapshotter over a unix socket.
//
// Debian packages the snapshotter's Go source (golang-github-containerd-stargz-snapshotter-dev
// 0.12) but not the daemon, and upstream's service package does not build offline (its CRI
// keychain needs k8s.io/cri-api). This program wires the same pieces the daemon wires, from the
// packaged source only, and keeps the daemon's command line and configuration:
//
//	--address  unix socket to serve on    (default /run/containerd-stargz-grpc/containerd-stargz-grpc.sock)
//	--config   config.toml                (default /etc/containerd-stargz-grpc/config.toml)
//	--root     state directory            (default /var/lib/containerd-stargz-grpc)
//	--log-level
//
// config.toml has upstream's format: the filesystem keys at the top level (no_background_fetch,
// noprefetch, blob, directory_cache, fuse, ...) and [[resolver.host."HOST".mirrors]] entries
// (host, insecure, request_timeout_sec). Registry credentials come from a docker config.json,
// found the way docker finds it ($DOCKER_CONFIG/config.json, else ~/.docker/config.json), read
// again on every authentication like upstream's dockerconfig keychain.
//
// Layers are resolved from the labels containerd's CRI plugin passes when
// disable_snapshot_annotations = false (image reference, layer digest, the image's layers), or
// from the stargz labels that ctr-remote sets.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/snapshots/overlay/overlayutils"
	stargzfs "github.com/containerd/stargz-snapshotter/fs"
	fsconfig "github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/fs/layer"
	"github.com/containerd/stargz-snapshotter/fs/source"
	"github.com/containerd/stargz-snapshotter/snapshot"
	dockercliconfig "github.com/docker/cli/cli/config"
	rhttp "github.com/hashicorp/go-retryablehttp"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pelletier/go-toml"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
)

// The labels containerd's CRI plugin attaches to each layer snapshot it prepares.
const (
	criImageRefLabel    = "containerd.io/snapshot/cri.image-ref"
	criLayerDigestLabel = "containerd.io/snapshot/cri.layer-digest"
	criImageLayersLabel = "containerd.io/snapshot/cri.image-layers"
	defaultTimeoutSec   = 30
)

type mirrorConfig struct {
	Host              string `toml:"host"`
	Insecure          bool   `toml:"insecure"`
	RequestTimeoutSec int    `toml:"request_timeout_sec"`
}

type hostConfig struct {
	Mirrors []mirrorConfig `toml:"mirrors"`
}

type resolverConfig struct {
	Host map[string]hostConfig `toml:"host"`
}

type daemonConfig struct {
	fsconfig.Config
	Resolver resolverConfig `toml:"resolver"`
}

func main() {
	address := flag.String("address", "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock", "unix socket to serve on")
	configPath := flag.String("config", "/etc/containerd-stargz-grpc/config.toml", "path to config.toml")
	root := flag.String("root", "/var/lib/containerd-stargz-grpc", "state directory")
	logLevel := flag.String("log-level", "info", "log level")
	flag.Parse()

	level, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		fail("bad --log-level: %v", err)
	}
	logrus.SetLevel(level)
	ctx := log.WithLogger(context.Background(), log.L)

	var cfg daemonConfig
	if tree, err := toml.LoadFile(*configPath); err == nil {
		if err := tree.Unmarshal(&cfg); err != nil {
			fail("cannot parse %s: %v", *configPath, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		fail("cannot read %s: %v", *configPath, err)
	}

	hosts := registryHosts(cfg.Resolver)
	snapshotterRoot := filepath.Join(*root, "snapshotter")
	if err := os.MkdirAll(snapshotterRoot, 0700); err != nil {
		fail("cannot create %s: %v", snapshotterRoot, err)
	}
	opaque := layer.OverlayOpaqueTrusted
	if userxattr, err := overlayutils.NeedsUserXAttr(snapshotterRoot); err == nil && userxattr {
		opaque = layer.OverlayOpaqueUser
	}
	fs, err := stargzfs.NewFilesystem(filepath.Join(*root, "stargz"), cfg.Config,
		stargzfs.WithGetSources(firstSource(sourceFromCRILabels(hosts), source.FromDefaultLabels(hosts))),
		stargzfs.WithOverlayOpaqueType(opaque))
	if err != nil {
		fail("cannot configure the filesystem: %v", err)
	}
	snapshotter, err := snapshot.NewSnapshotter(ctx, snapshotterRoot, fs, snapshot.AsynchronousRemove)
	if err != nil {
		fail("cannot create the snapshotter: %v", err)
	}

	if err := os.MkdirAll(filepath.Dir(*address), 0700); err != nil {
		fail("cannot create the socket directory: %v", err)
	}
	if err := os.Remove(*address); err != nil && !errors.Is(err, os.ErrNotExist) {
		fail("cannot remove a stale socket: %v", err)
	}
	listener, err := net.Listen("unix", *address)
	if err != nil {
		fail("cannot listen on %s: %v", *address, err)
	}
	server := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(server, snapshotservice.FromSnapshotter(snapshotter))

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-signals
		server.Stop()
	}()
	log.G(ctx).WithField("address", *address).Info("serving the stargz snapshotter")
	if err := server.Serve(listener); err != nil {
		log.G(ctx).WithError(err).Error("serve")
	}
	// Like upstream, leave the FUSE mounts of existing snapshots to the next start (Close would
	// unmount them under running containers).
	log.G(ctx).Info("stopped")
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "stargz-grpc: "+format+"\n", args...)
	os.Exit(1)
}

// registryHosts answers, for an image reference, the endpoints to fetch it from: the configured
// mirrors first, then the registry itself. Plain HTTP for loopback hosts and `insecure` mirrors.
func registryHosts(cfg resolverConfig) source.RegistryHosts {
	return func(ref reference.Spec) ([]docker.RegistryHost, error) {
		name := ref.Hostname()
		var hosts []docker.RegistryHost
		for _, mirror := range append(append([]mirrorConfig{}, cfg.Host[name].Mirrors...), mirrorConfig{Host: name}) {
			client := rhttp.NewClient()
			client.Logger = nil
			httpClient := client.StandardClient()
			switch {
			case mirror.RequestTimeoutSec == 0:
				httpClient.Timeout = defaultTimeoutSec * time.Second
			case mirror.RequestTimeoutSec > 0:
				httpClient.Timeout = time.Duration(mirror.RequestTimeoutSec) * time.Second
			}
			host := docker.RegistryHost{
				Client:       httpClient,
				Host:         mirror.Host,
				Scheme:       "https",
				Path:         "/v2",
				Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
				Authorizer: docker.NewDockerAuthorizer(
					docker.WithAuthClient(httpClient),
					docker.WithAuthCreds(dockerConfigCredentials)),
			}
			if local, _ := docker.MatchLocalhost(host.Host); local || mirror.Insecure {
				host.Scheme = "http"
			}
			if host.Host == "docker.io" {
				host.Host = "registry-1.docker.io"
			}
			hosts = append(hosts, host)
		}
		return hosts, nil
	}
}

// dockerConfigCredentials reads the docker config.json on every call, so rotated credentials
// apply without a restart.
func dockerConfigCredentials(host string) (string, string, error) {
	file, err := dockercliconfig.Load("")
	if err != nil {
		logrus.WithError(err).Warn("cannot load the docker config file")
		return "", "", nil
	}
	if host == "docker.io" || host == "registry-1.docker.io" {
		host = "https://index.docker.io/v1/"
	}
	auth, err := file.GetAuthConfig(host)
	if err != nil {
		return "", "", err
	}
	if auth.IdentityToken != "" {
		return "", auth.IdentityToken, nil
	}
	return auth.Username, auth.Password, nil
}

// sourceFromCRILabels describes a layer from the labels the CRI plugin sets on its snapshots.
func sourceFromCRILabels(hosts source.RegistryHosts) source.GetSources {
	return func(labels map[string]string) ([]source.Source, error) {
		ref, ok := labels[criImageRefLabel]
		if !ok {
			return nil, fmt.Errorf("no %s label", criImageRefLabel)
		}
		spec, err := reference.Parse(ref)
		if err != nil {
			return nil, err
		}
		target, err := digest.Parse(labels[criLayerDigestLabel])
		if err != nil {
			return nil, fmt.Errorf("label %s: %w", criLayerDigestLabel, err)
		}
		layers := []ocispec.Descriptor{{Digest: target}}
		if list := labels[criImageLayersLabel]; list != "" {
			for _, item := range strings.Split(list, ",") {
				other, err := digest.Parse(item)
				if err != nil {
					return nil, fmt.Errorf("label %s: %w", criImageLayersLabel, err)
				}
				if other != target {
					layers = append(layers, ocispec.Descriptor{Digest: other})
				}
			}
		}
		return []source.Source{{
			Hosts:    hosts,
			Name:     spec,
			Target:   ocispec.Descriptor{Digest: target},
			Manifest: ocispec.Manifest{Layers: layers},
		}}, nil
	}
}

// firstSource uses the first getter that understands the labels.
func firstSource(getters ...source.GetSources) source.GetSources {
	return func(labels map[string]string) ([]source.Source, error) {
		var reasons []string
		for _, get := range getters {
			sources, err := get(labels)
			if err == nil {
				return sources, nil
			}
			reasons = append(reasons, err.Error())
		}
		return nil, errors.New(strings.Join(reasons, "; "))
	}
}
