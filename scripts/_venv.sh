# Sourced by the scripts: make sure .venv exists and holds the project and the locked dependencies.
# DIFFALL_INSTALL=runtime (the service: ./scripts/serve, ./scripts/demo) or dev (the default: that
# plus the test and lint tools). Every package comes from requirements/<set>.txt, exported from
# uv.lock with hashes (refresh both with ./scripts/lock). Needs python3 >= 3.11 on PATH (or
# PYTHON=/path/to/python3.11).
PYTHON="${PYTHON:-python3}"
DIFFALL_INSTALL="${DIFFALL_INSTALL:-dev}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "diffall: needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
_lock_sum="$(cat pyproject.toml diffall/pyproject.toml "requirements/$DIFFALL_INSTALL.txt" | sha256sum | cut -c1-16)"
_stamp=".venv/.installed-$DIFFALL_INSTALL-$_lock_sum"
_dev_stamp=".venv/.installed-dev-$(cat pyproject.toml diffall/pyproject.toml requirements/dev.txt | sha256sum | cut -c1-16)"
if [ ! -f "$_stamp" ] && [ ! -f "$_dev_stamp" ]; then
  echo "==> installing diffall and its locked dependencies ($DIFFALL_INSTALL) into .venv" >&2
  # uv (itself pinned and hashed in the dev set) installs the lock quickly; pip bootstraps it.
  awk '/^uv==/{on=1; print; next} on && /^ +--hash/{print; next} {on=0}' requirements/dev.txt \
    > .venv/.uv-requirement.txt
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes \
    -r .venv/.uv-requirement.txt 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  .venv/bin/uv pip install --quiet --python .venv/bin/python --require-hashes \
    -r "requirements/$DIFFALL_INSTALL.txt"
  # The workspace's two projects, in place: the client (diffall/) and the server (.).
  .venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps -e ./diffall -e .
  rm -f .venv/.installed-* && touch "$_stamp"
fi
unset _lock_sum _stamp _dev_stamp
export PATH="$PWD/.venv/bin:$PATH"
