//! SftpRemote against the real sshd: every Remote method, exclusivity, the non-clobbering
//! rename, hashing against sha256sum, and the failure modes (host keys, unreachable, permission,
//! stall, kill -9).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sealpush::progress::NoProgress;
use sealpush::remote::sftp::SftpRemote;
use sealpush::remote::{ConnectOptions, FileKind, NewFile, Remote, RemoteError};

use crate::support::sshd::{self, Sshd};

pub fn opts(config: &Path) -> ConnectOptions {
    ConnectOptions {
        ssh_config: Some(config.to_path_buf()),
        accept_new_host_key: false,
        connect_timeout: Duration::from_secs(10),
        op_timeout: Duration::from_secs(20),
        ..ConnectOptions::default()
    }
}

pub fn connect(sshd: &Sshd) -> SftpRemote {
    SftpRemote::connect(sshd.alias(), &opts(&sshd.config_path()))
        .unwrap_or_else(|e| panic!("connect: {e}\n--- sshd log\n{}", sshd.log()))
}

/// A fresh remote directory (the server is this machine).
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sealpush-remote-")
        .tempdir()
        .unwrap()
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn metadata_listing_and_links() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let d = scratch();
    let base = d.path();
    let awkward = std::ffi::OsStr::from_bytes("we ird\n\t\\'name -é".as_bytes());
    std::fs::write(base.join(awkward), b"hello").unwrap();
    std::fs::create_dir(base.join("sub")).unwrap();
    std::os::unix::fs::symlink("sub", base.join("link")).unwrap();
    std::os::unix::fs::symlink("nowhere", base.join("dangling")).unwrap();
    std::fs::set_permissions(base.join(awkward), std::fs::Permissions::from_mode(0o751)).unwrap();

    let m = r.lstat(&base.join(awkward)).unwrap().unwrap();
    assert_eq!((m.kind, m.mode, m.size), (FileKind::File, 0o751, 5));
    assert_eq!(
        r.lstat(&base.join("link")).unwrap().unwrap().kind,
        FileKind::Symlink
    );
    assert_eq!(
        r.stat(&base.join("link")).unwrap().unwrap().kind,
        FileKind::Dir
    );
    assert_eq!(
        r.lstat(&base.join("dangling")).unwrap().unwrap().kind,
        FileKind::Symlink
    );
    assert_eq!(r.stat(&base.join("dangling")).unwrap(), None);
    assert_eq!(r.lstat(&base.join("absent")).unwrap(), None);
    assert_eq!(
        r.read_link(&base.join("link")).unwrap(),
        PathBuf::from("sub")
    );

    let mut names: Vec<(Vec<u8>, FileKind)> = r
        .read_dir(base)
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.meta.kind))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expect = vec![
        (b"dangling".to_vec(), FileKind::Symlink),
        (b"link".to_vec(), FileKind::Symlink),
        (b"sub".to_vec(), FileKind::Dir),
        (awkward.as_bytes().to_vec(), FileKind::File),
    ];
    expect.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(names, expect);
    assert_eq!(r.read_file(&base.join(awkward), 100).unwrap(), b"hello");
    assert!(matches!(
        r.read_file(&base.join(awkward), 2),
        Err(RemoteError::Failed { .. })
    ));
    assert!(matches!(
        r.read_dir(&base.join("absent")),
        Err(RemoteError::NotFound { .. })
    ));

    // statvfs agrees with the kernel's (df).
    let st = r.statvfs(base).unwrap();
    assert!(st.total_bytes() > 0 && st.avail_bytes() <= st.total_bytes());
    let df = Command::new("stat")
        .args(["-f", "-c", "%S %b"])
        .arg(base)
        .output()
        .unwrap();
    let df = String::from_utf8(df.stdout).unwrap();
    let v: Vec<u64> = df.split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert_eq!(st.frsize * st.blocks, v[0] * v[1]);
    assert!(!st.read_only);

    let facts = r.facts().unwrap();
    assert_eq!(facts.home, "/root");
    let uname = Command::new("uname").arg("-r").output().unwrap();
    assert!(
        facts
            .kernel
            .contains(String::from_utf8_lossy(&uname.stdout).trim()),
        "{facts:?}"
    );
    assert!(
        !facts.hostname.is_empty() && !facts.os_release.is_empty(),
        "{facts:?}"
    );
}

#[test]
fn non_utf8_names_are_a_clear_error_and_the_session_survives() {
    // openssh-sftp-client serializes and decodes paths as UTF-8: sealpush must say so plainly,
    // never use a lossy name as if it were real, and keep the session usable.
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let d = scratch();
    let name = d.path().join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
    std::fs::write(&name, b"x").unwrap();
    let e = r.lstat(&name).unwrap_err();
    assert!(e.to_string().contains("not valid UTF-8"), "{e}");
    let e = r.read_dir(d.path()).unwrap_err();
    assert!(
        e.to_string().contains("not valid UTF-8") && e.to_string().contains("bad\u{fffd}name"),
        "{e}"
    );
    std::os::unix::fs::symlink(
        std::ffi::OsStr::from_bytes(b"to\xfe"),
        d.path().join("link"),
    )
    .unwrap();
    let e = r.read_link(&d.path().join("link")).unwrap_err();
    assert!(e.to_string().contains("not valid UTF-8"), "{e}");
    assert!(
        r.lstat(d.path()).unwrap().is_some(),
        "the session must survive"
    );
    std::fs::remove_file(&name).unwrap();
    std::fs::remove_file(d.path().join("link")).unwrap();
    assert_eq!(r.read_dir(d.path()).unwrap(), Vec::new());
}

#[test]
fn creates_are_exclusive_and_set_modes() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let d = scratch();
    let base = d.path();

    r.mkdir(&base.join("dir"), 0o700).unwrap();
    let md = std::fs::metadata(base.join("dir")).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.permissions().mode() & 0o7777, 0o700);
    assert!(matches!(
        r.mkdir(&base.join("dir"), 0o700),
        Err(RemoteError::Exists { .. })
    ));
    assert!(
        matches!(
            r.mkdir(&base.join("missing/dir"), 0o700),
            Err(RemoteError::NotFound { ref path, .. }) if path == &base.join("missing")
        ),
        "{:?}",
        r.mkdir(&base.join("missing/dir"), 0o700)
    );

    let data = random_bytes(600_000, 1);
    r.write_new(&base.join("f"), &data, 0o755, true).unwrap();
    assert_eq!(std::fs::read(base.join("f")).unwrap(), data);
    assert_eq!(
        std::fs::metadata(base.join("f"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    // Never through an existing name, nor through a symlink planted at the name.
    std::fs::write(base.join("victim"), b"keep").unwrap();
    std::os::unix::fs::symlink(base.join("victim"), base.join("planted")).unwrap();
    for name in ["f", "planted", "victim"] {
        assert!(
            matches!(
                r.write_new(&base.join(name), b"x", 0o644, false),
                Err(RemoteError::Exists { .. })
            ),
            "{name}"
        );
    }
    assert_eq!(std::fs::read(base.join("victim")).unwrap(), b"keep");
    std::os::unix::fs::symlink("nowhere", base.join("dangling")).unwrap();
    assert!(matches!(
        r.write_new(&base.join("dangling"), b"x", 0o644, false),
        Err(RemoteError::Exists { .. })
    ));
    assert!(!base.join("nowhere").exists());

    r.symlink(Path::new("f"), &base.join("sl")).unwrap();
    assert_eq!(
        std::fs::read_link(base.join("sl")).unwrap(),
        PathBuf::from("f")
    );
    assert!(matches!(
        r.symlink(Path::new("f"), &base.join("sl")),
        Err(RemoteError::Exists { .. })
    ));
    r.hard_link(&base.join("f"), &base.join("hl")).unwrap();
    assert_eq!(std::fs::read(base.join("hl")).unwrap(), data);
    assert!(matches!(
        r.hard_link(&base.join("f"), &base.join("victim")),
        Err(RemoteError::Exists { .. })
    ));

    // Removal.
    r.remove_file(&base.join("sl")).unwrap();
    assert!(
        base.join("f").exists(),
        "remove_file must not follow the symlink"
    );
    assert!(matches!(
        r.remove_file(&base.join("sl")),
        Err(RemoteError::NotFound { .. })
    ));
    std::fs::write(base.join("dir/x"), b"").unwrap();
    let e = r.remove_dir(&base.join("dir")).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
    std::fs::remove_file(base.join("dir/x")).unwrap();
    r.remove_dir(&base.join("dir")).unwrap();
    assert!(!base.join("dir").exists());
}

#[test]
fn put_new_files_uploads_many_files_exactly() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let src = scratch();
    let dst = scratch();
    let sizes = [0usize, 1, 4096, 261_119, 261_120, 261_121, 3_000_000];
    let mut files = Vec::new();
    for i in 0..200 {
        let n = sizes[i % sizes.len()];
        let local = src.path().join(format!("f{i}"));
        std::fs::write(&local, random_bytes(n, i as u64)).unwrap();
        files.push(NewFile {
            remote: dst.path().join(format!("f{i}")),
            local,
            len: n as u64,
            mode: if i % 2 == 0 { 0o644 } else { 0o755 },
        });
    }
    r.put_new_files(&files, true, &NoProgress).unwrap();
    for f in &files {
        assert_eq!(
            std::fs::read(&f.remote).unwrap(),
            std::fs::read(&f.local).unwrap()
        );
        assert_eq!(
            std::fs::metadata(&f.remote).unwrap().permissions().mode() & 0o7777,
            f.mode
        );
    }
    // Exclusive: a second upload of the same set fails, content unchanged.
    std::fs::write(&files[3].local, b"changed").unwrap();
    files[3].len = 7;
    assert!(matches!(
        r.put_new_files(&files[3..4], false, &NoProgress),
        Err(RemoteError::Exists { .. })
    ));
    assert_ne!(std::fs::read(&files[3].remote).unwrap(), b"changed");
}

#[test]
fn hash_files_matches_sha256sum() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let d = scratch();
    let mut paths = Vec::new();
    for (i, n) in [0usize, 1, 261_119, 261_120, 261_121, 522_240, 5_000_001]
        .iter()
        .enumerate()
    {
        let p = d.path().join(format!("f{i}"));
        std::fs::write(&p, random_bytes(*n, 100 + i as u64)).unwrap();
        paths.push(p);
    }
    std::os::unix::fs::symlink("f6", d.path().join("link")).unwrap();
    paths.push(d.path().join("link"));
    let got = r.hash_files(&paths, &NoProgress);
    for (p, g) in paths.iter().zip(&got) {
        let (digest, size) = g.as_ref().unwrap();
        assert_eq!(digest.to_hex(), sha256sum(p), "{}", p.display());
        assert_eq!(*size, std::fs::metadata(p).unwrap().len());
    }
    // Size hints (from a listing) skip the end-of-file read only when they match; a stale hint
    // (the file changed after the listing) must not change the digest.
    for delta in [0i64, -1, 1, 1000] {
        let sized: Vec<(PathBuf, u64)> = paths
            .iter()
            .map(|p| {
                let n = std::fs::metadata(p).unwrap().len() as i64;
                (p.clone(), (n + delta).max(0) as u64)
            })
            .collect();
        let got = r.hash_files_sized(&sized, &NoProgress);
        for (p, g) in paths.iter().zip(&got) {
            assert_eq!(
                g.as_ref().unwrap().0.to_hex(),
                sha256sum(p),
                "{} delta {delta}",
                p.display()
            );
        }
    }
    let bad = r.hash_files(&[d.path().join("absent"), paths[1].clone()], &NoProgress);
    assert!(matches!(bad[0], Err(RemoteError::NotFound { .. })));
    assert!(bad[1].is_ok());
}

#[test]
fn rename_noreplace_never_clobbers() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let d = scratch();
    let b = d.path();
    std::fs::create_dir(b.join("src")).unwrap();
    std::fs::write(b.join("src/payload"), b"new").unwrap();
    std::fs::write(b.join("srcfile"), b"newfile").unwrap();
    // Every kind of existing target.
    std::fs::create_dir(b.join("empty")).unwrap();
    std::fs::create_dir(b.join("full")).unwrap();
    std::fs::write(b.join("full/old"), b"old").unwrap();
    std::fs::write(b.join("file"), b"old").unwrap();
    std::os::unix::fs::symlink("file", b.join("symlink")).unwrap();
    std::os::unix::fs::symlink("nowhere", b.join("dangling")).unwrap();
    for from in ["src", "srcfile"] {
        for to in ["empty", "full", "file", "symlink", "dangling"] {
            let e = r.rename_noreplace(&b.join(from), &b.join(to)).unwrap_err();
            assert!(
                matches!(e, RemoteError::Exists { .. }),
                "{from} -> {to}: {e}"
            );
        }
    }
    assert_eq!(std::fs::read(b.join("src/payload")).unwrap(), b"new");
    assert_eq!(std::fs::read(b.join("srcfile")).unwrap(), b"newfile");
    assert_eq!(std::fs::read_dir(b.join("empty")).unwrap().count(), 0);
    assert_eq!(std::fs::read(b.join("full/old")).unwrap(), b"old");
    assert_eq!(std::fs::read(b.join("file")).unwrap(), b"old");
    assert_eq!(
        std::fs::read_link(b.join("symlink")).unwrap(),
        PathBuf::from("file")
    );
    assert_eq!(
        std::fs::read_link(b.join("dangling")).unwrap(),
        PathBuf::from("nowhere")
    );

    r.rename_noreplace(&b.join("src"), &b.join("dst")).unwrap();
    assert_eq!(std::fs::read(b.join("dst/payload")).unwrap(), b"new");
    assert!(!b.join("src").exists());
    r.rename_noreplace(&b.join("srcfile"), &b.join("dstfile"))
        .unwrap();
    assert_eq!(std::fs::read(b.join("dstfile")).unwrap(), b"newfile");
    assert!(matches!(
        r.rename_noreplace(&b.join("src"), &b.join("again")),
        Err(RemoteError::NotFound { .. })
    ));
}

#[test]
fn exec_records_output_and_status() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let out = r
        .exec("echo out; echo err >&2; printf '%s' \"it's\"; exit 3")
        .unwrap();
    assert_eq!(out.status, Some(3));
    assert_eq!(out.stdout, "out\nit's");
    assert_eq!(out.stderr, "err\n");
}

fn connect_err(sshd: &Sshd, config: &Path, alias: &str, accept_new: bool) -> String {
    let mut o = opts(config);
    o.accept_new_host_key = accept_new;
    match SftpRemote::connect(alias, &o) {
        Ok(_) => panic!("connected although it must not\n{}", sshd.log()),
        Err(e @ RemoteError::Connect { .. }) => e.to_string(),
        Err(e) => panic!("wrong error kind: {e:?}"),
    }
}

/// The fingerprint ssh-keygen computes for the server's host key (independent oracle).
fn host_fingerprint(sshd: &Sshd) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(sshd.dir().join("sshd/host_ed25519.pub"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[test]
fn unknown_host_key_is_refused_with_fingerprint_and_advice() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let c = sshd.client_with_known_hosts("unknown-key-sftp", "");
    let msg = connect_err(sshd, &c.path, &c.alias, false);
    assert!(msg.contains("not in"), "{msg}");
    assert!(msg.contains(&host_fingerprint(sshd)), "{msg}");
    assert!(msg.contains("--accept-new-host-key"), "{msg}");
    assert!(
        msg.contains(&sshd.host_key()),
        "the known_hosts line to add: {msg}"
    );
    // Nothing was recorded.
    assert_eq!(
        std::fs::read_to_string(sshd.dir().join("client/known_hosts.unknown-key-sftp")).unwrap(),
        ""
    );

    // The explicit opt-in records it, and later strict connections succeed.
    let mut o = opts(&c.path);
    o.accept_new_host_key = true;
    let r = SftpRemote::connect(&c.alias, &o).unwrap();
    assert!(r.lstat(Path::new("/")).unwrap().is_some());
    let kh =
        std::fs::read_to_string(sshd.dir().join("client/known_hosts.unknown-key-sftp")).unwrap();
    assert!(kh.contains(&sshd.host_key()), "{kh}");
    SftpRemote::connect(&c.alias, &opts(&c.path)).unwrap();
}

#[test]
fn changed_host_key_is_refused_even_with_accept_new() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let c = sshd.client_changed_key();
    let before =
        std::fs::read_to_string(sshd.dir().join("client/known_hosts.changed-key")).unwrap();
    for accept in [false, true] {
        let msg = connect_err(sshd, &c.path, &c.alias, accept);
        assert!(msg.contains("CHANGED"), "{msg}");
        assert!(msg.contains(&host_fingerprint(sshd)), "{msg}");
        assert!(msg.contains("ssh-keygen -R"), "{msg}");
    }
    let after = std::fs::read_to_string(sshd.dir().join("client/known_hosts.changed-key")).unwrap();
    assert_eq!(before, after);
}

#[test]
fn unreachable_host_is_a_clear_connect_error() {
    let sshd = crate::sshd_or_skip!(shared);
    let refused = crate::support::RefusedPort::bind();
    let port = refused.port;
    let t = Instant::now();
    let msg = connect_err(
        sshd,
        &sshd.config_path(),
        &format!("ssh://root@127.0.0.1:{port}"),
        false,
    );
    assert!(msg.contains("Connection refused"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn unprivileged_login_gets_permission_denied() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let c = sshd.client_unprivileged();
    let r = SftpRemote::connect(&c.alias, &opts(&c.path)).unwrap();
    let d = scratch(); // 0700, owned by root
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = r.mkdir(&d.path().join("x"), 0o755).unwrap_err();
    assert!(matches!(e, RemoteError::PermissionDenied { .. }), "{e:?}");
    let e = r
        .write_new(&d.path().join("y"), b"data", 0o644, false)
        .unwrap_err();
    assert!(matches!(e, RemoteError::PermissionDenied { .. }), "{e:?}");
    assert_eq!(
        r.facts().unwrap().home,
        format!("/home/{}", sshd::TEST_USER)
    );
}

#[test]
fn stalled_server_ends_in_timeout_not_a_hang() {
    let sshd = crate::sshd_or_skip!();
    // 5 s: long enough that the connect and the first lstat, which run under the same limit,
    // are not cut short on a loaded machine; the bounds below are relative to it.
    let mut o = opts(&sshd.config_path());
    o.op_timeout = Duration::from_secs(5);
    let r = SftpRemote::connect(sshd.alias(), &o).unwrap();
    assert!(r.lstat(Path::new("/")).unwrap().is_some());
    let kids = sshd::descendants(sshd.pid());
    assert!(!kids.is_empty());
    for k in &kids {
        Command::new("kill")
            .args(["-STOP", &k.to_string()])
            .status()
            .unwrap();
    }
    let t = Instant::now();
    let e = r.lstat(Path::new("/tmp")).unwrap_err();
    let took = t.elapsed();
    // Later calls fail at once instead of waiting again.
    let t2 = Instant::now();
    let e2 = r.hash_files(&[PathBuf::from("/etc/hostname")], &NoProgress);
    let took2 = t2.elapsed();
    for k in &kids {
        Command::new("kill")
            .args(["-CONT", &k.to_string()])
            .status()
            .unwrap();
    }
    // A timeout, not a hang: well under the other test timeouts, with room for a slow machine.
    assert!(matches!(e, RemoteError::Timeout { secs: 5, .. }), "{e:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    // The later call did not wait for the limit again (that would take 5 s or more).
    assert!(matches!(e2[0], Err(RemoteError::Timeout { .. })), "{e2:?}");
    assert!(took2 < Duration::from_millis(2500), "{took2:?}");
    // The drop's own waits are bounded (2 s to close, 2 s for ssh to exit).
    let t3 = Instant::now();
    drop(r);
    assert!(t3.elapsed() < Duration::from_secs(20), "drop hung");
}

/// Child half of `kill_9_leaves_no_ssh_behind`: connects, writes its ssh pid, then keeps the
/// connection busy until killed. Run only by that test (ignored otherwise).
#[test]
#[ignore = "helper process for kill_9_leaves_no_ssh_behind"]
fn helper_connect_and_hang() {
    let (Some(cfg), Some(marker)) = (
        std::env::var_os("SEALPUSH_HELPER_CONFIG"),
        std::env::var_os("SEALPUSH_HELPER_MARKER"),
    ) else {
        return;
    };
    let r = SftpRemote::connect("sealpush-test", &opts(Path::new(&cfg))).unwrap();
    // Written whole, then renamed into place: the test reads it as soon as it exists.
    let tmp = format!("{}.tmp", Path::new(&marker).display());
    std::fs::write(&tmp, r.ssh_pid().unwrap().to_string()).unwrap();
    std::fs::rename(&tmp, &marker).unwrap();
    loop {
        let _ = r.hash_files(&[PathBuf::from("/etc/hostname")], &NoProgress);
    }
}

#[test]
fn kill_9_leaves_no_ssh_behind() {
    let sshd = crate::sshd_or_skip!();
    let d = scratch();
    let marker = d.path().join("ssh.pid");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--include-ignored",
            "--exact",
            "remote::sftp::helper_connect_and_hang",
            "--nocapture",
        ])
        .env("SEALPUSH_HELPER_CONFIG", sshd.config_path())
        .env("SEALPUSH_HELPER_MARKER", &marker)
        .spawn()
        .unwrap();
    // Until the helper has connected (it renames the marker into place, whole).
    let t = Instant::now();
    let ssh_pid: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the helper exited early ({status})");
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the helper never connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let before = sshd::descendants(child.id());
    assert!(
        before.contains(&ssh_pid),
        "ssh {ssh_pid} is not a child: {before:?}"
    );
    assert!(
        !sshd::descendants(sshd.pid()).is_empty(),
        "no server session seen"
    );
    Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    // Within a few seconds: no ssh process of the dead client, no server session, no socket.
    let t = Instant::now();
    loop {
        let alive: Vec<u32> = before
            .iter()
            .copied()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| !s.contains(") Z"))
            })
            .collect();
        let sessions = sshd::descendants(sshd.pid());
        if alive.is_empty() && sessions.is_empty() {
            break;
        }
        // Generous for a loaded machine: the property is that nothing is left, not how fast.
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "left behind: client processes {:?}, server sessions {:?}",
            alive.iter().map(|p| sshd::cmdline(*p)).collect::<Vec<_>>(),
            sessions
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // No control socket anywhere ssh would put one for us.
    let out = Command::new("sh")
        .arg("-c")
        .arg("find /tmp /root/.ssh /root/.local/state -maxdepth 3 -type s -newer \"$0\" 2>/dev/null | grep -i -e ssh -e mux || true")
        .arg(sshd.config_path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

#[test]
fn bare_failures_are_diagnosed_read_only_and_full_filesystems() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let d = scratch();
    let Some(full) = crate::support::Mounted::tmpfs(&d.path().join("full"), "256k") else {
        return;
    };
    // Fill it, then any create fails for lack of space: the server only says "Failure".
    let _ = std::fs::write(full.0.join("filler"), vec![0u8; 1 << 20]);
    let e = r
        .write_new(&full.0.join("more"), &vec![1u8; 600_000], 0o644, false)
        .unwrap_err();
    assert!(e.to_string().contains("no space left"), "{e}");
    assert!(
        !full.0.join("more").exists(),
        "the partial file must be removed"
    );
    let ro = crate::support::Mounted::tmpfs(&d.path().join("ro"), "1m").unwrap();
    let st = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&ro.0)
        .status()
        .unwrap();
    assert!(st.success());
    let e = r.mkdir(&ro.0.join("x"), 0o755).unwrap_err();
    assert!(e.to_string().contains("read-only filesystem"), "{e}");
    assert!(r.statvfs(&ro.0).unwrap().read_only);
}

#[test]
fn a_remote_outlives_the_thread_that_connected_it() {
    // ssh is killed (PR_SET_PDEATHSIG) when the thread that spawned it ends: that must be a
    // thread of the SftpRemote's own, not the caller's.
    let sshd = crate::sshd_or_skip!(shared);
    let d = scratch();
    let r = std::thread::scope(|s| s.spawn(|| connect(sshd)).join().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let m = r.lstat(d.path()).unwrap().expect("scratch dir listed");
    assert_eq!(m.kind, FileKind::Dir);
}

#[test]
fn read_dirs_lists_concurrently_in_order_with_errors_in_place() {
    let sshd = crate::sshd_or_skip!(shared);
    let r = connect(sshd);
    let d = scratch();
    let mut paths = Vec::new();
    for i in 0..40 {
        let dir = d.path().join(format!("d{i:02}"));
        std::fs::create_dir(&dir).unwrap();
        for j in 0..i {
            std::fs::write(dir.join(format!("f{j}")), b"x").unwrap();
        }
        paths.push(dir);
    }
    paths.insert(7, d.path().join("missing"));
    let listed = r.read_dirs(&paths);
    assert_eq!(listed.len(), paths.len());
    for (p, res) in paths.iter().zip(&listed) {
        if p.ends_with("missing") {
            assert!(matches!(res, Err(RemoteError::NotFound { .. })), "{res:?}");
            continue;
        }
        let mut names: Vec<String> = res
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| String::from_utf8(e.name.clone()).unwrap())
            .collect();
        names.sort();
        let mut want: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        want.sort();
        assert_eq!(names, want, "{}", p.display());
    }
    // The session is still usable after the failed listing.
    assert!(r.lstat(d.path()).unwrap().is_some());
}

#[test]
fn mkdirs_creates_a_level_concurrently_and_never_through_a_planted_name() {
    let sshd = crate::sshd_or_skip!(shared);
    let r = connect(sshd);
    let d = scratch();
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let mut paths: Vec<PathBuf> = (0..50).map(|i| d.path().join(format!("d{i:02}"))).collect();
    // A symlink planted at one of the names: refused as existing, never followed.
    std::os::unix::fs::symlink(&elsewhere, &paths[20]).unwrap();
    let e = r.mkdirs(&paths, 0o755).unwrap_err();
    assert!(
        matches!(e, RemoteError::Exists { ref path, .. } if path == &paths[20]),
        "{e:?}"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    // Every other name of the level was created, with exactly the mode asked for.
    paths.remove(20);
    for p in &paths {
        let m = std::fs::symlink_metadata(p).unwrap();
        assert!(m.is_dir(), "{}", p.display());
        assert_eq!(m.permissions().mode() & 0o7777, 0o755, "{}", p.display());
    }
}

#[test]
fn remove_all_removes_children_first_concurrently_and_reports_each_entry() {
    let sshd = crate::sshd_or_skip!(shared);
    remove_all_contract(&connect(sshd));
}

#[test]
fn remove_all_contract_holds_for_the_local_transport() {
    remove_all_contract(&sealpush::remote::local::LocalRemote::new());
}

/// Entries given parents first (the transport must order them), results in input order: a
/// missing one is NotFound, a directory holding a name nobody listed stays (with that name),
/// a symlink goes without its target being touched.
fn remove_all_contract(r: &dyn Remote) {
    let d = scratch();
    let root = d.path().join("tree");
    let outside = d.path().join("outside.txt");
    std::fs::write(&outside, b"not ours").unwrap();
    let mut entries: Vec<(PathBuf, bool)> = Vec::new();
    let mut dir = root.clone();
    for depth in 0..4 {
        std::fs::create_dir(&dir).unwrap();
        entries.push((dir.clone(), true));
        for i in 0..30 {
            let f = dir.join(format!("f{depth}-{i}"));
            std::fs::write(&f, b"x").unwrap();
            entries.push((f, false));
        }
        dir = dir.join(format!("d{depth}"));
    }
    let link = root.join("link");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    entries.push((link, false));
    let keep = root.join("keep");
    std::fs::create_dir(&keep).unwrap();
    std::fs::write(keep.join("foreign"), b"someone else's").unwrap();
    entries.push((keep.clone(), true));
    let missing = root.join("missing");
    entries.insert(5, (missing.clone(), false));

    let results = r.remove_all(&entries, &NoProgress);
    assert_eq!(results.len(), entries.len());
    for ((p, _), res) in entries.iter().zip(&results) {
        if p == &missing {
            assert!(res.as_ref().is_err_and(|e| e.is_not_found()), "{res:?}");
        } else if p == &keep || p == &root {
            // Not empty: `keep` holds a foreign name, and so the root holds `keep`.
            assert!(res.is_err(), "{} removed: {res:?}", p.display());
        } else {
            assert!(res.is_ok(), "{}: {res:?}", p.display());
        }
    }
    let left: Vec<PathBuf> = crate::support::walkdir(&root);
    assert_eq!(left, vec![keep.clone(), keep.join("foreign")]);
    assert_eq!(std::fs::read(&outside).unwrap(), b"not ours");
}

#[test]
fn symlinks_are_created_concurrently_and_never_over_an_existing_name() {
    let sshd = crate::sshd_or_skip!(shared);
    let r = connect(sshd);
    let d = scratch();
    let planted = d.path().join("l17");
    std::fs::write(&planted, b"was here first").unwrap();
    let links: Vec<(PathBuf, PathBuf)> = (0..60)
        .map(|i| {
            (
                PathBuf::from(format!("../t/{i}")),
                d.path().join(format!("l{i:02}")),
            )
        })
        .collect();
    let e = r.symlinks(&links).unwrap_err();
    assert!(
        matches!(e, RemoteError::Exists { ref path, .. } if path == &planted),
        "{e:?}"
    );
    assert_eq!(std::fs::read(&planted).unwrap(), b"was here first");
    // Every other link was made, pointing exactly where asked.
    for (target, link) in links.iter().filter(|(_, l)| l != &planted) {
        assert_eq!(
            &std::fs::read_link(link).unwrap(),
            target,
            "{}",
            link.display()
        );
    }
}

#[test]
fn read_links_reads_concurrently_in_order_with_errors_in_place() {
    let sshd = crate::sshd_or_skip!(shared);
    let r = connect(sshd);
    let d = scratch();
    let mut paths: Vec<PathBuf> = Vec::new();
    for i in 0..100 {
        let link = d.path().join(format!("l{i:03}"));
        // Targets of every length class, dangling or not: read raw, never followed.
        std::os::unix::fs::symlink(format!("{}/x{i}", "../t".repeat(i % 7)), &link).unwrap();
        paths.push(link);
    }
    paths.insert(30, d.path().join("missing"));
    let read = r.read_links(&paths);
    assert_eq!(read.len(), paths.len());
    for (p, res) in paths.iter().zip(&read) {
        if p.ends_with("missing") {
            assert!(res.as_ref().is_err_and(|e| e.is_not_found()), "{res:?}");
        } else {
            assert_eq!(res.as_ref().unwrap(), &std::fs::read_link(p).unwrap());
        }
    }
    // The session is still usable after the failed read.
    assert!(r.lstat(d.path()).unwrap().is_some());
}

#[test]
fn lstats_answer_in_order_with_absent_names_as_none() {
    let sshd = crate::sshd_or_skip!(shared);
    let r = connect(sshd);
    let d = scratch();
    std::fs::write(d.path().join("f"), b"12345").unwrap();
    std::fs::create_dir(d.path().join("d")).unwrap();
    std::os::unix::fs::symlink("f", d.path().join("l")).unwrap();
    let names = ["f", "missing", "d", "l"];
    let paths: Vec<PathBuf> = names.iter().map(|n| d.path().join(n)).collect();
    let got = r.lstats(&paths);
    assert_eq!(got.len(), names.len());
    // The server is this machine: each answer is what lstat(2) says here.
    for (p, m) in paths.iter().zip(got) {
        let m = m.unwrap();
        match std::fs::symlink_metadata(p) {
            Err(_) => assert_eq!(m, None, "{}", p.display()),
            Ok(local) => {
                let m = m.unwrap_or_else(|| panic!("{} exists", p.display()));
                assert_eq!(m.size, local.len(), "{}", p.display());
                assert_eq!(m.kind == FileKind::Symlink, local.is_symlink());
                assert_eq!(m.kind == FileKind::Dir, local.is_dir());
            }
        }
    }
}

#[test]
fn files_in_flight_follow_the_round_trip() {
    let sshd = crate::sshd_or_skip!(shared);
    let near = connect(sshd);
    assert_eq!(near.files_in_flight(), 64, "loopback is near");
    assert_eq!(near.dirs_in_flight(), 32);
    // The same host through a ProxyCommand that holds every chunk 5 ms each way.
    let d = scratch();
    let config = d.path().join("config");
    let proxy = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/delay.py");
    let text = std::fs::read_to_string(sshd.config_path()).unwrap();
    let line = format!(
        "Host {}\n  ProxyCommand python3 {} 127.0.0.1 {} 5",
        sshd.alias(),
        proxy.display(),
        sshd.port()
    );
    let far = text.replacen(&format!("Host {}", sshd.alias()), &line, 1);
    assert_ne!(far, text, "the alias's Host line is in the config");
    std::fs::write(&config, far).unwrap();
    let r = SftpRemote::connect(sshd.alias(), &opts(&config))
        .unwrap_or_else(|e| panic!("connect through the delaying proxy: {e}"));
    assert_eq!(r.files_in_flight(), 256, "10 ms of round trip is far");
    assert_eq!(r.dirs_in_flight(), 256);
    // And it works: a level of 300 directories created and listed through the proxy.
    let dirs: Vec<PathBuf> = (0..300)
        .map(|i| d.path().join(format!("d{i:03}")))
        .collect();
    r.mkdirs(&dirs, 0o755).unwrap();
    for (p, listed) in dirs.iter().zip(r.read_dirs(&dirs)) {
        assert_eq!(listed.unwrap(), vec![], "{}", p.display());
        assert_eq!(
            std::fs::metadata(p).unwrap().permissions().mode() & 0o7777,
            0o755
        );
    }
    // Removed again with the far window for requests without a handle.
    let entries: Vec<(PathBuf, bool)> = dirs.iter().map(|p| (p.clone(), true)).collect();
    for res in r.remove_all(&entries, &NoProgress) {
        res.unwrap();
    }
    assert_eq!(crate::support::walkdir(d.path()), vec![config]);
}
