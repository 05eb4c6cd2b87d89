# shellcheck shell=bash
# Helpers shared by scripts/serve and scripts/test (sourced, never run).
#
# Every message goes to stderr: scripts/serve hands stdout to the MCP stdio transport, where one stray line
# would corrupt the JSON-RPC stream.
#
# The project venv is `.venv` in the checkout, built with Debian's /usr/bin/python3 (readable by every user,
# unlike a pyenv interpreter under /root) and re-installed only when pyproject.toml or the package changed
# (a stamp in .venv records what was installed).

HANZO_ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
HANZO_VENV="$HANZO_ROOT/.venv"
HANZO_STAMP="$HANZO_VENV/.hanzo-install-stamp"
HANZO_PROG=${HANZO_PROG:-hanzo}

log() { printf '%s: %s\n' "$HANZO_PROG" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
is_root() { [ "$(id -u)" -eq 0 ]; }

# --- Python -----------------------------------------------------------------------------------------------

python_ok() { "$1" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))' >/dev/null 2>&1; }
# Debian and Ubuntu ship ensurepip in pythonX.Y-venv: without it `python3 -m venv` fails.
venv_ok() { "$1" -c 'import ensurepip, venv' >/dev/null 2>&1; }

# The interpreter for .venv: $HANZO_PYTHON if set, else the system's Python 3.11+ (/usr/bin first, so the
# venv works for every user), else `python3` on PATH (macOS, other systems).
find_python() {
	local candidate
	if [ -n "${HANZO_PYTHON:-}" ]; then
		python_ok "$HANZO_PYTHON" || die "HANZO_PYTHON=$HANZO_PYTHON is not a Python 3.11 or newer"
		printf '%s\n' "$HANZO_PYTHON"
		return 0
	fi
	for candidate in /usr/bin/python3 /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11; do
		if [ -x "$candidate" ] && python_ok "$candidate"; then
			printf '%s\n' "$candidate"
			return 0
		fi
	done
	candidate=$(command -v python3 2>/dev/null) || return 1
	python_ok "$candidate" || return 1
	printf '%s\n' "$candidate"
}

# --- System packages (Debian/Ubuntu) ----------------------------------------------------------------------

have_apt() { command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; }

deb_installed() {
	case "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" in
	*" installed") return 0 ;;
	*) return 1 ;;
	esac
}

# Prints the Debian packages needed for a Python 3.11+ that can build venvs.
python_packages_needed() {
	local py
	if py=$(find_python); then
		venv_ok "$py" || printf '%s-venv\n' "$(basename "$py")"
	elif [ -x /usr/bin/python3 ]; then
		# The system python3 is older than 3.11 (Ubuntu 22.04 has 3.10): add 3.11 beside it.
		printf '%s\n' python3.11 python3.11-venv
	else
		printf '%s\n' python3 python3-venv
	fi
}

# apt_install PKG...: installs the packages (apt-get update first), as root or through sudo; dies with the
# command to run by hand when neither is possible.
apt_install() {
	[ "$#" -gt 0 ] || return 0
	local -a prefix=()
	if ! is_root; then
		if command -v sudo >/dev/null 2>&1; then
			prefix=(sudo)
		else
			die "missing system packages: $*. Install them as root: apt-get install -y --no-install-recommends $*"
		fi
	fi
	log "installing system packages: $*"
	# stdin from /dev/null: under scripts/serve stdin is the MCP transport (sudo asks on the terminal).
	if ! "${prefix[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2 ||
		! "${prefix[@]}" env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends "$@" </dev/null >&2; then
		die "could not install system packages: $*. Run: sudo apt-get install -y --no-install-recommends $*"
	fi
}

# ensure_system_packages [PKG...]: Python 3.11+ with venv, plus the named Debian packages when missing.
# Without apt (macOS, other distributions) only Python is checked.
ensure_system_packages() {
	local -a need=()
	local pkg
	if have_apt; then
		while IFS= read -r pkg; do need+=("$pkg"); done < <(python_packages_needed)
		for pkg in "$@"; do deb_installed "$pkg" || need+=("$pkg"); done
		apt_install "${need[@]}"
	fi
	local py
	py=$(find_python) || die "no Python 3.11 or newer found (set HANZO_PYTHON=/path/to/python3.11+)"
	venv_ok "$py" || die "$py cannot create virtual environments: install its venv module (Debian/Ubuntu: $(basename "$py")-venv)"
}

# --- The project venv -------------------------------------------------------------------------------------

sha256_stdin() {
	if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -d' ' -f1; else shasum -a 256 | cut -d' ' -f1; fi
}

# Hash of what `pip install .` reads: pyproject.toml, the package sources, and the interpreter.
source_hash() {
	local py=$1
	(
		cd "$HANZO_ROOT" || exit 1
		"$py" -c 'import sys; print(sys.version)'
		find pyproject.toml hanzo_sandbox_mcp -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 |
			LC_ALL=C sort -z | xargs -0 cat -- 2>/dev/null
		find pyproject.toml hanzo_sandbox_mcp -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort
	) | sha256_stdin
}

# ensure_venv PYTHON EXTRAS: .venv exists, was built by PYTHON and has the checkout installed with EXTRAS
# ("" or "test"). Re-installs only when the source hash changed or the extras are missing.
ensure_venv() {
	local py=$1 extras=$2 want have="" spec="$HANZO_ROOT"
	want=$(source_hash "$py")
	if [ -x "$HANZO_VENV/bin/python" ] &&
		[ "$("$HANZO_VENV/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null)" = "$("$py" -c 'import sys; print(sys.version)')" ]; then
		have=$(cat "$HANZO_STAMP" 2>/dev/null || true)
	else
		log "creating $HANZO_VENV with $py"
		"$py" -m venv --clear "$HANZO_VENV" >&2 || die "could not create $HANZO_VENV with $py"
	fi
	case "$have" in
	"$want $extras" | "$want test") return 0 ;; # a test install also serves `serve`
	esac
	[ -z "$extras" ] || spec="${HANZO_ROOT}[$extras]"
	log "installing $spec into $HANZO_VENV (pip, quiet)"
	rm -f "$HANZO_STAMP"
	PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
		"$HANZO_VENV/bin/python" -m pip install -q "$spec" </dev/null >&2 ||
		die "pip install $spec failed (see the messages above)"
	printf '%s %s\n' "$want" "$extras" >"$HANZO_STAMP"
}

# venv_lock / venv_unlock: one install at a time per checkout (two MCP clients may start serve together).
# The lock is held on pyproject.toml through fd 9; release it before exec, or the server would keep it.
venv_lock() {
	command -v flock >/dev/null 2>&1 || return 0
	exec 9<"$HANZO_ROOT/pyproject.toml"
	flock 9
}
venv_unlock() { exec 9<&-; }
