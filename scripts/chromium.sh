#!/bin/sh
# chromium.sh prints the path of a Chromium the dashboard's browser tests
# can drive, installing Debian's chromium package first when none is
# found (as root, through apt-get). PATCHMESH_CHROMIUM names one to use
# instead.
set -eu

if [ -n "${PATCHMESH_CHROMIUM:-}" ]; then
	echo "$PATCHMESH_CHROMIUM"
	exit 0
fi
for name in chromium chromium-browser google-chrome; do
	if path=$(command -v "$name" 2>/dev/null); then
		echo "$path"
		exit 0
	fi
done
if [ "$(id -u)" -ne 0 ]; then
	echo "chromium.sh: no chromium found and not root: install Debian's chromium package" >&2
	exit 1
fi
echo "chromium.sh: installing Debian's chromium package" >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >&2 ||
	{ apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >&2; }
command -v chromium
