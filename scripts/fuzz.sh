#!/usr/bin/env bash
# Runs every Go fuzz target of the module for a short while (FUZZTIME,
# default 2s each), so that `make test` explores a little past the committed
# seed corpora (testdata/fuzz) on every run. The seeds themselves already run
# as ordinary tests. A failure leaves the crashing input under the package's
# testdata/fuzz, to be committed with its fix.
#
#   scripts/fuzz.sh            # every target, 2s each
#   FUZZTIME=1m scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-2s}
go=${GO:-go}
status=0
# One line per target: the package and the fuzz function.
targets=$(grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
  pkg=./$(dirname "${f#./}")
  grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed "s|^func |$pkg |"
done | sort -u)
[ -n "$targets" ] || { echo "fuzz: no fuzz targets found" >&2; exit 1; }
while read -r pkg name; do
  echo "fuzz: $pkg $name for $fuzztime"
  # -run '^$' skips the package's other tests; the target's seeds still run.
  # The fuzzer can end a short run with "context deadline exceeded" when
  # the machine is loaded (a worker still busy at the deadline): that is
  # retried once. A real finding says "Failing input written to" and fails
  # at once.
  for attempt in 1 2; do
    if $go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/fuzz.$$.log 2>&1; then
      break
    fi
    if grep -q 'Failing input written to' /tmp/fuzz.$$.log || [ $attempt = 2 ]; then
      cat /tmp/fuzz.$$.log
      status=1
      break
    fi
    echo "fuzz: $name ended without a finding ($(grep -m1 -o 'context deadline exceeded' /tmp/fuzz.$$.log || echo 'no reason given')); once more"
  done
done <<<"$targets"
rm -f /tmp/fuzz.$$.log
exit $status
