#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `meson install --destdir` into a temporary root: every file lands where data/meson.build
# and the pkg-config defaults say, nothing else is installed, every udev/*.rules and
# udev/*.service and *.timer in the source tree is installed (an explicit list in data/meson.build
# that a new file must be added to), and the installed binary and man pages work.
. "$PROV_SOURCE_ROOT/tests/integration/lib.sh"
it_setup
need man
root=$WORK/root

"$MESON" install -C "$PROV_BUILD_ROOT" --no-rebuild --destdir "$root" >install.log 2>&1 ||
    fail "meson install --destdir: $(tail -n3 install.log | tr '\n' ' ')"

expect=(
    "$PROV_BINDIR/provisioner"
    "$PROV_MANDIR/man1/provisioner.1"
    "$PROV_MANDIR/man5/provisioner.cnf.5"
    "$PROV_MANDIR/man5/provisioner-manifest.5"
    "$PROV_BASHCOMPDIR/provisioner"
    "$PROV_EXAMPLESDIR/provisioner.cnf"
    "$PROV_EXAMPLESDIR/root.conf"
    "$PROV_EXAMPLESDIR/tokens.table"
)
# udev/ (udev/README.md): whatever rules and units the source tree has must be installed.
ls "$PROV_SOURCE_ROOT"/udev/*.rules "$PROV_SOURCE_ROOT"/udev/*.service >/dev/null ||
    fail "udev/ has no rules or no unit"
for f in "$PROV_SOURCE_ROOT"/udev/*.rules; do
    case " $PROV_INSTALLED_UDEV_RULES " in
    *" $(basename "$f") "*) ;;
    *) fail "udev/$(basename "$f") exists but is not installed: add it to udev_rules in data/meson.build" ;;
    esac
    expect+=("$PROV_UDEVRULESDIR/$(basename "$f")")
done
for f in "$PROV_SOURCE_ROOT"/udev/*.service "$PROV_SOURCE_ROOT"/udev/*.timer; do
    case " $PROV_INSTALLED_UNITS " in
    *" $(basename "$f") "*) ;;
    *) fail "udev/$(basename "$f") exists but is not installed: add it to systemd_units in data/meson.build" ;;
    esac
    expect+=("$PROV_UNITDIR/$(basename "$f")")
done

printf '%s\n' "${expect[@]}" | sort >expected
(cd "$root" && find . -type f -o -type l) | sed 's|^\.||' | sort >installed
if ! cmp -s expected installed; then
    fail "installed files differ from the expected layout: $(diff expected installed | grep '^[<>]' | tr '\n' ' ')"
fi
assert_mode 755 "$root$PROV_BINDIR/provisioner"
for f in "${expect[@]}"; do
    [ "$f" = "$PROV_BINDIR/provisioner" ] || assert_mode 644 "$root$f"
done
# Debian's directories when pkg-config has them (the defaults of data/meson.build)
if pkg-config --exists udev; then
    assert_eq "$PROV_UDEVRULESDIR" "$(pkg-config --variable=udevdir udev)/rules.d" "udev rules directory"
fi
if pkg-config --exists systemd; then
    assert_eq "$PROV_UNITDIR" "$(pkg-config --variable=systemdsystemunitdir systemd)" "systemd unit directory"
fi

# The installed files work: the binary runs, the man pages are the built ones, the example
# config is the one in the source tree.
"$root$PROV_BINDIR/provisioner" --version >version.txt || fail "installed binary does not run"
assert_eq "$(cat version.txt)" "$("$PROVISIONER" --version)" "installed --version"
cmp -s "$root$PROV_EXAMPLESDIR/provisioner.cnf" "$PROV_SOURCE_ROOT/examples/provisioner.cnf" ||
    fail "installed example config differs from examples/provisioner.cnf"
MANPATH=$root$PROV_MANDIR MANWIDTH=80 man provisioner.cnf >man.txt 2>man.err ||
    fail "man provisioner.cnf from the installed tree: $(head -c 200 man.err)"
assert_grep man.txt 'tpm_nv_index' "installed provisioner.cnf(5)"
assert_grep man.txt 'device_table' "installed provisioner.cnf(5), [station]"
it_log "$(wc -l <installed) files installed where expected"
