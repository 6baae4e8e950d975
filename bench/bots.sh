#!/usr/bin/env bash
# Bot detection on a labelled traffic mix: curl, python-requests, wrk, a Rust client with its own
# user agent, a Rust client sending Firefox's headers, and headless Chromium (fresh sessions,
# over WebDriver) against one node with the built-in model and `bot.score lt 30` challenged.
# Prints each client's score distribution and whether Chromium reached the site.
#   bench/bots.sh                 # N=50 requests per scripted client, VISITS=10 Chromium visits
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/need.sh
need wrk wrk curl curl chromium chromium chromedriver chromium-driver
python3 -c 'import requests' 2>/dev/null || pip install -q requests
cargo build --release --locked -p palisade-cli -p palisade-loadgen >&2
exec python3 -u bench/bots_bench.py
