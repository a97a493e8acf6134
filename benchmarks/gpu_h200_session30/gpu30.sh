#!/bin/bash
# session 30 device checks: the CUDA tests (incl. the unverified scalar one and the new chunk),
# the embossed texture fit whole on CUDA with whole-view gradient chunks, a 2048^2 normal map's steps
T0=$(date +%s); DEADLINE=$((T0 + ${BUDGET:-560}))
left(){ echo $(( DEADLINE - $(date +%s) )); }
cap(){ local l=$(left); echo $(( l < $1 ? l : $1 )); }
export R=/tmp/r; rm -rf $R; mkdir -p $R /tmp/site
PY=${PY:-python3}; DEV=${DEV:-cuda}
$PY -c "import zipfile,glob; [zipfile.ZipFile(z).extractall('/tmp/site') for z in glob.glob('.dev/wheels/*.zip')]"
export PYTHONPATH=/tmp/site:$PWD/core:$PWD/scripts:$PWD/tests/fixtures PYTHONUNBUFFERED=1
(nvidia-smi -L; nproc; $PY -c "import torch,pbrfit; from pbrfit.texture_fit import gradient_chunk; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'chunk cuda x4', gradient_chunk('cuda', 4))") 2>&1 | tee $R/env.txt
(while true; do echo "$(date +%s) $(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null)"; sleep 1; done) > $R/gpu_mem.txt 2>&1 &
SAMPLER=$!
$PY .dev/timed.py emb256 $(cap ${T_EMB:-230}) -- $PY -m pbrfit.cli fit .dev/emb/job.toml --out $R/emb256 --preset plastic --backend raster --iterations 60 --device $DEV --progress lines
$PY .dev/timed.py tex2048 $(cap ${T_TEX:-110}) -- $PY scripts/benchmark_texture_memory.py .dev/emb/job.toml --maps normal --resolution 2048 --iterations 40 --device $DEV --json $R/tex2048_record.json
$PY .dev/timed.py tests $(left) -- $PY -m pytest -q -p no:cacheprovider -rs tests/test_device.py -k "cuda or chunk" --durations=0
kill $SAMPLER
rm -f $R/*/report.html; rm -rf $R/emb256/*.exr $R/emb256/textures 2>/dev/null
cp -r $R ${OUT:-/tmp/out}/ ; ls -la ${OUT:-/tmp/out}/r
echo "total $(( $(date +%s) - T0 )) s"
