# Debian package checks for the VM tier: sourced by guest-test.sh after faas-checks.sh (whose
# helpers they use: invoke, field, curl_status, faas_main_pid), and run after `uninstall`, on
# a guest that `make install` and `make uninstall` have been through. The package is the one
# run.sh put in $SHARE/deb/ (its sha256 in $SHARE/expect-deb), with lintian's verdict from
# the host beside it. Each function is one check; later ones rely on the install.

DEB_DIR=$SHARE/deb
FAAS_CONFFILES="/etc/faas/faas.toml
/etc/faas/functions/hello.toml
/etc/faas/functions/hello/main.py"

# deb_path — the one .deb in the share.
deb_path() {
    local debs
    shopt -s nullglob
    debs=("$DEB_DIR"/*.deb)
    shopt -u nullglob
    ((${#debs[@]} == 1)) || { echo "expected one .deb in $DEB_DIR, found ${#debs[@]}" >&2; return 1; }
    echo "${debs[0]}"
}

# The package that run.sh shared: the same bytes, named as `make deb` names it, and the
# relations the issue asks for: Depends from the shared libraries, python3 and nodejs only
# recommended.
deb_file() {
    local deb want got name depends recommends
    deb=$(deb_path) || return 1
    want=$(cat "$SHARE/expect-deb" 2>/dev/null) || { echo "no $SHARE/expect-deb beside $deb"; return 1; }
    got=$(sha256sum "$deb" | cut -d' ' -f1)
    [[ $got == "$want" ]] || { echo "$deb has sha256 $got, run.sh shared $want"; return 1; }
    dpkg-deb --field "$deb" Package Version Architecture Depends Recommends Installed-Size
    name=faas_$(dpkg-deb --field "$deb" Version)_$(dpkg-deb --field "$deb" Architecture).deb
    [[ ${deb##*/} == "$name" ]] || { echo "named ${deb##*/}, expected $name"; return 1; }
    depends=$(dpkg-deb --field "$deb" Depends)
    recommends=$(dpkg-deb --field "$deb" Recommends)
    [[ $depends == *libc6* ]] || { echo "Depends lacks libc6 (shlibs): $depends"; return 1; }
    [[ $depends != *python* && $depends != *node* ]] || { echo "Depends requires an interpreter: $depends"; return 1; }
    [[ $recommends == "python3, nodejs" ]] || { echo "Recommends is '$recommends', expected 'python3, nodejs'"; return 1; }
}

# lintian ran on the host (run.sh): no error, by its exit code and by its tags.
deb_lintian() {
    [[ -f $DEB_DIR/lintian.rc && -f $DEB_DIR/lintian.txt ]] || { echo "run.sh left no lintian result in $DEB_DIR"; return 1; }
    local rc errors
    rc=$(cat "$DEB_DIR/lintian.rc")
    errors=$(grep -c '^E: ' "$DEB_DIR/lintian.txt")
    echo "$(head -n 1 "$DEB_DIR/lintian.version"): exit $rc, $errors error(s), $(grep -c '^W: ' "$DEB_DIR/lintian.txt") warning(s), $(grep -c '^[IPX]: ' "$DEB_DIR/lintian.txt") info/pedantic/experimental"
    grep -E '^[EWIPX]: ' "$DEB_DIR/lintian.txt"
    [[ $rc == 0 && $errors == 0 ]]
}

# apt install ./faas_*.deb, as the README says, on a host without faas: the files in place,
# exactly the three conffiles, postinst's doctor summary, the sockets enabled and listening,
# the service left to the first connection.
deb_install() {
    local deb f missing=() conffiles u doc page section rc=0
    deb=$(deb_path) || return 1
    if [[ -e /etc/systemd/system/faas.service || -e /usr/local/bin/faas ]]; then
        echo "make install's faas is still there (the uninstall check failed above)"
        return 1
    fi
    # make uninstall keeps /etc/faas on purpose; a fresh host has none (dpkg would ask about a
    # faas.toml it did not ship).
    rm -rf /etc/faas
    cp "$deb" /tmp/
    DEBIAN_FRONTEND=noninteractive apt-get install -y "/tmp/${deb##*/}" >/tmp/deb-install.log 2>&1 || rc=$?
    # postinst's own words first: what doctor found missing.
    grep -A 20 '^faas: ' /tmp/deb-install.log | grep -v '^Processing triggers'
    ((rc == 0)) || { echo "apt-get install exited $rc:"; tail -n 30 /tmp/deb-install.log; return 1; }
    [[ $(dpkg-query -W -f '${Status}' faas) == "install ok installed" ]] || { dpkg-query -W -f '${Status}\n' faas; return 1; }
    for f in /usr/bin/faas /usr/lib/faas/wrappers/python.py /usr/lib/faas/wrappers/zygote.py /usr/lib/faas/wrappers/node.js \
        /usr/lib/systemd/system/faas.service /usr/lib/systemd/system/faas.socket /usr/lib/systemd/system/faas-admin.socket \
        /etc/faas/faas.toml /etc/faas/functions/hello.toml /etc/faas/functions/hello/main.py \
        /usr/share/man/man1/faas.1.gz /usr/share/man/man1/faas-serve.1.gz /usr/share/man/man1/faas-check.1.gz \
        /usr/share/man/man1/faas-invoke.1.gz /usr/share/man/man1/faas-doctor.1.gz \
        /usr/share/man/man5/faas.toml.5.gz /usr/share/man/man5/faas-function.5.gz \
        /usr/share/bash-completion/completions/faas /usr/share/zsh/vendor-completions/_faas \
        /usr/share/fish/vendor_completions.d/faas.fish \
        /usr/share/doc/faas/copyright /usr/share/doc/faas/changelog.gz /usr/share/doc/faas/README.md.gz; do
        [[ -e $f ]] || missing+=("$f")
    done
    ((${#missing[@]} == 0)) || { echo "not installed: ${missing[*]}"; return 1; }
    conffiles=$(dpkg-query -W -f '${Conffiles}\n' faas | awk 'NF { print $1 }' | sort)
    [[ $conffiles == "$(sort <<<"$FAAS_CONFFILES")" ]] || { echo "conffiles:"; echo "$conffiles"; return 1; }
    # This guest's kernel has Landlock ABI 2; postinst ran doctor as faas.service would run
    # (Delegate=yes), so the cgroup is not what it reports missing.
    grep -q '^faas: faas doctor says' /tmp/deb-install.log || { echo "postinst printed no doctor summary"; return 1; }
    grep -Eq '^  landlock +partial' /tmp/deb-install.log || { echo "postinst's summary lacks landlock partial"; return 1; }
    ! grep -Eq '^  (cgroup|namespaces|uid|network|seccomp) +(partial|missing)' /tmp/deb-install.log || { echo "postinst reports a layer missing that faas.service has"; return 1; }
    for u in faas.socket faas-admin.socket; do
        echo "$u: $(systemctl is-enabled "$u") $(systemctl is-active "$u")"
        [[ $(systemctl is-enabled "$u") == enabled && $(systemctl is-active "$u") == active ]] || return 1
    done
    echo "faas.service: $(systemctl is-enabled faas.service) $(systemctl is-active faas.service)"
    [[ $(systemctl is-enabled faas.service) == disabled && $(systemctl is-active faas.service) == inactive ]] || return 1
    [[ $(realpath "$(systemctl show -p FragmentPath --value faas.service)") == /usr/lib/systemd/system/faas.service ]] || return 1
    systemctl show -p ExecStart --value faas.service | grep -q 'path=/usr/bin/faas ' || { systemctl show -p ExecStart faas.service; return 1; }
    # Documentation= names man pages: the package has them (man itself is not in the guest,
    # so verify does not look them up).
    # systemctl quotes each entry: "man:faas(1)" "man:faas.toml(5)" ...
    for doc in $(systemctl show -p Documentation --value faas.service | tr -d '"'); do
        page=${doc#man:}
        section=${page#*(}
        section=${section%)}
        [[ $doc == man:* && -e /usr/share/man/man$section/${page%(*}.$section.gz ]] || { echo "Documentation=$doc: no such page"; return 1; }
    done
    systemd-analyze verify --man=no /usr/lib/systemd/system/faas.service /usr/lib/systemd/system/faas.socket /usr/lib/systemd/system/faas-admin.socket || return 1
    faas check || return 1
    faas doctor | grep -E '^  wrappers: +/usr/lib/faas/wrappers \(found\)$' || { echo "doctor does not find the package's wrappers"; faas doctor | grep wrappers; return 1; }
}

# The example answers through socket activation: faas.service starts on the first request,
# from /usr/bin/faas.
deb_socket_activation() {
    local status id main exe
    [[ $(systemctl is-active faas.service) == inactive ]] || { echo "faas.service already $(systemctl is-active faas.service)"; return 1; }
    invoke hello -G --data-urlencode name=deb || return 1
    echo "GET /hello?name=deb → $status ($id): $(cat /tmp/body)"
    [[ $status == 200 ]] && grep -q '"hello": *"deb"' /tmp/body || return 1
    echo "$id" >/tmp/deb-hello-id
    main=$(faas_main_pid) || return 1
    exe=$(readlink "/proc/$main/exe")
    echo "faas.service $(systemctl is-active faas.service), pid $main, $exe"
    [[ $exe == /usr/bin/faas ]]
}

# journalctl -u faas has that request's REPORT.
deb_journal_report() {
    local id r i
    id=$(cat /tmp/deb-hello-id 2>/dev/null) || { echo "no invocation id from deb-socket-activation"; return 1; }
    for i in $(seq 50); do
        journalctl --sync
        r=$(journalctl -q -u faas -o json "FAAS_INVOCATION_ID=$id" | grep '"FAAS_OUTCOME"' | tail -n 1)
        [[ -n $r ]] && break
        sleep 0.2
    done
    [[ -n $r ]] || { echo "no REPORT for $id in journalctl -u faas"; return 1; }
    echo "MESSAGE: $(field "$r" MESSAGE)"
    [[ $(field "$r" FAAS_FUNCTION) == hello && $(field "$r" FAAS_OUTCOME) == ok && $(field "$r" FAAS_STATUS) == 200 ]] || return 1
    [[ $(field "$r" _SYSTEMD_UNIT) == faas.service ]] || { echo "_SYSTEMD_UNIT is $(field "$r" _SYSTEMD_UNIT)"; return 1; }
}

# Function names complete from the running daemon: `faas complete-functions` reads the admin
# socket's /_/functions (strace shows the 200), and the packaged bash completion offers them
# for `faas invoke`. A user who cannot reach the admin socket (mode 0600) gets the file names.
deb_completion() {
    local out names
    # std's UnixStream reads with recvfrom(2).
    out=$(strace -f -e trace=connect,read,recvfrom -s 64 -o /tmp/complete.strace faas complete-functions) || return 1
    echo "faas complete-functions: $(tr '\n' ' ' <<<"$out")"
    grep -q 'connect(.*"/run/faas/admin.sock".*) = 0' /tmp/complete.strace || { echo "did not connect to the admin socket:"; grep connect /tmp/complete.strace; return 1; }
    grep -Eq '(read|recvfrom)\(.*"HTTP/1.1 200 ' /tmp/complete.strace || { echo "no 200 from /_/functions:"; grep -E 'read|recvfrom' /tmp/complete.strace | tail -n 5; return 1; }
    [[ $out == hello ]] || return 1
    # shellcheck disable=SC2016 # expanded by the inner bash
    names=$(bash -c 'source /usr/share/bash-completion/completions/faas
        COMP_WORDS=(faas invoke he); COMP_CWORD=2
        _faas_with_function_names faas he invoke
        printf "%s\n" "${COMPREPLY[@]}"') || return 1
    echo "bash: faas invoke he<TAB> → $names"
    [[ $names == hello ]] || return 1
    out=$(setpriv --reuid=65534 --regid=65534 --clear-groups faas complete-functions 2>&1) || return 1
    echo "as nobody (no admin socket): $out"
    [[ $out == hello ]]
}

# apt remove: the service and both sockets stop, nothing listens or runs; the conffiles and
# the operator's own function stay.
deb_remove() {
    local status id u state left
    cat >/etc/faas/functions/mine.toml <<'EOF'
# The operator's own function: no package ships it.
runtime = "sh"
source = "printf 'Content-Type: text/plain\\n\\nmine\\n'"
[limits]
timeout = "60s"
EOF
    chmod 0644 /etc/faas/functions/mine.toml
    cp /etc/faas/functions/mine.toml /tmp/mine.toml.before
    invoke mine || return 1
    echo "GET /mine → $status: $(cat /tmp/body)"
    [[ $status == 200 ]] && grep -qx mine /tmp/body || return 1
    [[ $(systemctl is-active faas.service) == active ]] || { echo "faas.service is not running before the removal"; return 1; }
    DEBIAN_FRONTEND=noninteractive apt-get remove -y faas >/tmp/deb-remove.log 2>&1 || { tail -n 20 /tmp/deb-remove.log; return 1; }
    echo "status: $(dpkg-query -W -f '${Status}' faas)"
    [[ $(dpkg-query -W -f '${Status}' faas) == "deinstall ok config-files" ]] || return 1
    for u in faas.service faas.socket faas-admin.socket; do
        state=$(systemctl show -p ActiveState --value "$u")
        echo "$u: $state ($(systemctl show -p LoadState --value "$u"))"
        [[ $state == inactive ]] || return 1
    done
    left=$(systemctl list-units --all --plain --no-legend 'faas*' | grep -v '^faas-vm-test' | awk '$3 != "inactive"')
    [[ -z $left ]] || { echo "still loaded and not inactive: $left"; return 1; }
    [[ $(curl_status http://127.0.0.1:8080/hello) == 000 ]] || { echo "something still answers on 8080"; return 1; }
    ! pgrep -x faas || { echo "a faas process is left"; return 1; }
    [[ -z $(ps -eo uid= | awk '$1 >= 1879048192') ]] || { echo "sandbox processes left"; ps -eo pid,uid,comm | awk '$2 >= 1879048192'; return 1; }
    [[ ! -e /usr/bin/faas ]] || { echo "/usr/bin/faas is still there"; return 1; }
    for f in $FAAS_CONFFILES; do
        [[ -f $f ]] || { echo "apt remove removed the conffile $f"; return 1; }
    done
    cmp /tmp/mine.toml.before /etc/faas/functions/mine.toml || return 1
    echo "conffiles and mine.toml kept"
}

# apt purge: the conffiles, /run/faas, /var/lib/faas and the units' enablement go; the
# operator's function stays, and nothing else named faas is left on the system.
deb_purge() {
    local f left=() found expected
    [[ -d /run/faas ]] || { echo "/run/faas is not there before the purge: nothing to show it removes"; return 1; }
    echo "/run/faas before the purge: $(ls /run/faas | tr '\n' ' ')"
    # What a faas.toml with state_dir = "/var/lib/faas" would leave: purge removes it too.
    mkdir -p /var/lib/faas/hello && touch /var/lib/faas/hello/state
    DEBIAN_FRONTEND=noninteractive apt-get purge -y faas >/tmp/deb-purge.log 2>&1 || { tail -n 20 /tmp/deb-purge.log; return 1; }
    grep -i 'faas' /tmp/deb-purge.log | grep -v '^\(Reading\|Building\)'
    if dpkg-query -W -f '${Status}' faas >/dev/null 2>&1; then
        [[ $(dpkg-query -W -f '${Status}' faas) == "unknown ok not-installed" ]] || { echo "status: $(dpkg-query -W -f '${Status}' faas)"; return 1; }
    fi
    for f in $FAAS_CONFFILES /etc/faas/functions/hello /run/faas /var/lib/faas; do
        [[ -e $f ]] && left+=("$f")
    done
    ((${#left[@]} == 0)) || { echo "purge left: ${left[*]}"; return 1; }
    cmp /tmp/mine.toml.before /etc/faas/functions/mine.toml || { echo "purge changed or removed the operator's mine.toml"; return 1; }
    # /etc/faas holds the operator's function and the directories holding it, nothing else.
    found=$(find /etc/faas | sort)
    expected=$(printf '%s\n' /etc/faas /etc/faas/functions /etc/faas/functions/mine.toml)
    [[ $found == "$expected" ]] || { echo "in /etc/faas after the purge:"; echo "$found"; return 1; }
    # Nothing else named *faas* on the root file system or in /run, but the VM tier's own
    # (faas-vm-test.service and its runner, the image's faas-vm label and initramfs setting).
    found=$(
        find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /mnt -o -path /tmp \) -prune -o -name '*faas*' -print
        find /run -xdev -name '*faas*' -print
    )
    found=$(grep -v -e 'faas-vm' <<<"$found" | sort)
    [[ $found == /etc/faas ]] || { echo "named *faas* after the purge:"; echo "$found"; return 1; }
    echo "left: $(find /etc/faas | tr '\n' ' ')(the operator's)"
    [[ -z $(systemctl list-units --all --plain --no-legend 'faas*' | grep -v '^faas-vm-test') ]] || { systemctl list-units --all --plain --no-legend 'faas*'; return 1; }
}
