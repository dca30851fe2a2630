#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, from the project's own files:
# system packages (Debian), Node 24 (the `node` npm package) and the npm dependencies.
# Safe to run again: it only does what is missing. Usage: scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }

# --- System packages --------------------------------------------------------
# protoc: partners compile proto/ with plain protoc; a test proves it works.
# nats-server: `npm start` runs a local one when no NATS answers on 127.0.0.1:4222.
missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
# google/protobuf/*.proto (well-known types) for plain protoc; a Recommends of protobuf-compiler.
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
# chromium: the browser tests drive Debian's Chromium with playwright-core (no browser download).
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "missing system packages: ${missing[*]}"
    log "install them, e.g.: sudo apt-get install ${missing[*]}   (then run scripts/setup.sh again)"
    exit 1
  fi
fi

# --- Node 24 and npm dependencies ---------------------------------------------
# The `node` devDependency puts Node 24 in node_modules/.bin. The first pass may
# run on an older system Node; the second runs on Node 24 so that every package
# (and every install script) sees the Node version the project targets.
if ! { [ -x node_modules/.bin/node ] && node_modules/.bin/node --version | grep -q '^v24\.'; }; then
  log "bootstrapping Node 24 from the npm registry (the node package's own install script fetches nothing: its binary is a registry package)"
  npm install --no-audit --no-fund --loglevel=error
fi
export PATH="$PWD/node_modules/.bin:$PATH"
log "npm install on $(node --version)"
npm install --no-audit --no-fund --loglevel=error
log "done: node $(node --version), buf $(buf --version), protoc $(protoc --version | cut -d' ' -f2)"
