# benches/bench-sshd.sh: sourced by the benchmark scripts. Starts a private OpenSSH sshd on
# 127.0.0.1 and a free port (the recipe of tests/support/sshd.rs: own host key, client key,
# known_hosts, strict host-key checking), reachable as the alias `bench` with `ssh -F $CFG`.
#
#   start_bench_sshd DIR     sets PORT, CFG (client config) and SSHD_PID; the caller kills
#                            $SSHD_PID on exit. SAME_CIPHER, if set, goes into the client config.
start_bench_sshd() {
  local d=$1
  mkdir -p "$d/sshd" "$d/client" /run/sshd
  chmod 700 "$d/sshd" "$d/client"
  ssh-keygen -q -t ed25519 -N '' -f "$d/sshd/host_ed25519"
  ssh-keygen -q -t ed25519 -N '' -f "$d/client/id_ed25519"
  cp "$d/client/id_ed25519.pub" "$d/sshd/authorized_keys"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$d/sshd/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $d/sshd/host_ed25519
PidFile $d/sshd/sshd.pid
AuthorizedKeysFile $d/sshd/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
MaxSessions 64
MaxStartups 64:30:100
UseDNS no
LogLevel ERROR
CONF
  echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$d/sshd/host_ed25519.pub")" > "$d/client/known_hosts"
  CFG=$d/client/config
  cat > "$CFG" <<CONF
Host bench
  HostName 127.0.0.1
  Port $PORT
  User root
  IdentityFile $d/client/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $d/client/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
${SAME_CIPHER:+  Ciphers $SAME_CIPHER}
CONF
  /usr/sbin/sshd -D -f "$d/sshd/sshd_config" -E "$d/sshd/log" &
  SSHD_PID=$!
  for _ in $(seq 100); do ssh -F "$CFG" bench true 2>/dev/null && break; sleep 0.1; done
  ssh -F "$CFG" bench true
}
