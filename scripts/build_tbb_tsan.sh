#!/usr/bin/env bash
# Builds oneTBB with ThreadSanitizer into PREFIX, for scripts/sanitize.sh tsan.
# Usage: scripts/build_tbb_tsan.sh PREFIX
#
# Debian's libtbb.so is not instrumented, so TSan cannot see the synchronisation inside it
# (spawning, stealing and waiting for tasks) and reports every hand-over of data between the
# thread that starts a parallel_for and the workers that run it: thousands of false reports
# (docs/reliability.md). The cure is an instrumented TBB. This builds the very version of the
# installed libtbb-dev, from Debian's source package (fetched with apt-get source, using a
# private package list so the system's apt configuration is left alone), with the oneTBB build's
# own TBB_SANITIZE=thread option. It does nothing if PREFIX already holds that version.
set -euo pipefail
prefix="$(realpath -m "${1:?usage: scripts/build_tbb_tsan.sh PREFIX}")"
version="$(dpkg-query -W -f='${Version}' "libtbb-dev:$(dpkg --print-architecture)")"
stamp="$prefix/tbgrad-tbb-version"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
  exit 0
fi
source_package="$(dpkg-query -W -f='${source:Package}' "libtbb-dev:$(dpkg --print-architecture)")"
work="$prefix.work"
rm -rf "$work" "$prefix"
mkdir -p "$work/lists/partial"
suite="$(. /etc/os-release && echo "$VERSION_CODENAME")"
cat > "$work/sources.list" << SOURCES
deb-src http://deb.debian.org/debian $suite main
deb-src http://deb.debian.org/debian $suite-updates main
deb-src http://deb.debian.org/debian-security $suite-security main
SOURCES
apt_private=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$work/lists" -o APT::Sandbox::User=root)
echo "build_tbb_tsan: fetching the $source_package $version source package"
(cd "$work" && apt-get "${apt_private[@]}" -qq update &&
   apt-get "${apt_private[@]}" -qq source --download-only "$source_package=$version") > /dev/null
(cd "$work" && dpkg-source -x --no-check ./*.dsc src > /dev/null)

echo "build_tbb_tsan: building $source_package $version with -fsanitize=thread"
# TBB_STRICT=OFF: GCC warns that TSan does not model atomic_thread_fence (-Wtsan), and
# oneTBB's strict mode would turn that into an error.
cmake -S "$work/src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_INSTALL_PREFIX="$prefix" -DTBB_SANITIZE=thread -DTBB_STRICT=OFF -DTBB_TEST=OFF \
  -DTBB_EXAMPLES=OFF -DTBBMALLOC_BUILD=OFF -DTBB_DISABLE_HWLOC_AUTOMATIC_SEARCH=ON > /dev/null
cmake --build "$work/build" -j "$(nproc)" > /dev/null
cmake --install "$work/build" > /dev/null
echo "$version" > "$stamp"
rm -rf "$work"
echo "build_tbb_tsan: installed in $prefix"
