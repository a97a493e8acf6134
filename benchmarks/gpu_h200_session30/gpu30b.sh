#!/bin/bash
# session 30, second device run: a 2048^2 normal map fitted on CUDA (train views only, 40 steps over the pyramid)
export R=/tmp/r; rm -rf $R; mkdir -p $R /tmp/site; PY=python3
$PY -c "import zipfile,glob; [zipfile.ZipFile(z).extractall('/tmp/site') for z in glob.glob('.dev/wheels/*.zip')]"
export PYTHONPATH=/tmp/site:$PWD/core:$PWD/scripts PYTHONUNBUFFERED=1
(while true; do echo "$(date +%s) $(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null)"; sleep 1; done) > $R/gpu_mem.txt 2>&1 &
$PY .dev/timed.py tex2048 ${T:-330} -- $PY -m pbrfit.cli fit .dev/emb/job2048.toml --out $R/tex2048 --preset plastic --backend raster --iterations 20 --device cuda --progress lines
kill %1; rm -rf $R/tex2048; cp -r $R ${OUT:-/tmp/out}/; tail -25 $R/tex2048.log
