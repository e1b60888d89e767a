# Cross build for 64-bit ARM Linux on a Debian (multiarch) host, run under qemu:
#   apt-get install g++-aarch64-linux-gnu qemu-user libtbb-dev:arm64 ...  (scripts/install_deps.sh --with-aarch64)
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DTBGRAD_NATIVE=OFF
# Or just: bash scripts/test.sh --aarch64.
# Debian's cross compiler searches the multiarch directories (/usr/include/aarch64-linux-gnu,
# /usr/lib/aarch64-linux-gnu) itself, so the target's libraries are the :arm64 packages and no
# sysroot is needed; CMake's find_package/find_library look there through
# CMAKE_LIBRARY_ARCHITECTURE (e.g. /usr/lib/aarch64-linux-gnu/cmake/TBB), never in x86_64-linux-gnu.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Headers and libraries: the cross toolchain's own tree (libc, libstdc++) and the multiarch
# :arm64 packages under /usr (arch-independent headers in /usr/include, libraries and CMake
# package files in /usr/lib/aarch64-linux-gnu). Programs (pkg-config, bash) come from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config (pkg_check_modules) reads the target's .pc files, not the host's.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "")

# Run target binaries (gtest_discover_tests at build time, ctest) under user-mode qemu.
# The :arm64 packages bring Debian's arm64 libc (libc6:arm64, with /lib/ld-linux-aarch64.so.1),
# and the binaries must run on that loader: with "-L /usr/aarch64-linux-gnu" qemu would take
# the cross toolchain's ld.so (libc6-arm64-cross, an older 2.36 build) while the libraries,
# found in the multiarch dirs first, load the multiarch libc.so.6, and that mismatched pair
# hangs in pthread_create (its stack-cache list read at the other build's offsets). So the
# cross tree is used only where the multiarch libc is missing.
find_program(TBGRAD_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static REQUIRED)
if(EXISTS /lib/ld-linux-aarch64.so.1)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${TBGRAD_QEMU_AARCH64}")
else()
  set(CMAKE_CROSSCOMPILING_EMULATOR "${TBGRAD_QEMU_AARCH64};-L;/usr/aarch64-linux-gnu")
endif()
