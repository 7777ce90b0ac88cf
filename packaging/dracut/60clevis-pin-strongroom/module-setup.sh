#!/bin/bash
# dracut module: the Clevis pin 'strongroom' in the initramfs, with the agent (its virtual
# environment and Python), the enrolled agent's state directory, the CA bundle for the gateway's
# TLS, and network at boot (rd.neednet=1). Settings: /etc/strongroom-agent/initramfs.conf.
# Install as /usr/lib/dracut/modules.d/60clevis-pin-strongroom/, then run: dracut -f
#
# Security: the initramfs then holds the device key. Keep /boot readable by root only and the
# image encrypted or measured; better, seal the device key to the TPM (see README).

_strongroom_conf() {
    STRONGROOM_AGENT_VENV=/opt/strongroom-agent
    STRONGROOM_AGENT_HOME=/etc/strongroom-agent/state
    STRONGROOM_AGENT_CA=/etc/ssl/certs/ca-certificates.crt
    STRONGROOM_AGENT_FACTS_FILE=
    # shellcheck source=/dev/null
    [ -r /etc/strongroom-agent/initramfs.conf ] && . /etc/strongroom-agent/initramfs.conf
    return 0
}

check() {
    _strongroom_conf
    [ -x "$STRONGROOM_AGENT_VENV/bin/strongroom-agent" ] || return 1
    [ -r "$STRONGROOM_AGENT_HOME/identity.json" ] || return 1
    return 0
}

depends() {
    echo clevis network
    return 0
}

install() {
    _strongroom_conf
    local agent="$STRONGROOM_AGENT_VENV/bin/strongroom-agent"
    local python stdlib lib action pin
    python="$(readlink -f "$STRONGROOM_AGENT_VENV/bin/python3")"
    stdlib="$("$python" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"

    inst_binary "$python"
    mkdir -p "${initdir}$(dirname "$stdlib")" "${initdir}$(dirname "$STRONGROOM_AGENT_VENV")"
    cp -a "$stdlib" "${initdir}$stdlib"
    cp -a "$STRONGROOM_AGENT_VENV" "${initdir}$STRONGROOM_AGENT_VENV"
    # Extension modules (cryptography's Rust library, OpenSSL for ssl) bring their shared libraries.
    find "$stdlib/lib-dynload" "$STRONGROOM_AGENT_VENV" -name '*.so*' -type f | while read -r lib; do
        inst_library "$lib"
    done

    mkdir -p "${initdir}$(dirname "$STRONGROOM_AGENT_HOME")"
    cp -a "$STRONGROOM_AGENT_HOME" "${initdir}$STRONGROOM_AGENT_HOME"
    chmod 0700 "${initdir}$STRONGROOM_AGENT_HOME"
    chmod 0600 "${initdir}$STRONGROOM_AGENT_HOME/device.key"
    inst_simple "$STRONGROOM_AGENT_CA" /etc/ssl/certs/ca-certificates.crt
    [ -n "$STRONGROOM_AGENT_FACTS_FILE" ] && inst_simple "$STRONGROOM_AGENT_FACTS_FILE"

    for action in encrypt decrypt; do
        pin="${initdir}/usr/bin/clevis-$action-strongroom"
        mkdir -p "${initdir}/usr/bin"
        {
            echo '#!/bin/sh'
            echo "export STRONGROOM_AGENT_HOME='$STRONGROOM_AGENT_HOME'"
            echo "export SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
            [ -n "$STRONGROOM_AGENT_FACTS_FILE" ] && echo "export STRONGROOM_AGENT_FACTS_FILE='$STRONGROOM_AGENT_FACTS_FILE'"
            echo "exec '$agent' clevis $action \"\$@\""
        } > "$pin"
        chmod 0755 "$pin"
    done

    # The key is asked for over the network: have dracut bring it up before cryptsetup runs.
    mkdir -p "${initdir}/etc/cmdline.d"
    echo "rd.neednet=1" > "${initdir}/etc/cmdline.d/99clevis-pin-strongroom.conf"
}
