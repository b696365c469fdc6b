#!/usr/bin/env bash
# The GPU half of the H100 row of benchmarks/record/molecules.md, for a GPU host that has PyTorch but
# not RDKit, Prefect or the MOSES wheel (the lent device machine; DEVELOPERS.md has the
# whole procedure). Installs the carried wheels (the few packages the host lacks) and
# genforge from this tree, trains on a prepared folder for the budget, samples, and writes samples.smi and
# summary.json under $OUT/<folder name>; score them where RDKit is with
# `python benchmarks/molecules_gpu.py --score DIR`.
#
#   bash benchmarks/gpu_row.sh PREPARED_DIR [molecules_gpu.py options, e.g. --compile --minutes 5]
set -euo pipefail
data=${1:?usage: gpu_row.sh PREPARED_DIR [molecules_gpu.py options]}
shift
wheels=${GENFORGE_WHEELS:-.whl}
out=${OUT:-gpu-row-out}/$(basename "$data")

site=/tmp/genforge-site
rm -rf "$site"
mkdir -p "$site"
if compgen -G "$wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
fi
# genforge itself from this tree, as `pip install -e .` maps it (a built wheel would carry 30 MB of
# data twice over the transfer limit): the package folders linked in, and the entry points.
mkdir -p "$site/genforge" "$site/genforge-0.dist-info"
for d in core flows plugins deploy; do ln -s "$PWD/$d" "$site/genforge/$d"; done
python3 - "$site/genforge-0.dist-info" <<'PY'
import sys, tomllib
from pathlib import Path
project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
out = Path(sys.argv[1])
(out / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
(out / "entry_points.txt").write_text("".join(
    f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in project["entry-points"].items()))
PY
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export GENFORGE_HOME=${GENFORGE_HOME:-/tmp/genforge-home}
python3 -c "import genforge.plugins.healthcare.generator, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 benchmarks/molecules_gpu.py --data "$data" --out "$out" --no-suite "$@"
