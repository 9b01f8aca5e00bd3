#!/usr/bin/env bash
# Build the book (every chapter executed, quick profile) with warnings as errors, then fail
# unless every chapter executed cleanly. Needs: pip install -e ".[book]".
#
#   bash scripts/build_book.sh            # HTML in _build/html (open _build/html/index.html)
#   CPSC_BOOK_CACHE=/tmp/cache bash scripts/build_book.sh   # keep trained models elsewhere
#
# Trained models are cached in book/_cache (delete it to retrain everything); chapters reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."
unset MPLBACKEND  # CI sets Agg for the tests; the chapters draw inline figures
export CPSC_BOOK_BUILD=1  # glued numbers appear in the pages' sentences, not as printed lines
PY="${PYTHON:-python3}"  # the environment with .[book] installed (an activated venv, or PYTHON=.venv/bin/python)
start=$(date +%s)
rm -rf _build/html/reports
# = jupyter-book build . --all -W --keep-going (--all: re-execute every chapter), run with $PY so that book and kernel use the same environment
"$PY" -c 'import sys; from jupyter_book.cli.main import main; sys.argv[0] = "jupyter-book"; main()' \
    build . --all -W --keep-going
"$PY" scripts/check_build.py _build
echo "book built and checked in $(( $(date +%s) - start )) s"
