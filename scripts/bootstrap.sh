#!/usr/bin/env bash
# Install whatever `make test` / `make demo` need and is missing: Debian packages
# (through apt-get when root), the .venv with the project, and the stack artifacts.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(postgresql-15 redis-server libjetty9-java openjdk-17-jre-headless chromium docker-compose)
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm installs the page's accessibility checker for the browser tests; any
# node with npm does (Debian's packages when there is none).
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        echo "bootstrap: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "bootstrap: missing Debian packages; run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

if [[ ! -x $VENV/bin/python ]]; then
    echo "bootstrap: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp=$VENV/.installed-$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
if [[ ! -f $stamp ]]; then
    echo "bootstrap: installing the project into $VENV (runtime versions from requirements.lock)"
    "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -m pip install -q -c requirements.lock -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -c "import contracts, relay, router, stack, outbox" 
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

npm_stamp=node_modules/.installed-$(sha256sum package-lock.json | cut -c1-16)
if [[ ! -f $npm_stamp ]]; then
    echo "bootstrap: installing the browser tests' tools (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
    touch "$npm_stamp"
fi

"$VENV/bin/outbox" stack install
