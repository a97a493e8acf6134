#!/bin/bash
# session 29, third device run: the CUDA tests after the fixes, then py-spy profiles of a scalar fit and of texture steps on CUDA
T0=$(date +%s); DEADLINE=$((T0 + ${BUDGET:-200}))
left(){ echo $(( DEADLINE - $(date +%s) )); }
cap(){ local l=$(left); echo $(( l < $1 ? l : $1 )); }
export R=/tmp/r; rm -rf $R; mkdir -p $R /tmp/site /tmp/spy
PY=${PY:-python3}; DEV=${DEV:-cuda}
$PY -c "import zipfile,glob; [zipfile.ZipFile(z).extractall('/tmp/site') for z in glob.glob('${WHEELS:-.dev/wheels}/*.zip')]; zipfile.ZipFile(glob.glob('.dev/wheels/pyspy.whlzip')[0]).extractall('/tmp/spy')"
SPY=$(find /tmp/spy -name py-spy -type f); chmod +x $SPY
export PYTHONPATH=/tmp/site:$PWD/core:$PWD/scripts PYTHONUNBUFFERED=1
$PY .dev/timed.py tests $(cap ${T_TESTS:-110}) -- $PY -m pytest -q -p no:cacheprovider -rs tests/test_device.py tests/test_raycast.py
profile(){ # name start_after duration -- cmd
  local name=$1 after=$2 dur=$3; shift 4
  [ $(left) -lt $((after + dur + 5)) ] && { echo "[$name] skipped"; return; }
  "$@" > $R/$name.log 2>&1 & local pid=$!
  sleep $after; timeout $((dur + 15)) $SPY record --pid $pid --duration $dur --rate 100 --nonblocking -f raw -o $R/$name.spy.txt > $R/$name.spy.log 2>&1
  kill $pid 2>/dev/null; wait $pid 2>/dev/null; echo "[$name] profiled"; tail -n 3 $R/$name.log
}
profile demo 4 30 -- $PY -m pbrfit.cli fit examples/demo/job.toml --out $R/demo --device $DEV --progress lines
profile emb 34 35 -- $PY -m pbrfit.cli fit .dev/emb/job.toml --out $R/emb --preset plastic --backend raster --iterations 60 --device $DEV --progress lines
rm -rf $R/demo $R/emb
mkdir -p ${OUT:-/tmp/out} && tar czf ${OUT:-/tmp/out}/results.tgz -C /tmp r && ls -la ${OUT:-/tmp/out}
echo "total $(( $(date +%s) - T0 )) s"
