#!/usr/bin/env bash
# Set up and run every test: the library's unit tests and every chapter under strict nbval (two workers), then the
# built site in headless Chromium on its own (a browser starved by a notebook kernel on the other core times out).
source "$(dirname "$0")/env.sh"
python -m pytest -n 2 --dist loadscope tests book --nbval -p no:cacheprovider --ignore tests/test_site.py "$@"
python -m pytest tests/test_site.py -p no:cacheprovider "$@"
