#!/usr/bin/env bash
# Time and peak RSS per stage of a HEAR 2021 replica run: replica write, embedding (embed_task: every batch
# computed and cached, then every split assembled), probe (python -m eval run --grid fast on the cached
# embeddings). Usage, from the repository root:
#   nice -n 10 bash results/hear2021_sizing.sh TASK SCALE ROOT [STAGES]
# STAGES: any of "replica embed probe" (default all three). Appends one line per stage to ROOT/sizing.tsv:
# task, scale, stage, wall seconds, peak RSS in KiB (GNU time), exit status, date, load average before the stage,
# CPU seconds (user + system; what the stage costs, less sensitive than wall time to other users of the machine).
set -u
task=$1; scale=$2; root=$3; stages=${4:-replica embed probe}
python=${PYTHON:-python}
dir=$root/$task-$scale
mkdir -p "$dir"
stage() {  # name, command...
  local name=$1; shift
  local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
  /usr/bin/time -f "%e %M %U %S" -o "$dir/$name.time" "$@" >"$dir/$name.log" 2>&1
  local status=$?
  local wall rss user system
  read -r wall rss user system < <(tail -1 "$dir/$name.time")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$task" "$scale" "$name" "$wall" "$rss" "$status" \
    "$(date -u +%FT%TZ)" "$load" "$(echo "$user + $system" | bc)" >>"$root/sizing.tsv"
}
for name in $stages; do
  case $name in
    replica) stage replica "$python" -m eval replica --task "$task" --scale "$scale" --out "$dir/tasks" ;;
    embed) stage embed "$python" -c 'import sys
from eval.embed import Embedder, embed_task
from eval.tasks import validate_task
embedder = Embedder("hear_embed", weights="tiny")
features = embed_task(validate_task(sys.argv[1], embedder.sample_rate), embedder, sys.argv[2], progress=False)
print({split: f.x.shape for split, f in features.items()})' "$dir/tasks/$(ls "$dir/tasks" | grep -v '^\.' | head -1)" "$dir/cache" ;;
    probe) rm -rf "$dir/run"; stage probe "$python" -m eval run --model hear_embed --weights tiny --suite hear2021 \
             --tasks-dir "$dir/tasks" --cache-dir "$dir/cache" --grid fast --out "$dir/run" --no-progress ;;
  esac
done
