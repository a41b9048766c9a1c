#!/usr/bin/env bash
# Set up and build the HTML book into _build/html from the notebooks' saved outputs.
source "$(dirname "$0")/env.sh"
# The in-browser explainer's files (npm ci, the ONNX export, onnxruntime-web's WebAssembly build); the
# build's Sphinx extension of the same name runs it too and copies the folder into the site.
python tools/explainer_assets.py
jupyter-book build . -W -n --keep-going
