#!/usr/bin/env bash
# Install what the offline corpus builders need (wavecraft data render-scores / render-grooves / import).
#
# Usage:
#   scripts/install_corpus_tools.sh                 # pip parts + system parts (apt: mma, fluidsynth, FluidR3_GM)
#   scripts/install_corpus_tools.sh --pip-only      # only the Python packages (no root needed)
#   scripts/install_corpus_tools.sh --data DIR      # also fetch Debian music/SFX packages and unpack them in DIR
#   scripts/install_corpus_tools.sh --data DIR --no-apt   # fetch the data only
#
# Pip parts (into the active Python environment):
#   music21       score corpus (15,112 works, inside the wheel)                     BSD-3 code; Essen: non-commercial
#   pretty_midi   MIDI parsing + TimGM6mb.sf2 General MIDI soundfont (in the wheel)  MIT / sf2 GPL-2
#   tinysoundfont SoundFont synthesizer, installed with --no-deps: its pyaudio dependency (live playback only)
#                 does not build without portaudio headers                           MIT
# System parts (apt-get, as root or with sudo):
#   mma               Musical MIDI Accompaniment: the groove generator of render-grooves   GPL-2+
#   fluidsynth        optional, a second synthesizer for checking renders                  LGPL-2.1+
#   fluid-soundfont-gm FluidR3_GM.sf2 (/usr/share/sounds/sf2), a better sounding GM font:
#                     pass it with --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2        MIT
# Data packages (--data DIR): real recordings for evaluation and `wavecraft data import`, fetched with
# `apt-get download` and unpacked with `dpkg -x` into DIR/PKG (no installation, no root needed for this step);
# each keeps its licence at DIR/PKG/usr/share/doc/PKG/copyright, which `wavecraft data import` records:
#   singularity-music (64 min, CC-BY-SA-3.0)   wesnoth-1.16-music (128 min, GPL-2+)
#   supertuxkart-data (77 min of music in 628 MB, CC-BY-SA)   ufoai-sound (347 SFX in 0snd.pk3, GPL-2+/CC-BY(-SA))
#   sonic-pi-samples (166 samples, CC0/MIT)
# This audio is never committed to the repository.
set -euo pipefail

pip_only=0
apt=1
data_dir=""
packages=(singularity-music wesnoth-1.16-music supertuxkart-data ufoai-sound sonic-pi-samples)

while [[ $# -gt 0 ]]; do
  case "$1" in
    --pip-only) pip_only=1; apt=0 ;;
    --no-apt) apt=0 ;;
    --data) data_dir="${2:?--data needs a folder}"; shift ;;
    --packages) IFS=',' read -r -a packages <<< "${2:?--packages needs a comma-separated list}"; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

echo "== pip: music21, pretty_midi, tinysoundfont (--no-deps)"
python -m pip install music21 pretty_midi
python -m pip install --no-deps tinysoundfont==0.3.7

if [[ $pip_only -eq 1 && -z "$data_dir" ]]; then
  exit 0
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  sudo_cmd=(sudo)
fi

if [[ $apt -eq 1 ]]; then
  echo "== apt: mma fluidsynth fluid-soundfont-gm"
  "${sudo_cmd[@]}" apt-get update
  "${sudo_cmd[@]}" apt-get install -y --no-install-recommends mma fluidsynth fluid-soundfont-gm
fi

if [[ -n "$data_dir" ]]; then
  mkdir -p "$data_dir"
  data_dir="$(cd "$data_dir" && pwd)"
  echo "== data packages into $data_dir: ${packages[*]}"
  downloads="$data_dir/.debs"
  mkdir -p "$downloads"
  (cd "$downloads" && apt-get download "${packages[@]}")
  for pkg in "${packages[@]}"; do
    debs=("$downloads"/"${pkg}"_*.deb)
    deb="${debs[0]}"
    if [[ ! -f "$deb" ]]; then
      echo "warning: no .deb downloaded for $pkg" >&2
      continue
    fi
    mkdir -p "$data_dir/$pkg"
    dpkg -x "$deb" "$data_dir/$pkg"
    # Sounds packed in Quake-style .pk3 archives (ufoai-sound: 0snd.pk3) are zip files: unpack them next to it.
    while IFS= read -r -d '' pk3; do
      python -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$pk3" "${pk3%.pk3}"
    done < <(find "$data_dir/$pkg" -name '*.pk3' -print0)
    if [[ -f "$data_dir/$pkg/usr/share/doc/$pkg/copyright" ]]; then
      echo "$pkg: licence at $data_dir/$pkg/usr/share/doc/$pkg/copyright"
    else
      echo "warning: $pkg has no usr/share/doc/$pkg/copyright" >&2
    fi
  done
  rm -rf "$downloads"
  echo "Import with e.g.: wavecraft data import $data_dir/ufoai-sound --kind sfx --output-dir ufoai --convert-rate 32000 --mono"
fi
