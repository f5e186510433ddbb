# Sourced (with no arguments) by the scripts that need root, after `set -e`:
# go on as root, else run the calling script again under sudo with the same
# arguments (a root shell often has no sudo), else stop with $ROOT_WHY.
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null && exec sudo -E bash "$0" "$@"
  echo "${ROOT_WHY:-$(basename "$0"): run as root}; this machine has no sudo" >&2
  exit 1
fi
