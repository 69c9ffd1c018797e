#!/usr/bin/env bash
# Installs the real servers the integration tests run into a project-local folder, changing nothing on
# the system: Debian's packages are fetched with `apt-get download` against throwaway package lists
# (checked with Debian's archive keyring) and unpacked with `dpkg -x`.
#
#   DIR/root/...          unpacked packages
#   DIR/bin/prometheus    promtool  alertmanager  amtool  victoria-metrics  pushgateway
#   DIR/bin/redis-server  redis-cli (wrappers: redis needs libjemalloc2 and liblzf1 from DIR/root)
#   DIR/bin/alertmanager  (wrapper: see patch_alertmanager)
#   DIR/.stamp            layout version + package versions; a re-run with a complete stamp is instant
#
# Usage: scripts/install-tools.sh [DIR]     (DIR defaults to .tools at the repo root)
#
# Prometheus 3.x and Alertmanager 0.3x come from Debian unstable: stable (bookworm) has 2.42 / 0.25.
# Debian's Go binaries need only GLIBC_2.34, so sid's run on bookworm. Should sid's ever stop running
# here, the next suite in SUITES (testing) is tried. Redis comes from bookworm: sid's needs glibc 2.43.
set -euo pipefail

LAYOUT=2  # bump when the layout of DIR changes, so old folders are rebuilt
SUITES=${SUBAGENT_TELEMETRY_TOOL_SUITES:-sid testing}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
SERVER_PACKAGES=(prometheus promtool prometheus-alertmanager victoria-metrics prometheus-pushgateway)
REDIS_PACKAGES=(redis-server redis-tools libjemalloc2 liblzf1)
BINARIES=(prometheus promtool alertmanager amtool victoria-metrics pushgateway redis-server redis-cli)

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-$repo/.tools}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
stamp=$dir/.stamp

die() {
    echo "install-tools: error: $*" >&2
    exit 1
}

summary() {
    # One line: "install-tools: DIR/bin: prometheus 3.5.3+ds1-6, ..."
    local line
    line=$(grep -v '^layout=' "$stamp" | sed 's/=/ /' | paste -sd ',' - | sed 's/,/, /g')
    echo "install-tools: $dir/bin: $line"
}

complete() {
    [[ -f $stamp ]] && [[ $(head -n1 "$stamp") == "layout=$LAYOUT" ]] || return 1
    local b
    for b in "${BINARIES[@]}"; do [[ -x $dir/bin/$b ]] || return 1; done
}

if complete; then
    summary
    exit 0
fi

command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "needs apt-get and dpkg (Debian)"
[[ -r $KEYRING ]] || die "$KEYRING missing: run 'bash scripts/install-system-deps.sh' as root"

# Use the mirror this machine is configured with (deb.debian.org when none is found).
mirror_of() {  # $1: archive name, "debian" or "debian-security"
    local found
    found=$(grep -hoE "https?://[^ ]+/$1/?( |$)" /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
        /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1 | tr -d ' ' | sed 's:/$::' || true)
    echo "${found:-http://deb.debian.org/$1}"
}
mirror=$(mirror_of debian)
security_mirror=$(mirror_of debian-security)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# apt_in NAME CMD ARGS...: run apt-get/apt-cache with a private state folder work/NAME, whose
# sources.list the caller wrote. The sandbox user is root because the folder is root's mktemp.
apt_in() {
    local state=$work/$1 cmd=$2
    shift 2
    "$cmd" -qq -o Dir::Etc::SourceList="$state/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache" \
        -o APT::Sandbox::User=root -o Debug::NoLocking=1 "$@"
}

# fetch NAME SOURCE_LINE... -- PACKAGE...: download the newest PACKAGEs of those sources into work/NAME/debs.
fetch() {
    local name=$1 state=$work/$1
    shift
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/debs"
    : >"$state/sources.list"
    while [[ $1 != -- ]]; do
        echo "deb [signed-by=$KEYRING] $1" >>"$state/sources.list"
        shift
    done
    shift
    apt_in "$name" apt-get update >"$state/update.log" 2>&1 \
        || die "apt-get update for $name failed: $(tail -n5 "$state/update.log")"
    (cd "$state/debs" && apt_in "$name" apt-get download "$@") >"$state/download.log" 2>&1 \
        || die "apt-get download $* from $name failed: $(tail -n5 "$state/download.log")"
}

# unpack NAME ROOT: dpkg -x every downloaded package of NAME into ROOT and record its version.
unpack() {
    local deb
    for deb in "$work/$1"/debs/*.deb; do
        dpkg-deb -x "$deb" "$2"
        echo "$(dpkg-deb -f "$deb" Package)=$(dpkg-deb -f "$deb" Version)" >>"$work/versions"
    done
}

# version_of BINARY: the first "version X.Y[.Z]" that BINARY --version prints.
version_of() {
    "$1" --version 2>&1 | grep -oE 'version [0-9]+\.[0-9]+(\.[0-9]+)?' | head -n1 | cut -d' ' -f2
}

# Debian's alertmanager reads its default.tmpl (and UI) from the hard-coded folder
# /usr/share/prometheus/alertmanager, and fails to start without it. Rather than write to /usr, rewrite
# that path in the binary to "/proc/self/fd/9" padded with slashes to the same length (the kernel
# collapses them); the bin/alertmanager wrapper opens DIR/root/usr/share/prometheus/alertmanager as fd 9.
AM_SHARE=/usr/share/prometheus/alertmanager
AM_FD=9
patch_alertmanager() {  # $1: root folder
    local binary=$1/usr/bin/prometheus-alertmanager replacement
    replacement=$(printf '%-*s' ${#AM_SHARE} "/proc/self/fd/$AM_FD" | tr ' ' /)
    OLD=$AM_SHARE NEW=$replacement perl -0777 -pi -e 's/\Q$ENV{OLD}\E/$ENV{NEW}/g' "$binary"
    ! grep -qF "$AM_SHARE" "$binary" || die "could not rewrite $AM_SHARE in $binary"
    [[ -f $1$AM_SHARE/default.tmpl ]] || die "$AM_SHARE/default.tmpl missing from the package"
}

link_binaries() {  # $1: folder holding root/, which gets bin/
    local base=$1
    rm -rf "$base/bin"
    mkdir -p "$base/bin"
    ln -s ../root/usr/bin/prometheus "$base/bin/prometheus"
    ln -s ../root/usr/bin/promtool "$base/bin/promtool"
    cat >"$base/bin/alertmanager" <<EOF
#!/bin/sh
# The binary reads $AM_SHARE through fd $AM_FD (see patch_alertmanager in install-tools.sh).
here=\$(dirname "\$(readlink -f "\$0")")
exec $AM_FD<"\$here/../root$AM_SHARE"
exec "\$here/../root/usr/bin/prometheus-alertmanager" "\$@"
EOF
    chmod +x "$base/bin/alertmanager"
    ln -s ../root/usr/bin/amtool "$base/bin/amtool"
    ln -s ../root/usr/bin/victoria-metrics "$base/bin/victoria-metrics"
    ln -s ../root/usr/bin/prometheus-pushgateway "$base/bin/pushgateway"
    local b
    for b in redis-server redis-cli; do
        # Debian's redis-server is a symlink to redis-check-rdb and picks its role from argv[0].
        cat >"$base/bin/$b" <<EOF
#!/bin/sh
here=\$(dirname "\$(readlink -f "\$0")")
LD_LIBRARY_PATH="\$(echo "\$here"/../root/usr/lib/*-linux-gnu)\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" \\
    exec "\$here/../root/usr/bin/$b" "\$@"
EOF
        chmod +x "$base/bin/$b"
    done
}

# Prometheus family: first suite whose binaries run on this machine.
staging=$dir/.staging
fetch bookworm "$mirror bookworm main" "$mirror bookworm-updates main" \
    "$security_mirror bookworm-security main" -- "${REDIS_PACKAGES[@]}"
ok=""
for suite in $SUITES; do
    rm -rf "$staging" "$work/versions"
    mkdir -p "$staging/root"
    fetch "$suite" "$mirror $suite main" -- "${SERVER_PACKAGES[@]}"
    unpack "$suite" "$staging/root"
    unpack bookworm "$staging/root"
    patch_alertmanager "$staging/root"
    link_binaries "$staging"
    if "$staging/bin/prometheus" --version >/dev/null 2>&1; then
        ok=$suite
        break
    fi
    echo "install-tools: $suite's prometheus does not run here (newer glibc?):" \
        "$("$staging/bin/prometheus" --version 2>&1 | head -n1)" >&2
done
[[ -n $ok ]] || die "no suite of '$SUITES' has a prometheus that runs on this machine"

for b in "${BINARIES[@]}"; do
    [[ -x $staging/bin/$b ]] || die "$b missing after unpacking (package layout changed?)"
done
prom=$(version_of "$staging/bin/prometheus")
promtool=$(version_of "$staging/bin/promtool")
am=$(version_of "$staging/bin/alertmanager")
amtool=$(version_of "$staging/bin/amtool")
[[ $prom == 3.* ]] || die "prometheus from $ok is '$prom', expected 3.x"
[[ $promtool == 3.* ]] || die "promtool from $ok is '$promtool', expected 3.x"
[[ $am =~ ^0\.(2[0-9]|3[0-9])\. ]] || die "alertmanager from $ok is '$am', expected 0.2x or 0.3x"
[[ $amtool == "$am" ]] || die "amtool is '$amtool' but alertmanager is '$am'"
"$staging/bin/pushgateway" --version >/dev/null 2>&1 || die "pushgateway does not run"
"$staging/bin/victoria-metrics" -version >/dev/null 2>&1 || die "victoria-metrics does not run"
"$staging/bin/redis-server" --version >/dev/null 2>&1 \
    || die "redis-server does not run: $("$staging/bin/redis-server" --version 2>&1 | tail -n1)"
"$staging/bin/redis-cli" --version >/dev/null 2>&1 || die "redis-cli does not run"

# Swap the new tree in; the stamp goes last so an interrupted run is redone.
rm -rf "$dir/root" "$dir/bin" "$stamp"
mv "$staging/root" "$dir/root"
mv "$staging/bin" "$dir/bin"
rm -rf "$staging"
{
    echo "layout=$LAYOUT"
    grep -E '^(prometheus|promtool|prometheus-alertmanager|victoria-metrics|prometheus-pushgateway|redis-server)=' \
        "$work/versions" | sort
} >"$stamp"
summary
