#!/usr/bin/env bash
# Set up and run every test: the library's unit tests and every chapter under strict nbval (two workers), then the
# built site in headless Chromium on its own (a browser starved by a notebook kernel on the other core times out).
source "$(dirname "$0")/env.sh"
# -m "": every tier (a plain `python -m pytest` runs only the fast one, see pyproject.toml).
python -m pytest -m "" -n 2 --dist loadscope tests book --nbval -p no:cacheprovider --ignore tests/test_site.py "$@"
python -m pytest -m "" tests/test_site.py -p no:cacheprovider "$@"
