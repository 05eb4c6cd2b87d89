# shellcheck shell=bash
# Container helpers shared by scripts/container-test and scripts/make-base-image (sourced after lib.sh).

# The fully qualified name of the Dockerfiles' `FROM debian:bookworm-slim`: a local import under this name
# is what podman and docker resolve the short name to.
HANZO_BASE_IMAGE=docker.io/library/debian:bookworm-slim
HANZO_SERVER_IMAGE=${HANZO_SERVER_IMAGE:-hanzo-sandbox-mcp}
HANZO_TEST_IMAGE=${HANZO_TEST_IMAGE:-hanzo-sandbox-mcp-test}

# The engine to use: $HANZO_CONTAINER_ENGINE, else podman, else docker.
container_engine() {
	local engine=${HANZO_CONTAINER_ENGINE:-}
	if [ -n "$engine" ]; then
		command -v "$engine" >/dev/null 2>&1 || die "HANZO_CONTAINER_ENGINE=$engine is not on PATH"
		printf '%s\n' "$engine"
		return 0
	fi
	for engine in podman docker; do
		if command -v "$engine" >/dev/null 2>&1; then
			printf '%s\n' "$engine"
			return 0
		fi
	done
	die "no container engine: install podman (apt-get install -y podman runc) or docker"
}

# ulimit_flag NAME LIMIT CAP: --ulimit NAME=N:N with N the smaller of this shell's hard limit and CAP.
# Podman's defaults (nofile 1048576) can exceed the host's hard limits, and then no container starts; runc
# also refused nproc 65536 here (EPERM) while the shell's hard limit was 96364, and took 16384.
ulimit_flag() {
	local limit=$2
	if [ "$limit" = unlimited ] || [ "$limit" -gt "$3" ]; then limit=$3; fi
	printf -- '--ulimit=%s=%s:%s\n' "$1" "$limit" "$limit"
}

# Prints, one per line, the flags every `run` and `build` needs on this machine.
engine_flags() {
	ulimit_flag nofile "$(ulimit -Hn)" 65536
	# RLIMIT_NPROC counts every process of the uid on the host, the container's root included.
	ulimit_flag nproc "$(ulimit -Hu)" 16384
	# crun refuses hybrid cgroup layouts (cgroup v1 controllers beside a cgroup2 mount); runc copes.
	if [ "$(basename "$1")" = podman ] && [ ! -e /sys/fs/cgroup/cgroup.controllers ] && command -v runc >/dev/null 2>&1; then
		printf -- '--runtime=runc\n'
	fi
}
