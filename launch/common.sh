# Shared by the launch scripts: usage from the script's header comment, shell quoting.
# shellcheck shell=bash

# Print the calling script's header comment (and an error), then exit 2.
usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  if [ $# -gt 0 ]; then printf 'error: %s\n' "$*" >&2; fi
  exit 2
}

# Words quoted so the line can be pasted back into a shell: plain words as they
# are, anything else in single quotes.
quote() {
  local words=() word
  for word in "$@"; do
    if [[ "$word" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      words+=("$word")
    else
      words+=("'${word//\'/\'\\\'\'}'")
    fi
  done
  printf '%s\n' "${words[*]}"
}

# Run a command, or with dry_run=1 print it.
execute() {
  if [ "${dry_run:-0}" = 1 ]; then quote "$@"; else "$@"; fi
}
