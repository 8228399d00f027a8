//! The sshd harness itself: the server answers, strict host keys hold, per-user logins work.

use crate::support::sshd;

#[test]
fn harness_server_answers_and_exec_runs() {
    let sshd = crate::sshd_or_skip!();
    assert_eq!(sshd.exec_ok("echo hello; id -u"), "hello\n0\n");
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[test]
fn harness_strict_host_keys_refuse_unknown_and_changed_keys() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let out = sshd.client_unknown_key().exec("true");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sshd.client_changed_key().exec("true");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("IDENTIFICATION HAS CHANGED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn harness_unprivileged_login_is_not_root() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let out = sshd.client_unprivileged().exec("id -un");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", sshd::TEST_USER)
    );
}

#[test]
fn harness_stop_kills_server_and_connections() {
    let sshd = crate::sshd_or_skip!();
    let pid = sshd.pid();
    // A long-lived connection: its per-connection sshd is a descendant of the listener.
    let mut conn = std::process::Command::new("ssh")
        .arg("-F")
        .arg(sshd.config_path())
        .arg(sshd.alias())
        .arg("sleep 60")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Generous: on a loaded machine (the whole suite in parallel on 2 cores) the per-connection
    // sshd can take seconds to appear.
    let t = std::time::Instant::now();
    // The readiness probe's connection also forks a short-lived child: wait for the session.
    let session = || {
        sshd::descendants(pid)
            .into_iter()
            .any(|p| sshd::cmdline(p).contains("root@"))
    };
    while !session() && t.elapsed().as_secs() < 60 {
        if let Ok(Some(status)) = conn.try_wait() {
            panic!("the ssh client exited early ({status})\n{}", sshd.log());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kids = sshd::descendants(pid);
    assert!(!kids.is_empty(), "no per-connection sshd seen");
    // "pid (comm) state ppid ... starttime ...": the state and the start time (field 22, which
    // tells a reused pid from the process we saw), after the last ')'.
    let stat = |k: u32| -> Option<(String, String)> {
        let text = std::fs::read_to_string(format!("/proc/{k}/stat")).ok()?;
        let rest: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
        Some((rest.first()?.to_string(), rest.get(19)?.to_string()))
    };
    let procs: Vec<(u32, String)> = kids
        .iter()
        .chain([&pid])
        .filter_map(|&k| stat(k).map(|(_, start)| (k, start)))
        .collect();
    drop(sshd);
    // SIGKILL is delivered asynchronously: a loaded machine may take a while to run the exits,
    // so wait for them (a survivor still fails, after a generous minute).
    let alive =
        |(k, start): &(u32, String)| stat(*k).is_some_and(|(state, s)| &s == start && state != "Z");
    let t = std::time::Instant::now();
    while procs.iter().any(alive) && t.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for p in &procs {
        assert!(
            !alive(p),
            "sshd process {} survived: {}",
            p.0,
            std::fs::read_to_string(format!("/proc/{}/stat", p.0)).unwrap_or_default()
        );
    }
    let _ = conn.wait();
}
