# Sourced by scripts/run and scripts/test: make .venv and install the requirements when they
# changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REQS="${REQS:-requirements.txt}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
stamp=".venv/.installed-$(cat requirements*.txt | sha256sum | cut -c1-16)-$(basename "$REQS")"
if [ ! -f "$stamp" ]; then
  echo "==> installing $REQS into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$REQS"
  touch "$stamp"
fi
PY="$ROOT/.venv/bin/python"
