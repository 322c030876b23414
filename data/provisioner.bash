# SPDX-License-Identifier: Apache-2.0
# bash completion for provisioner(1).
#
# Commands, subcommands and options come from the binary being completed
# (`provisioner --list-options`: the getopt tables its parsers use), key types from
# `provisioner enroll --help`, profile names from the [profile_NAME] sections of the config
# (--config, $PROVISIONER_CONFIG, ./provisioner.cnf). Nothing is listed here by hand, so a
# new command or option completes as soon as the binary has it. Needs no bash-completion
# helpers.

# _provisioner_profiles FILE: "device" and every [profile_NAME] in FILE.
_provisioner_profiles() {
    {
        echo device
        [ -r "$1" ] &&
            sed -n 's/^[[:space:]]*\[[[:space:]]*profile_\([A-Za-z0-9_.-]*\)[[:space:]]*\].*/\1/p' "$1"
    } | sort -u
}

_provisioner() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=""
    local prog=${COMP_WORDS[0]} table w i cmd="" sub="" set config="" opts line
    local -a names=()

    [ "$COMP_CWORD" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD - 1]}
    table=$(command "$prog" --list-options 2>/dev/null) || return 0
    while IFS=$'\t' read -r w _; do
        names+=("$w")
    done <<<"$table"

    # The command, its subcommand (when it has one by that name) and --config, from the
    # words before the cursor.
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case "$w" in
        --config | -c)
            [ -z "$cmd" ] && config=${COMP_WORDS[i + 1]:-}
            i=$((i + 1))
            continue
            ;;
        --config=*) [ -z "$cmd" ] && config=${w#--config=} ;;
        -*) ;;
        *)
            if [ -z "$cmd" ]; then
                cmd=$w
            elif [ -z "$sub" ]; then
                for line in "${names[@]}"; do
                    [ "$line" = "$cmd $w" ] && sub=$w
                done
                [ -n "$sub" ] || sub=-
            fi
            ;;
        esac
    done
    [ -n "$config" ] || config=${PROVISIONER_CONFIG:-provisioner.cnf}

    # The option table in force: "global" before the command, then "cmd sub" or "cmd".
    set=global
    if [ -n "$cmd" ]; then
        set=$cmd
        [ -n "$sub" ] && [ "$sub" != - ] && set="$cmd $sub"
    fi
    opts=$(awk -F '\t' -v s="$set" '$1 == s { print $2 }' <<<"$table")

    # The value of an option that takes one ("--opt=" in the table).
    case " $opts " in
    *" $prev= "*)
        case "$prev" in
        --key)
            COMPREPLY=($(compgen -W "$(command "$prog" enroll --help 2>/dev/null |
                sed -n 's/^ *--key TYPE *//p' | grep -oE '[a-z]+-[a-z0-9]+')" -- "$cur"))
            ;;
        --profile) COMPREPLY=($(compgen -W "$(_provisioner_profiles "$config")" -- "$cur")) ;;
        --purpose) COMPREPLY=($(compgen -W "client server any" -- "$cur")) ;;
        --format) COMPREPLY=($(compgen -W "aws azure-dps edge csv json record" -- "$cur")) ;;
        --state) COMPREPLY=($(compgen -W "issued stored proven failed all" -- "$cur")) ;;
        --pin) COMPREPLY=($(compgen -W "file: env: fd: prompt" -- "$cur")) ;;
        --device) COMPREPLY=($(compgen -W "pkcs11: tpm2:device: tpm2:swtpm: tpm2:tabrmd:" -- "$cur")) ;;
        --reason)
            COMPREPLY=($(compgen -W "unspecified keyCompromise affiliationChanged superseded
                cessationOfOperation privilegeWithdrawn" -- "$cur"))
            ;;
        --jobs | --serial | --cn | --san-* | --cert-serial | --invalidity-date | --by) COMPREPLY=() ;;
        --storage) COMPREPLY=($(compgen -d -- "$cur")) ;;
        *)
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -f -- "$cur"))
            ;;
        esac
        return 0
        ;;
    esac

    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$(tr ' ' '\n' <<<"$opts" | sed 's/=$//')" -- "$cur"))
        return 0
    fi
    if [ -z "$cmd" ]; then
        COMPREPLY=($(compgen -W "$(printf '%s\n' "${names[@]}" | grep -v '^global$' |
            cut -d' ' -f1 | sort -u)" -- "$cur"))
        return 0
    fi
    if [ -z "$sub" ]; then
        COMPREPLY=($(compgen -W "$(printf '%s\n' "${names[@]}" |
            sed -n "s/^$cmd \\(.*\\)/\\1/p")" -- "$cur"))
        # batch takes a manifest where other commands take a subcommand
        [ "$cmd" = batch ] || [ ${#COMPREPLY[@]} -eq 0 ] || return 0
    fi
    compopt -o filenames 2>/dev/null
    COMPREPLY+=($(compgen -f -- "$cur"))
    return 0
}

complete -F _provisioner provisioner
