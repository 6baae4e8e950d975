# Sourced by the bench scripts: `need COMMAND PACKAGE ...` installs, in one apt-get run, the Debian
# packages of the commands that are missing (also looked for in /usr/sbin). Idempotent.
need() {
  local missing=()
  while (($#)); do
    command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || missing+=("$2")
    shift 2
  done
  if ((${#missing[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
}
