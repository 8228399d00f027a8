//! Integration tests for the SFTP transport and preflight, against a real OpenSSH sshd
//! (`support::sshd`). Remote paths are fresh temp dirs under /tmp: the server runs here.

mod harness;
mod preflight;
mod sftp;
