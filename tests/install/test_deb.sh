#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The Debian package, end to end on this machine (meson suite "deb"; scripts/test.sh runs
# it, a plain `meson test` does not): build it with dpkg-buildpackage from a copy of the
# source tree (DEB_BUILD_OPTIONS=nocheck: the project's tests run here, not inside the
# package build), install it with apt-get, check the installed files, the group and the
# Depends, enroll a SoftHSM2 device with /usr/bin/provisioner, then remove it (only
# conffiles may stay) and purge it (nothing stays, the group is gone).
# Serialized machine-wide with a lock; a package left by an earlier failed run is purged.
. "$PROV_SOURCE_ROOT/tests/integration/lib.sh"
it_setup
need dpkg-buildpackage dh apt-get dpkg-query git flock man
PKG=provisioner
APT=(apt-get -y -q -o DPkg::Lock::Timeout=300)

exec 9>/run/lock/provisioner-deb-test.lock
flock -w 900 9 || fail "another deb test holds /run/lock/provisioner-deb-test.lock"

pkg_status() { dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || echo not-installed; }
if [ "$(pkg_status)" != not-installed ]; then
    it_log "purging $PKG left by an earlier run ($(pkg_status))"
    DEBIAN_FRONTEND=noninteractive "${APT[@]}" purge "$PKG" >purge-old.log 2>&1 ||
        fail "cannot purge the $PKG left installed: $(tail -n2 purge-old.log | tr '\n' ' ')"
fi

# The source as the working tree has it (tracked and new files, not ignored ones), in a
# directory of its own: dpkg-buildpackage writes the .deb into the parent directory.
mkdir -p src
(cd "$PROV_SOURCE_ROOT" && git ls-files -z -co --exclude-standard) >files.lst ||
    fail "git ls-files in $PROV_SOURCE_ROOT failed (the deb test builds from a git checkout)"
(cd "$PROV_SOURCE_ROOT" && tar --null -T "$WORK/files.lst" -cf -) | tar -x -C src
start=$(date +%s)
(cd src && DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -us -uc -b) >build.log 2>&1 ||
    fail "dpkg-buildpackage: $(grep -iE 'error|fail' build.log | tail -n3 | tr '\n' ' ')"
it_log "package built in $(($(date +%s) - start)) s"
deb=$(ls "$WORK"/${PKG}_*_"$(dpkg --print-architecture)".deb)
[ -f "$deb" ] || fail "no .deb in $WORK"

# Depends come from the helpers (shlibs), not by hand; but libpq5, libcurl4, libsystemd0 and
# tpm2-tss's, which the tool loads at their first use (provisioner/support/lazy_lib.h), from
# debian/control
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libssl3 libp11-kit0 libjson-c5 libsqlite3-0 libpq5 libcurl4 libsystemd0 \
    libtss2-esys libtss2-tctildr0 libtss2-rc0; do
    case "$depends" in *"$lib"*) ;; *) fail "Depends lacks $lib: $depends" ;; esac
done
# the package version is the tool's version
version=$(dpkg-deb -f "$deb" Version)
assert_eq "provisioner ${version%%-*}" "$("$PROVISIONER" --version)" \
    "debian/changelog version vs meson project version"

start=$(date +%s)
DEBIAN_FRONTEND=noninteractive "${APT[@]}" install "$deb" >install.log 2>&1 ||
    fail "apt-get install $deb: $(tail -n3 install.log | tr '\n' ' ')"
it_log "installed in $(($(date +%s) - start)) s"
assert_eq "$(pkg_status)" installed "package state after install"
dpkg -L "$PKG" >files-installed
conffiles=$(dpkg-query -W -f='${Conffiles}' "$PKG" | awk '{ print $1 }')
for f in /usr/bin/provisioner /usr/share/man/man1/provisioner.1.gz \
    /usr/share/man/man5/provisioner.cnf.5.gz /usr/share/man/man5/provisioner-manifest.5.gz \
    "$(pkg-config --variable=completionsdir bash-completion)/provisioner" \
    /usr/share/doc/provisioner/examples/provisioner.cnf /usr/share/doc/provisioner/copyright; do
    grep -qxF "$f" files-installed || fail "the package does not ship $f"
    [ -f "$f" ] || fail "$f is not installed"
done
for f in "$PROV_SOURCE_ROOT"/udev/*.rules; do
    [ -e "$f" ] || continue
    want="$(pkg-config --variable=udevdir udev)/rules.d/$(basename "$f")"
    grep -qxF "$want" files-installed || fail "the package does not ship $want"
done
for f in "$PROV_SOURCE_ROOT"/udev/*.service "$PROV_SOURCE_ROOT"/udev/*.timer; do
    [ -e "$f" ] || continue
    want="$(pkg-config --variable=systemdsystemunitdir systemd)/$(basename "$f")"
    grep -qxF "$want" files-installed || fail "the package does not ship $want"
done
getent group provisioner >/dev/null || fail "postinst did not create the provisioner group"
gid=$(getent group provisioner | cut -d: -f3)
[ "$gid" -lt 1000 ] || fail "the provisioner group is not a system group (gid $gid)"
# the station unit's User=/Group= and its only writable path
assert_eq "$(getent passwd provisioner | cut -d: -f4)" "$gid" "the provisioner user's primary group"
assert_eq "$(stat -c '%U:%G %a' /var/lib/provisioner)" "provisioner:provisioner 750" "/var/lib/provisioner"
man -w provisioner >/dev/null 2>&1 || fail "man provisioner does not find the installed page"

# The installed tool at work: a SoftHSM2 enrollment, with a config in this work dir.
PROVISIONER=/usr/bin/provisioner
prov 0 --version
assert_eq "$(cat "$PROV_OUT")" "provisioner ${version%%-*}" "installed --version"
ca_fixture
token_init dev-deb
prov 0 enroll --serial SN-DEB-1 --device pkcs11:token=dev-deb --json
assert_eq "$(jq -r .status "$PROV_OUT")" issued "enroll with the installed binary"
assert_device_identity SN-DEB-1 dev-deb devices/SN-DEB-1 ec-p256

# remove: every file gone but conffiles; the group stays until purge
DEBIAN_FRONTEND=noninteractive "${APT[@]}" remove "$PKG" >remove.log 2>&1 ||
    fail "apt-get remove: $(tail -n3 remove.log | tr '\n' ' ')"
case "$(pkg_status)" in
config-files | not-installed) ;;
*) fail "package state after remove: $(pkg_status)" ;;
esac
while read -r f; do
    [ -d "$f" ] && continue
    if [ -e "$f" ] || [ -L "$f" ]; then
        printf '%s\n' "$conffiles" | grep -qxF "$f" || fail "$f is left after apt-get remove"
    fi
done <files-installed
[ ! -e /usr/share/doc/provisioner ] || fail "/usr/share/doc/provisioner is left after remove"
if [ "$(pkg_status)" = config-files ]; then
    # what dpkg still lists ("does not contain any files" is not a path); a failing dpkg -L
    # must not read as "lists nothing"
    listed=$(dpkg -L "$PKG" 2>&1) || fail "dpkg -L $PKG failed: $listed"
    while read -r f; do
        [ -d "$f" ] && continue
        printf '%s\n' "$conffiles" | grep -qxF "$f" || fail "dpkg -L lists $f after remove"
    done < <(printf '%s\n' "$listed" | filter_lines '^/')
fi
getent group provisioner >/dev/null || fail "remove (not purge) deleted the provisioner group"

DEBIAN_FRONTEND=noninteractive "${APT[@]}" purge "$PKG" >purge.log 2>&1 ||
    fail "apt-get purge: $(tail -n3 purge.log | tr '\n' ' ')"
assert_eq "$(pkg_status)" not-installed "package state after purge"
for f in $conffiles; do
    [ ! -e "$f" ] || fail "conffile $f is left after purge"
done
! getent group provisioner >/dev/null || fail "purge left the (empty) provisioner group"
! getent passwd provisioner >/dev/null || fail "purge left the provisioner user"
[ ! -e /var/lib/provisioner ] || fail "purge left the empty /var/lib/provisioner"
it_log "built, installed, used, removed and purged $(basename "$deb")"
