"""apparate's node agent: makes a node's containerd lazy-pull eStargz images, and undoes it.

Pure Python with no Django (like `converter/`). The suite's DaemonSet runs `python -m agent run`
on every labelled node (privileged, host PID namespace, the host's `/` mounted at `/host`). It
installs the stargz snapshotter as a systemd service on the host, points containerd's CRI
plugin at it, and reports whether the node is ready to lazy-pull, and why not.

The contract with the DaemonSet:

- mounted, read-only: `APPARATE_AGENT_CONFIG_DIR` (default `/etc/apparate/agent`) with
  `agent.json` (the registries, see agent.inputs) and `dockerconfig.json` (the pull Secret's
  `.dockerconfigjson`); the host's `/` at `APPARATE_HOST_ROOT` (default `/host`);
- environment: see agent.cli;
- status: `<host>/var/lib/apparate/agent/status.json` (see agent.status); `python -m agent status`
  exits 0 only when ready (an exec readinessProbe); the same status is reported on the agent's
  Node, annotation `apparate.io/agent-status` (agent.report), which the console reads;
- uninstall: the suite's ConfigMap says `mode: uninstall` (polled while running), or on SIGTERM
  the node lost the label or the suite is gone (agent.cluster decides; a pod restart or upgrade
  leaves the node lazy-pulling).

Modules: `node` (install / check / uninstall), `containerd_config` (TOML editing), `files` (the
files written on the host), `inputs`, `paths`, `services` (the host's service manager),
`containerd` (gRPC), `status`, `report` (the Node annotation, pure), `kubeapi` (the in-cluster
API client), `cluster` (reports, the uninstall request and the cleanup decision), `run`, `cli`.
"""
