#!/usr/bin/env bash
# make lab: the two-node failover demo in network namespaces (see README).
# Needs root and iproute2; builds nothing itself (make lab builds first).
set -euo pipefail
bin=${HAGENT_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/bin}
if [ "$(id -u)" != 0 ]; then echo "make lab needs root (network namespaces)" >&2; exit 1; fi
if ! command -v ip >/dev/null; then
	echo "installing iproute2" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi
exec "$bin/hagent-lab" "$@"
