#!/usr/bin/env bash
# Set up and run every test: the library's unit tests, then every chapter under strict nbval.
source "$(dirname "$0")/env.sh"
python -m pytest -n 2 --dist loadscope tests book --nbval -p no:cacheprovider "$@"
