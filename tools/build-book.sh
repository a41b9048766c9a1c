#!/usr/bin/env bash
# Set up and build the HTML book into _build/html from the notebooks' saved outputs.
source "$(dirname "$0")/env.sh"
jupyter-book build . -W -n --keep-going
