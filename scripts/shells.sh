#!/bin/sh
# shells.sh makes sure zsh and fish are installed, for the completion
# tests, installing Debian's packages first when one is missing (as root,
# or through sudo, with apt-get). It prints nothing on success.
set -eu

missing=""
for name in zsh fish; do
	command -v "$name" >/dev/null 2>&1 || missing="$missing $name"
done
[ -z "$missing" ] && exit 0

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"
	elif command -v sudo >/dev/null 2>&1; then sudo "$@"
	else
		echo "shells.sh:$missing missing and not root: install Debian's packages$missing" >&2
		return 1
	fi
}
echo "shells.sh: installing$missing" >&2
# shellcheck disable=SC2086 # one word per package
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2 ||
	{ as_root apt-get update >&2 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2; }
