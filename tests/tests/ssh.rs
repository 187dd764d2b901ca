//! OpenSSH logs in with the card's key through OpenSC's PKCS#11 module.

use e2e::{make_card, run_ok, Rig, DEADLINE, OPENSC_PKCS11};
use piv_applet::{AlgorithmId, Slot};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn ssh_login_with_the_card_key() {
    let mut rig = Rig::new();
    let card = rig.path("card.json");
    make_card(
        &card,
        AlgorithmId::Aes192,
        &[(Slot::AUTHENTICATION, AlgorithmId::Rsa2048)],
    );
    rig.insert(&card);
    let p = |n: &str| rig.path_str(n);

    // The token's public keys, as ssh-keygen reads them from the card.
    let keys = run_ok("ssh-keygen", &["-D", OPENSC_PKCS11]);
    assert!(keys.contains("ssh-rsa "), "{keys}");
    let authorized: String = keys
        .lines()
        .filter(|l| l.starts_with("ssh-"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(p("authorized_keys"), authorized).unwrap();

    run_ok(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", &p("host_key")],
    );
    let port = e2e::free_port();
    std::fs::write(
        p("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n",
            p("host_key"),
            p("authorized_keys"),
            p("sshd.pid")
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let mut sshd = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f", &p("sshd_config")])
        .stderr(std::fs::File::create(p("sshd.log")).unwrap())
        .spawn()
        .expect("sshd (apt-get install openssh-server)");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = {
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                std::fs::read_to_string(p("sshd.log")).unwrap_or_default()
            );
            if let Ok(Some(status)) = sshd.try_wait() {
                panic!(
                    "sshd exited ({status}): {}",
                    std::fs::read_to_string(p("sshd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Kill(sshd)
    };

    // The PIN is supplied by an askpass program, not a terminal.
    let askpass = p("askpass.sh");
    std::fs::write(&askpass, "#!/bin/sh\necho 123456\n").unwrap();
    std::fs::set_permissions(
        &askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-I",
            OPENSC_PKCS11,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=no",
            "-o",
            "ConnectTimeout=10",
            "-p",
            &port.to_string(),
            "root@127.0.0.1",
            "echo logged-in-with-the-card",
        ])
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(Stdio::null())
        .output()
        .expect("ssh (apt-get install openssh-client)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("logged-in-with-the-card"),
        "ssh failed: {stdout}{}\nsshd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(p("sshd.log")).unwrap_or_default()
    );
    let log = std::fs::read_to_string(p("sshd.log")).unwrap_or_default();
    assert!(log.contains("Accepted publickey for root"), "{log}");
}
