# The MCP server as an image: `docker run -i --rm IMAGE` serves MCP on stdio (config/clients/ has the client
# snippets). Slim (no compilers, no test tools, no pip), and the server runs as the unprivileged user `hanzo`,
# so the sandbox works as for any non-root user. Every layer needs the runtime flags that README "Containers"
# lists (our seccomp profile, no /proc masking, no AppArmor mount rule); without them the server still runs,
# and each result's `protection.missing` names what was not in force.
#
#   docker build -t hanzo-sandbox-mcp .
#   docker run -i --rm --security-opt seccomp=config/container-seccomp.json --security-opt apparmor=unconfined \
#       --security-opt systempaths=unconfined hanzo-sandbox-mcp
#
# Behind a TLS proxy that only the host trusts: `--secret id=hostca,src=CA-BUNDLE` (scripts/with-hostca).

FROM debian:bookworm-slim AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN --mount=type=secret,id=hostca --mount=type=bind,source=scripts/with-hostca,target=/usr/local/bin/with-hostca \
    with-hostca apt-get update \
    && with-hostca apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hanzo_sandbox_mcp ./hanzo_sandbox_mcp
# Byte code is compiled here, as root, so that the unprivileged server never needs a writable package dir.
RUN --mount=type=secret,id=hostca --mount=type=bind,source=scripts/with-hostca,target=/usr/local/bin/with-hostca \
    python3 -m venv /opt/hanzo-sandbox-mcp \
    && with-hostca /opt/hanzo-sandbox-mcp/bin/pip install --no-cache-dir --no-compile . \
    && /opt/hanzo-sandbox-mcp/bin/pip uninstall --yes pip setuptools \
    && python3 -m compileall -q /opt/hanzo-sandbox-mcp/lib

FROM debian:bookworm-slim
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PATH=/opt/hanzo-sandbox-mcp/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# python3 for the server and run_python (the venv links to /usr/bin/python3), libseccomp2 for the seccomp
# layer, ca-certificates for commands that use TLS with network = "full".
# hadolint ignore=DL3008
RUN --mount=type=secret,id=hostca --mount=type=bind,source=scripts/with-hostca,target=/usr/local/bin/with-hostca \
    with-hostca apt-get update \
    && with-hostca apt-get install -y --no-install-recommends ca-certificates libseccomp2 python3 \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin hanzo
COPY --from=build /opt/hanzo-sandbox-mcp /opt/hanzo-sandbox-mcp
USER hanzo
WORKDIR /home/hanzo
ENTRYPOINT ["hanzo-sandbox-mcp"]
CMD ["serve"]
