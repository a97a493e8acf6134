#!/bin/bash
# session 29 device checks: CUDA tests, then GPU timings of texture fits (see .dev/timed.py)
T0=$(date +%s); DEADLINE=$((T0 + ${BUDGET:-470}))
left(){ echo $(( DEADLINE - $(date +%s) )); }
cap(){ local l=$(left); echo $(( l < $1 ? l : $1 )); }
export R=/tmp/r; rm -rf $R; mkdir -p $R /tmp/site
for z in ${WHEELS:-.dev/wheels}/*.zip; do unzip -q -o $z -d /tmp/site; done
export PYTHONPATH=/tmp/site:$PWD/core:$PWD/scripts PYTHONUNBUFFERED=1
PY=${PY:-python3}; DEV=${DEV:-cuda}
(nvidia-smi -L; nproc; free -g | head -2; $PY -c "import torch,numpy,pxr,MaterialX,OpenImageIO,embreex,pbrfit; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'pbrfit', pbrfit.__version__)") 2>&1 | tee $R/env.txt
(while true; do echo "$(date +%s) $(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null)"; sleep 1; done) > $R/gpu_mem.txt 2>&1 &
SAMPLER=$!
$PY .dev/timed.py tests $(cap ${T_TESTS:-150}) -- $PY -m pytest -q -p no:cacheprovider -rs tests/test_device.py tests/test_raycast.py
$PY .dev/timed.py emb256 $(cap ${T_EMB:-230}) -- $PY -m pbrfit.cli fit .dev/emb/job.toml --out $R/emb256 --preset plastic --backend raster --iterations 60 --device $DEV --progress lines
$PY .dev/timed.py demo $(cap ${T_DEMO:-45}) -- $PY -m pbrfit.cli fit examples/demo/job.toml --out $R/demo --device $DEV --progress lines
$PY .dev/timed.py tex2048 $(cap ${T_TEX:-100}) -- $PY scripts/benchmark_texture_memory.py .dev/emb/job.toml --resolution ${RES2048:-2048} --iterations 40 --device $DEV --json $R/tex2048_record.json
$PY .dev/timed.py fab256 $(left) -- $PY -m pbrfit.cli fit .dev/fab/job.toml --out $R/fab256 --preset plastic --backend raster --iterations 60 --device $DEV --progress lines
kill $SAMPLER
rm -f $R/*/report.html
mkdir -p ${OUT:-/tmp/out} && tar czf ${OUT:-/tmp/out}/results.tgz -C /tmp r && ls -la ${OUT:-/tmp/out}
echo "total $(( $(date +%s) - T0 )) s"
