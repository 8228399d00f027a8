//! Deploys over SFTP to a real OpenSSH sshd (see `tests/support/sshd.rs`).
