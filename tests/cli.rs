//! The admin CLI end to end: the built binary on a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Workdir;

fn initialised() -> Workdir {
    let w = Workdir::new();
    w.run(&["init"]).ok();
    w
}

#[test]
fn init_creates_private_files_and_prints_a_token_once() {
    let w = Workdir::new();
    let first = w.run(&["init"]).ok();
    // Standard output is not a terminal: the token alone on it, for `TOKEN=$(vportal init)`;
    // what goes with it on standard error.
    let token_line = first.stdout.strip_suffix('\n').expect("one line");
    assert!(
        token_line.starts_with("vpt_") && !token_line.contains('\n'),
        "{}",
        first.stdout
    );
    assert_eq!(token_line.len(), 68);
    for says in [
        "Created vportal.db and its pepper file vportal.pepper.",
        "Admin API token \"admin\" (shown only this once) written to standard output.",
        "Next: add a mailbox, e.g. `vportal user add 1001 --generate`.",
    ] {
        assert!(first.stderr.contains(says), "{}", first.stderr);
    }
    assert!(!first.stderr.contains("vpt_"), "{}", first.stderr);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["vportal.db", "vportal.pepper"] {
            let mode = std::fs::metadata(w.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    // Piped, as here: nothing on standard output that a script could take for a token.
    let again = w.run(&["init"]).ok();
    assert_eq!(again.stdout, "");
    assert!(
        again.stderr.contains("already initialised"),
        "{}",
        again.stderr
    );
    assert!(!again.stderr.contains("vpt_"));
    let tokens = w.run(&["token", "list", "--json"]).ok().json();
    assert_eq!(tokens[0]["name"], "admin");
    assert!(!tokens.to_string().contains(&token_line[4..]));
}

#[test]
fn a_refused_first_run_creates_nothing() {
    let w = Workdir::new();
    // A bad token name: refused before the database and pepper exist.
    let r = w.run(&["init", "--token-name", "x y"]);
    r.refused("token name");
    assert!(!w.db().exists() && !w.path().join("vportal.pepper").exists());
    // `serve` with no prompts to play: refused before the database, and its token, are made.
    let serve_with_prompts = |folder: &str| {
        w.run(&[
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--no-admin",
            "--prompts",
            folder,
        ])
    };
    let r = serve_with_prompts("missing");
    r.refused("the prompts folder missing");
    assert!(!r.stdout.contains("vpt_"), "{}", r.stdout);
    assert!(!w.db().exists() && !w.path().join("vportal.pepper").exists());
    // A prompt file no decoder reads: one error naming it, not the decoder's own log line.
    let broken = w.path().join("broken");
    std::fs::create_dir_all(broken.join("en")).unwrap();
    let en = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/en");
    for entry in std::fs::read_dir(en).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), broken.join("en").join(entry.file_name())).unwrap();
    }
    std::fs::write(broken.join("en/welcome.wav"), [0x5a_u8; 100]).unwrap();
    let r = serve_with_prompts("broken");
    r.refused("cannot decode broken/en/welcome.wav (prompt `welcome`");
    assert!(!r.stderr.contains("symphonia"), "{}", r.stderr);
    assert!(!w.db().exists());
    // A route's language without prompts: the error says where the dialplan sets it.
    std::fs::write(
        w.path().join("plan.toml"),
        "[[route]]\nmatch = \"8500\"\napplication = \"voice-portal\"\n\n\
         [[route]]\nmatch = \"8501\"\napplication = \"voice-portal\"\nlanguage = \"xx\"\n",
    )
    .unwrap();
    std::fs::write(
        w.path().join("plan-config.toml"),
        "[dialplan]\nfile = \"plan.toml\"\n",
    )
    .unwrap();
    let r = w.run(&[
        "--config",
        "plan-config.toml",
        "serve",
        "--sip",
        "127.0.0.1:0",
        "--no-admin",
        "--prompts",
        concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("plan.toml, line 8, key route[2].language"),
        "{}",
        r.stderr
    );
    assert!(!w.db().exists());
    // Nor is it made when an address is in use or cannot work (a wildcard SIP address
    // without the public one; the admin side-port off loopback without TLS).
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken_tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (udp_in_use, tcp_in_use) = (
        taken.local_addr().unwrap().to_string(),
        taken_tcp.local_addr().unwrap().to_string(),
    );
    let prompts = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts");
    for (args, says) in [
        (&["--sip", udp_in_use.as_str(), "--no-admin"][..], "udp"),
        (
            &["--sip", "127.0.0.1:0", "--admin", tcp_in_use.as_str()],
            "admin",
        ),
        (&["--sip", "0.0.0.0:0", "--no-admin"], "public_address"),
        (&["--sip", "127.0.0.1:0", "--admin", "0.0.0.0:0"], "TLS"),
    ] {
        let mut all = vec!["serve", "--prompts", prompts];
        all.extend_from_slice(args);
        let r = w.run(&all);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(!r.stdout.contains("vpt_"), "{}", r.stdout);
        assert!(
            !w.db().exists() && !w.path().join("vportal.pepper").exists(),
            "{args:?}"
        );
    }
    // The same init with a good name then works as a first run.
    let r = w.run(&["init", "--token-name", "provisioning"]).ok();
    assert!(r.stdout.contains("vpt_"), "{}", r.stdout);
}

/// `command` run by a shell in `w` on a pseudo-terminal (`script`, util-linux), without the
/// vportal variables of the test's environment: the child, its stdin the terminal's keys,
/// and what the terminal shows, chunk by chunk.
fn on_a_terminal(
    w: &Workdir,
    command: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<Vec<u8>>) {
    use std::io::Read;
    let mut script = std::process::Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .current_dir(w.path())
        .env_remove("VPORTAL_PEPPER")
        .env_remove("VPORTAL_DB")
        .env_remove("VPORTAL_CONFIG")
        .env_remove("VPORTAL_ADMIN_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut out = script.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0_u8; 1024];
        while let Ok(n @ 1..) = out.read(&mut buf) {
            let _ = tx.send(buf[..n].to_vec());
        }
    });
    (script, rx)
}

/// `serve`'s first run shows the admin token it makes on a terminal (`server_sip`'s first
/// run checks that a pipe, a service's log, gets none). Run on a pseudo-terminal by `script`.
#[test]
fn a_first_run_on_a_terminal_shows_its_admin_token_once() {
    use std::io::Write;
    let w = Workdir::new();
    let vportal = env!("CARGO_BIN_EXE_vportal");
    let prompts = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts");
    let serve = format!(
        "{vportal} serve --sip 127.0.0.1:0 --no-admin --rtp-ports 47100-47198 --prompts {prompts}"
    );
    let (mut script, rx) = on_a_terminal(&w, &serve);
    let mut seen = Vec::new();
    let mut stopped = false;
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(20)) {
        seen.extend_from_slice(&chunk);
        // (The log is coloured on a terminal: `sip=` is split by escapes.)
        if !stopped && String::from_utf8_lossy(&seen).contains("vportal is listening") {
            // Ctrl-C, as the terminal sends it, stops the server.
            script.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
            stopped = true;
        }
    }
    // In case it outlived the ctrl-c by 20 s.
    let _ = script.kill();
    let _ = script.wait();
    let seen = String::from_utf8_lossy(&seen);
    assert!(stopped, "never listened: {seen}");
    assert_eq!(seen.matches("vpt_").count(), 1, "{seen}");
    assert!(
        seen.contains("Admin API token \"admin\" (shown only this once): vpt_"),
        "{seen}"
    );
    assert!(w.db().exists());
    let tokens = w.run(&["token", "list"]).ok();
    assert!(tokens.stdout.contains("admin"), "{}", tokens.stdout);
}

/// On a terminal `init` tells, on standard output, what it made around the token, as it
/// always did; piped, its standard output is the token alone (see
/// `init_creates_private_files_and_prints_a_token_once`). Run on a pseudo-terminal by
/// `script`, standard error sent elsewhere.
#[test]
fn init_on_a_terminal_shows_the_token_among_what_it_made() {
    let w = Workdir::new();
    let vportal = env!("CARGO_BIN_EXE_vportal");
    let (mut script, rx) =
        on_a_terminal(&w, &format!("{vportal} init 2>/dev/null; echo status=$?"));
    let mut seen = Vec::new();
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(20)) {
        seen.extend_from_slice(&chunk);
        if String::from_utf8_lossy(&seen).contains("status=") {
            break;
        }
    }
    let _ = script.kill();
    let _ = script.wait();
    let seen = String::from_utf8_lossy(&seen).replace("\r\n", "\n");
    assert!(seen.contains("status=0"), "{seen}");
    let token = common::token_from(&seen);
    assert_eq!(token.len(), 68, "{seen}");
    assert!(
        seen.contains(&format!(
            "Created vportal.db and its pepper file vportal.pepper.\n\
             Keep the pepper file safe and backed up with the database: without it no \
             passcode can be checked.\n\n\
             Admin API token \"admin\" (shown only this once):\n{token}\n\n\
             Next: add a mailbox, e.g. `vportal user add 1001 --generate`.\n"
        )),
        "{seen}"
    );
    assert_eq!(seen.matches("vpt_").count(), 1, "{seen}");
}

#[test]
fn a_first_run_that_fails_midway_removes_what_it_made() {
    // The pepper fails after the database's directories were made.
    let mut w = Workdir::new();
    w.env.push(("VPORTAL_PEPPER".to_owned(), "not hex".into()));
    let r = w.run(&["--db", "new/sub/portal.db", "init"]);
    r.refused("VPORTAL_PEPPER");
    assert!(!w.path().join("new").exists());
    // A directory that was there already stays.
    std::fs::create_dir(w.path().join("kept")).unwrap();
    let r = w.run(&["--db", "kept/new/portal.db", "init"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(w.path().join("kept").is_dir() && !w.path().join("kept/new").exists());

    // The database fails to open after its pepper file was made: a link to a file in a
    // directory that does not exist (SQLite follows it; root could write anywhere else).
    let w = Workdir::new();
    std::os::unix::fs::symlink("missing/dir/portal.db", w.path().join("portal.db")).unwrap();
    let r = w.run(&["--db", "portal.db", "init"]);
    r.refused("opening portal.db");
    assert!(!r.stdout.contains("vpt_"), "{}", r.stdout);
    assert!(
        !w.path().join("portal.pepper").exists(),
        "the next first run would adopt this pepper file as the operator's"
    );
    // Nor the pepper file's own directories.
    w.write_config(
        "[store]\ndatabase = \"portal.db\"\npepper_file = \"secrets/new/portal.pepper\"\n",
    );
    let r = w.run(&["--config", "c.toml", "init"]);
    r.refused("opening portal.db");
    assert!(!w.path().join("secrets").exists());
}

/// A first run makes the pepper file's directory as it makes the database's.
#[test]
fn a_first_run_makes_the_pepper_files_directory() {
    let w = Workdir::new();
    w.write_config("[store]\ndatabase = \"data/v.db\"\npepper_file = \"secrets/keys/v.pepper\"\n");
    w.run(&["--config", "c.toml", "init"]).ok();
    assert!(w.path().join("data/v.db").is_file());
    assert!(w.path().join("secrets/keys/v.pepper").is_file());
    w.run(&["--config", "c.toml", "user", "list"]).ok();
}

#[test]
fn lifetimes_and_limits_out_of_range_are_refused_not_bent() {
    let w = initialised();
    let add = |args: &[&str]| {
        let mut all = vec!["user", "add", "1001"];
        all.extend_from_slice(args);
        w.run_with_stdin(&all, "4826\n")
    };
    for args in [
        &["--generate", "--ttl", "0s"][..],
        &["--generate", "--ttl", "366d"],
        // A lifetime for a passcode that does not expire, or for no passcode at all.
        &["--passcode-stdin", "--ttl", "20m"],
        &["--ttl", "20m"],
    ] {
        let r = add(args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        if !args.contains(&"--generate") {
            assert!(
                r.stderr.contains(
                    "--ttl is the lifetime of a temporary passcode: give it with --generate, \
                     or with --passcode-stdin --temporary"
                ),
                "{args:?}: {}",
                r.stderr
            );
        }
    }
    assert!(
        add(&["--generate", "--ttl", "366d"])
            .stderr
            .contains("1 to 31536000 seconds")
    );
    assert!(
        w.run(&["user", "list", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    add(&["--passcode-stdin", "--temporary", "--ttl", "365d"]).ok();
    assert_eq!(
        w.run(&["user", "set-temp", "1001", "--ttl", "400d"]).code,
        2
    );
    let r = w.run(&["policy", "set", "temporary_ttl_seconds", "400d"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("temporary_ttl_seconds: must be 1 to 31536000"),
        "{}",
        r.stderr
    );
    for limit in ["0", "10001"] {
        assert_eq!(
            w.run(&["audit", "--limit", limit]).code,
            2,
            "--limit {limit}"
        );
    }
    let one = w.run(&["audit", "--limit", "1", "--json"]).ok().json();
    assert_eq!(one.as_array().unwrap().len(), 1);
}

/// A pepper file another user owns is refused (like ssh's keys): one planted beside a
/// database about to be created, in a directory others may write, would be taken as the
/// new database's pepper, known to that user, who could also remove it. One owned by the
/// database's owner is taken: root (or an admin) running the CLI on the service's files.
/// (The tests run as root, which may give files away.)
#[test]
fn a_pepper_file_another_user_owns_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    const NOBODY: u32 = 65_534;
    let w = Workdir::new();
    let pepper = w.path().join("vportal.pepper");
    std::fs::write(&pepper, format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&pepper, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&pepper, Some(NOBODY), Some(NOBODY)).unwrap();
    w.run(&["init"])
        .refused("pepper file vportal.pepper belongs to user id 65534");
    assert!(!w.db().exists(), "no database made with it");
    // The service's own files, the database and its pepper, are taken by root's CLI.
    std::fs::remove_file(&pepper).unwrap();
    w.run(&["init"]).ok();
    std::os::unix::fs::chown(&pepper, Some(NOBODY), Some(NOBODY)).unwrap();
    w.run(&["user", "list"])
        .refused("pepper file vportal.pepper belongs to user id 65534");
    std::os::unix::fs::chown(w.db(), Some(NOBODY), Some(NOBODY)).unwrap();
    w.run(&["user", "list"]).ok();
}

#[test]
fn a_database_whose_pepper_is_gone_asks_for_the_pepper_not_init() {
    let w = initialised();
    std::fs::remove_file(w.path().join("vportal.pepper")).unwrap();
    for args in [&["user", "list"][..], &["init"]] {
        let r = w.run(args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains("restore the pepper file"), "{}", r.stderr);
        assert!(!r.stderr.contains("run `vportal init`"), "{}", r.stderr);
    }
    // Nothing was made in its place.
    assert!(!w.path().join("vportal.pepper").exists());
}

/// A database on a file system mounted read-only (a read-only volume, a snapshot mounted to
/// look at): said to be read-only, with what to check, by every command and `serve`; SQLite
/// alone says "unable to open database file". (`unshare -m` gives the command a mount of
/// its own: the tests run as root.)
#[test]
fn a_database_on_a_read_only_mount_is_said_to_be_read_only() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let dir = w.path().to_str().unwrap();
    let on_read_only_mount = |args: &[&str]| {
        let vportal = w.command(args);
        let quoted: Vec<String> = vportal
            .get_args()
            .map(|a| format!("'{}'", a.to_str().unwrap()))
            .collect();
        let script = format!(
            "mount --bind '{dir}' '{dir}' && mount -o remount,bind,ro '{dir}' && cd '{dir}' && exec '{}' {}",
            env!("CARGO_BIN_EXE_vportal"),
            quoted.join(" ")
        );
        let out = std::process::Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .current_dir(w.path())
            .env_remove("VPORTAL_PEPPER")
            .env_remove("VPORTAL_CONFIG")
            .env_remove("VPORTAL_DB")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("unshare");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for args in [
        &["user", "list"][..],
        &["user", "unlock", "1001"],
        &[
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--no-admin",
            "--rtp-ports",
            "47860-47869",
        ],
    ] {
        let (code, stderr) = on_read_only_mount(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("the database is read-only: check the mode and owner")
                && stderr.contains("mounted read-write"),
            "{args:?}: {stderr}"
        );
    }
    // The same commands on the file system as it is work.
    w.run(&["user", "unlock", "1001"]).ok();
}

/// A database file this process may only read (restored from a backup as 0400, another
/// owner): it can be read, a write says why it fails, and `serve` refuses to start rather
/// than fail every login. (The tests run as root: without CAP_DAC_OVERRIDE the mode
/// applies.)
#[test]
fn a_read_only_database_is_read_and_said_to_be_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    std::fs::set_permissions(w.db(), std::fs::Permissions::from_mode(0o400)).unwrap();
    let as_owner = |args: &[&str]| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args([
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
            "--",
            env!("CARGO_BIN_EXE_vportal"),
        ]);
        let vportal = w.command(args);
        cmd.args(vportal.get_args())
            .current_dir(w.path())
            .env_remove("VPORTAL_PEPPER")
            .env_remove("VPORTAL_CONFIG")
            .env_remove("VPORTAL_DB")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null());
        let out = cmd.output().expect("setpriv");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = as_owner(&["user", "list"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("1001"), "{stdout}");
    let (code, _, stderr) = as_owner(&["user", "unlock", "1001"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("the database is read-only"), "{stderr}");
    let (code, _, stderr) = as_owner(&[
        "serve",
        "--sip",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--rtp-ports",
        "47730-47739",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("vportal.db is read-only to this process"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}

/// A stored policy this build cannot read (a newer vportal's setting after a rollback, a
/// hand edit): said on one line, `serve` refuses to start rather than fail every login, and
/// `policy reset` mends it.
#[test]
fn an_unreadable_stored_policy_is_refused_at_start_and_reset() {
    let w = initialised();
    let db = rusqlite::Connection::open(w.db()).unwrap();
    db.execute(
        "INSERT OR REPLACE INTO settings (key, value) VALUES ('policy', ?1)",
        ["min_length = 4\nmax_length = 10\nreject_keyboard_patterns = true\n"],
    )
    .unwrap();
    drop(db);
    let shown = w.run(&["policy", "show"]);
    assert_eq!(shown.code, 2, "{shown:?}");
    assert_eq!(shown.stderr.trim().lines().count(), 1, "{}", shown.stderr);
    assert!(
        shown.stderr.contains("line 3") && shown.stderr.contains("reject_keyboard_patterns"),
        "{}",
        shown.stderr
    );
    // Every policy command says how to mend it, as `serve` does.
    assert!(
        shown.stderr.contains("run `vportal policy reset`"),
        "{}",
        shown.stderr
    );
    let set = w.run(&["policy", "set", "min_length", "6"]);
    assert_eq!(set.code, 2);
    assert!(
        set.stderr.contains("run `vportal policy reset`"),
        "{}",
        set.stderr
    );
    let serve = w.run(&["serve", "--sip", "127.0.0.1:0", "--no-admin"]);
    assert_eq!(serve.code, 2, "{serve:?}");
    assert!(
        serve.stderr.contains("vportal policy reset"),
        "{}",
        serve.stderr
    );
    w.run(&["policy", "reset"]).ok();
    w.run(&["policy", "set", "min_length", "6"]).ok();
    let policy = w.run(&["--json", "policy", "show"]).ok().json();
    assert_eq!(policy["min_length"], 6);
    let audit = w
        .run(&["--json", "audit", "--event", "policy.changed"])
        .ok()
        .json();
    let details: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("could not be read")),
        "{audit}"
    );
}

/// `vportal backup` writes a copy that opens with the pepper, and never over a file.
#[test]
fn a_backup_opens_with_the_pepper_and_writes_over_nothing() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let made = w.run(&["backup", "copy.db"]).ok();
    assert!(made.stdout.contains("vportal.pepper"), "{}", made.stdout);
    // Restored beside its pepper (`copy.db`'s default pepper file is `copy.pepper`).
    std::fs::copy(
        w.path().join("vportal.pepper"),
        w.path().join("copy.pepper"),
    )
    .unwrap();
    let shown = w
        .run(&["--db", "copy.db", "--json", "user", "show", "1001"])
        .ok()
        .json();
    assert_eq!(shown["extension"], "1001");
    let again = w.run(&["backup", "copy.db"]);
    again.refused("copy.db");
}

/// `serve` makes a database on its first run only in a directory that is there: one that is
/// not (a volume not mounted yet, a typo) is said, and nothing is made; `init` makes both.
#[test]
fn serve_makes_no_directory_for_a_first_run() {
    let w = Workdir::new();
    let serve = w.run(&[
        "--db",
        "data/vportal.db",
        "serve",
        "--sip",
        "127.0.0.1:0",
        "--no-admin",
    ]);
    assert_eq!(serve.code, 2, "{serve:?}");
    assert!(
        serve.stderr.contains("no directory data") && serve.stderr.contains("mounted"),
        "{}",
        serve.stderr
    );
    assert!(!w.path().join("data").exists());
    // Nor the pepper file's.
    w.write_config("[store]\ndatabase = \"v.db\"\npepper_file = \"secrets/v.pepper\"\n");
    let serve = w.run(&[
        "--config",
        "c.toml",
        "serve",
        "--sip",
        "127.0.0.1:0",
        "--no-admin",
    ]);
    assert_eq!(serve.code, 2, "{serve:?}");
    assert!(
        serve.stderr.contains("no pepper file directory secrets"),
        "{}",
        serve.stderr
    );
    assert!(!w.path().join("secrets").exists() && !w.path().join("v.db").exists());
    w.run(&["--db", "data/vportal.db", "init"]).ok();
    assert!(w.path().join("data/vportal.db").exists());
}

/// `prune-audit` keeps at least a day, and leaves a row saying what it did.
#[test]
fn pruning_the_audit_keeps_a_day_and_is_audited() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let short = w.run(&["prune-audit", "--older-than", "1h"]);
    short.refused("at least 1d");
    let pruned = w.run(&["prune-audit", "--older-than", "400d"]).ok();
    assert!(
        pruned.stdout.starts_with("Removed 0 audit event(s)"),
        "{}",
        pruned.stdout
    );
    // Today's rows stay; the pruning is the newest.
    let events = w.run(&["--json", "audit"]).ok().json();
    assert_eq!(events[0]["event"], "audit.pruned", "{events}");
    assert_eq!(events[0]["outcome"], "0 rows");
    assert!(events.as_array().unwrap().len() > 1);
}

/// Several first runs at once (replicas starting together, a retried provisioning step):
/// every one succeeds, and exactly one makes the database and its token.
#[test]
fn first_runs_at_once_make_one_database_and_one_token() {
    let w = Workdir::new();
    let runs: Vec<_> = (0..4)
        .map(|_| w.command(&["--json", "init"]).spawn().unwrap())
        .collect();
    let answers: Vec<serde_json::Value> = runs
        .into_iter()
        .map(|run| {
            let out = run.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let made: Vec<_> = answers.iter().filter(|a| a["created"] == true).collect();
    assert_eq!(made.len(), 1, "{answers:?}");
    assert!(made[0]["token"].is_string());
    let tokens = w.run(&["--json", "token", "list"]).ok().json();
    assert_eq!(tokens.as_array().map(Vec::len), Some(1), "{tokens}");
}

#[test]
fn commands_other_than_init_need_a_database() {
    let w = Workdir::new();
    let r = w.run(&["user", "list"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("run `vportal init`"), "{}", r.stderr);
    assert_eq!(
        r.stderr.trim().lines().count(),
        1,
        "one clear line: {}",
        r.stderr
    );
    assert!(!w.db().exists());
}

#[test]
fn add_show_list_and_the_generated_passcode_appears_once() {
    let w = initialised();
    let added = w
        .run(&[
            "user",
            "add",
            "1001",
            "--name",
            "Alice Smith",
            "--email",
            "alice@example.com",
            "--generate",
            "--json",
        ])
        .ok()
        .json();
    let passcode = added["passcode"].as_str().unwrap().to_owned();
    assert_eq!(passcode.len(), 6);
    assert!(passcode.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(added["temporary"], true);
    let show = w.run(&["user", "show", "1001", "--json"]).ok();
    let user = show.json();
    assert_eq!(user["name"], "Alice Smith");
    assert_eq!(user["temporary"], true);
    assert_eq!(user["locked"], false);
    for field in [
        "temporary_expires_at",
        "created_at",
        "failed_attempts",
        "lockouts",
        "last_login_at",
        "passcode_changed_at",
        "locked_until",
    ] {
        assert!(user.get(field).is_some(), "{field} missing");
    }
    let list = w.run(&["user", "list"]).ok();
    assert!(list.stdout.contains("1001") && list.stdout.contains("temporary"));
    let audit = w.run(&["audit", "--json"]).ok();
    for out in [&show.stdout, &list.stdout, &audit.stdout] {
        assert!(!out.contains(&passcode), "generated passcode leaked: {out}");
    }
    let r = w.run(&["user", "add", "1001"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("already exists"));
    // Neither --generate nor --passcode-stdin: a mailbox without a passcode, and a note
    // saying so (the API generates one by default).
    let r = w.run(&["user", "add", "1002"]).ok();
    assert!(r.stdout.contains("Mailbox 1002 created."), "{}", r.stdout);
    assert!(
        r.stderr.contains("has no passcode") && r.stderr.contains("vportal user set-temp 1002"),
        "{}",
        r.stderr
    );
}

#[test]
fn passcodes_come_from_stdin_and_are_checked() {
    let w = initialised();
    let r = w.run_with_stdin(
        &[
            "user",
            "add",
            "1001",
            "--passcode-stdin",
            "--temporary",
            "--ttl",
            "20m",
            "--json",
        ],
        "4826\n",
    );
    let issued = r.ok().json();
    assert_eq!(
        issued["passcode"],
        serde_json::Value::Null,
        "a given passcode is not echoed"
    );
    assert_eq!(issued["temporary"], true);
    let weak = w.run_with_stdin(&["user", "add", "1002", "--passcode-stdin"], "1111\n");
    assert_eq!(weak.code, 2);
    assert!(weak.stderr.contains("repeated_digits"), "{}", weak.stderr);
    assert!(!weak.stderr.contains("1111"));
    let empty = w.run_with_stdin(&["user", "add", "1003", "--passcode-stdin"], "");
    assert_eq!(empty.code, 2);
    // --temporary without a passcode source makes no sense.
    assert_ne!(w.run(&["user", "add", "1004", "--temporary"]).code, 0);
}

#[test]
fn policy_check_exit_codes_and_codes() {
    let w = initialised();
    let ok = w.run_with_stdin(&["policy", "check", "1001"], "4826\n");
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let bad = w.run_with_stdin(&["policy", "check", "1001"], "1001\n");
    assert_eq!(bad.code, 1);
    assert!(bad.stdout.contains("equals_extension"), "{}", bad.stdout);
    let json = w
        .run_with_stdin(&["policy", "check", "4321", "--json"], "1234\n")
        .json();
    assert_eq!(json["ok"], false);
    assert_eq!(
        json["violations"],
        serde_json::json!(["reversed_extension", "sequential", "common"])
    );
    let set = w.run(&["policy", "set", "min_length", "6"]).ok();
    assert_eq!(set.stdout, "min_length = 6\n");
    // What was stored is said, not what was typed.
    let set = w.run(&["policy", "set", "reject_common", "NO"]).ok();
    assert_eq!(set.stdout, "reject_common = false\n");
    w.run(&["policy", "set", "reject_common", "on"]).ok();
    let set = w
        .run(&["policy", "set", "lockout.duration_seconds", "15m"])
        .ok();
    assert_eq!(set.stdout, "lockout.duration_seconds = 900 (15m)\n");
    let short = w
        .run_with_stdin(&["policy", "check", "1001", "--json"], "4826\n")
        .json();
    assert_eq!(short["violations"], serde_json::json!(["too_short"]));
    let shown = w.run(&["policy", "show", "--json"]).ok().json();
    assert_eq!(shown["min_length"], 6);
    assert_eq!(shown["lockout"]["max_failures"], 5);
    assert_eq!(w.run(&["policy", "set", "max_length", "3"]).code, 2);
    // Out of range together with another setting: the error names both.
    let refused = |args: &[&str], says: &str| {
        let r = w.run(args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
    };
    refused(
        &["policy", "set", "min_lenght", "6"],
        "unknown policy setting \"min_lenght\" (see `vportal policy show`)",
    );
    // A setting of a section, named without it (as `policy show` prints it) or with
    // another: the one meant is named.
    for key in ["max_failures", "nolock.max_failures"] {
        refused(
            &["policy", "set", key, "3"],
            "did you mean lockout.max_failures?",
        );
    }
    refused(
        &["policy", "set", "min_length", "20"],
        "min_length: must not be more than max_length (10)",
    );
    refused(
        &["policy", "set", "generated_length", "11"],
        "generated_length: must be min_length (6) to max_length (10)",
    );
    refused(
        &["policy", "set", "min_length", "8"],
        "change generated_length first",
    );
    w.run(&["policy", "set", "generated_length", "8"]).ok();
    w.run(&["policy", "set", "min_length", "8"]).ok();
    let shown = w.run(&["policy", "show", "--json"]).ok().json();
    assert_eq!(
        (&shown["min_length"], &shown["generated_length"]),
        (&8.into(), &8.into())
    );
    // A number beyond what the setting holds: one line, naming it.
    for (key, value) in [
        ("lockout.max_failures", "99999999999"),
        ("min_length", "-1"),
    ] {
        refused(
            &["policy", "set", key, "--", value],
            &format!("error: {key} = {value} is out of range\n"),
        );
    }
    refused(
        &["policy", "set", "lockout.duration_seconds", "400d"],
        "lockout.duration_seconds: must be at most 31536000",
    );
    // Admins setting different keys at once: every change is kept.
    let changes = [
        ("reject_sequential", "false"),
        ("reject_common", "false"),
        ("history_depth", "3"),
        ("lockout.max_failures", "7"),
        ("lockout.permanent_at", "6"),
        ("lockout.multiplier", "3"),
        ("lockout.duration_seconds", "45m"),
        ("temporary_ttl_seconds", "24h"),
    ];
    std::thread::scope(|scope| {
        for (key, value) in changes {
            let w = &w;
            scope.spawn(move || w.run(&["policy", "set", key, value]).ok());
        }
    });
    let shown = w.run(&["policy", "show", "--json"]).ok().json();
    let got = |key: &str| match key.split_once('.') {
        Some((outer, inner)) => shown[outer][inner].clone(),
        None => shown[key].clone(),
    };
    let expected: [serde_json::Value; 8] = [
        false.into(),
        false.into(),
        3.into(),
        7.into(),
        6.into(),
        3.into(),
        2_700.into(),
        86_400.into(),
    ];
    for ((key, _), want) in changes.iter().zip(expected) {
        assert_eq!(got(key), want, "{key}");
    }
}

#[test]
fn set_temp_unlock_delete_report_audit() {
    let w = initialised();
    w.run_with_stdin(&["user", "add", "1001", "--passcode-stdin"], "4826\n")
        .ok();
    let reset = w
        .run(&["user", "set-temp", "1001", "--ttl", "20m", "--json"])
        .ok()
        .json();
    let generated = reset["passcode"].as_str().unwrap().to_owned();
    assert_eq!(generated.len(), 6);
    // Not locked: said so, not "unlocked".
    let unlocked = w.run(&["user", "unlock", "1001"]).ok();
    assert_eq!(unlocked.stdout, "Mailbox 1001 was not locked.\n");
    let unlocked = w.run(&["--json", "user", "unlock", "1001"]).ok().json();
    assert_eq!(unlocked["was_locked"], false, "{unlocked}");
    assert_eq!(unlocked["unlocked"], true, "{unlocked}");
    let lock = || {
        rusqlite::Connection::open(w.db())
            .unwrap()
            .execute(
                "UPDATE users SET locked_permanently = 1, lockouts = 4 WHERE extension = '1001'",
                [],
            )
            .unwrap();
    };
    let locks_so_far = || {
        let shown = w.run(&["user", "show", "1001"]).ok().stdout;
        let line = shown.lines().find(|l| l.starts_with("locks so far"));
        line.unwrap_or_else(|| panic!("{shown}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    lock();
    assert_eq!(locks_so_far(), "4");
    let unlocked = w.run(&["user", "unlock", "1001"]).ok();
    assert_eq!(unlocked.stdout, "Mailbox 1001 unlocked.\n");
    assert_eq!(locks_so_far(), "0");
    lock();
    let unlocked = w.run(&["--json", "user", "unlock", "1001"]).ok().json();
    assert_eq!(unlocked["was_locked"], true, "{unlocked}");
    let report = w.run(&["report", "--json"]).ok().json();
    assert_eq!(report["users"], 1);
    assert_eq!(report["temporary"], 1);
    assert_eq!(report["never_changed"], 1);
    let events = w
        .run(&["audit", "--extension", "1001", "--json"])
        .ok()
        .json();
    let names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "user.unlocked",
            "user.unlocked",
            "user.unlocked",
            "user.unlocked",
            "passcode.temporary_set",
            "passcode.changed",
            "user.created"
        ]
    );
    assert!(events[0]["actor"].as_str().unwrap().starts_with("cli"));
    let only = w
        .run(&["audit", "--event", "user.created", "--json"])
        .ok()
        .json();
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(w.run(&["audit", "--event", "user.nope"]).code, 2);
    w.run(&["user", "delete", "1001"]).ok();
    assert_eq!(w.run(&["user", "show", "1001"]).code, 2);
    assert_eq!(w.run(&["user", "delete", "1001"]).code, 2);
    // The audit trail outlives the mailbox.
    let after = w
        .run(&["audit", "--extension", "1001", "--json"])
        .ok()
        .json();
    assert_eq!(after[0]["event"], "user.deleted");
}

#[test]
fn bulk_reset_needs_confirmation_for_everyone() {
    let w = initialised();
    for e in ["1001", "1002"] {
        w.run(&["user", "add", e]).ok();
    }
    assert_eq!(w.run(&["user", "reset-all"]).code, 2);
    let some = w.run(&["user", "reset-all", "1002", "--json"]).ok().json();
    assert_eq!(some.as_array().unwrap().len(), 1);
    let all = w
        .run(&["user", "reset-all", "--yes", "--ttl", "1h", "--json"])
        .ok()
        .json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|i| i["passcode"].as_str().unwrap().len() == 6)
    );
    assert_eq!(w.run(&["user", "reset-all", "4040"]).code, 2);
}

/// A wrong path to something endless or huge is refused after what an import can be, not
/// read until memory runs out.
#[test]
fn an_import_reads_no_more_than_an_import_can_be() {
    let w = Workdir::provisioned(&[]);
    w.run(&["user", "import", "/dev/zero"])
        .refused("/dev/zero: more than 64 MiB; an import takes at most 100000 rows: split it");
}

#[test]
fn import_is_all_or_nothing_and_names_lines() {
    let w = initialised();
    let csv = w.path().join("users.csv");
    std::fs::write(&csv, "extension,name,email,passcode\n1001,Alice,alice@example.com,4826\n1002,\"Smith, Bob\",,\n1003,Carol,,123\n").unwrap();
    let r = w.run(&["user", "import", csv.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("users.csv: line 4 (1003):") && r.stderr.contains("too_short"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing imported"));
    let users = w.run(&["user", "list", "--json"]).ok().json();
    assert!(
        users.as_array().unwrap().is_empty(),
        "nothing half-imported"
    );
    let partial = w.run(&[
        "user",
        "import",
        csv.to_str().unwrap(),
        "--partial",
        "--json",
    ]);
    assert_eq!(partial.code, 1);
    let report = partial.json();
    assert_eq!(report["committed"], true);
    let statuses: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["created", "created", "rejected"]);
    assert_eq!(report["rows"][0]["passcode"], serde_json::Value::Null);
    assert_eq!(report["rows"][1]["passcode"].as_str().unwrap().len(), 6);
    assert!(!partial.stdout.contains("4826"));
    let bob = w.run(&["user", "show", "1002", "--json"]).ok().json();
    assert_eq!(bob["name"], "Smith, Bob");
    // From stdin, without a header.
    let stdin = w.run_with_stdin(&["user", "import", "-"], "2001,Dan\n");
    assert_eq!(stdin.code, 0, "{}", stdin.stderr);
    assert!(
        stdin
            .stdout
            .starts_with("extension,passcode,temporary_expires_at\n2001,")
    );
    // A rejected row names its mailbox when that field is valid.
    let bad_email = w.run_with_stdin(&["user", "import", "-"], "4006,Bo,bad@@mail\n10x7,Al\n");
    assert_eq!(bad_email.code, 1);
    assert!(
        bad_email
            .stderr
            .contains("standard input: line 1 (4006): email:")
            && bad_email
                .stderr
                .contains("standard input: line 2: extension:"),
        "{}",
        bad_email.stderr
    );
    // With --partial and no good row, the message does not suggest --partial.
    let none_good = w.run_with_stdin(&["user", "import", "-", "--partial"], "4005,A,,1234\n");
    assert_eq!(none_good.code, 1);
    assert!(
        none_good
            .stderr
            .contains("nothing imported: every row (1) was rejected"),
        "{}",
        none_good.stderr
    );
    // A file that is not UTF-8 (a Latin-1 export) is refused naming the line.
    let latin1 = w.path().join("latin1.csv");
    std::fs::write(&latin1, b"3001,Ann\n3002,M\xfcller\n").unwrap();
    let r = w.run(&["user", "import", latin1.to_str().unwrap()]);
    assert_eq!(r.code, 2, "bad input");
    assert!(
        r.stderr
            .contains("latin1.csv: line 2: not UTF-8 text (save the file as UTF-8)"),
        "{}",
        r.stderr
    );
    // So is one that is not comma-separated: the message names the file as well.
    let semicolons = w.path().join("export.csv");
    std::fs::write(&semicolons, "extension;name\n3001;Ann\n").unwrap();
    let r = w.run(&["user", "import", semicolons.to_str().unwrap()]);
    assert_eq!(r.code, 2, "bad input");
    assert!(
        r.stderr
            .contains("export.csv: line 1: the values are separated by ';'"),
        "{}",
        r.stderr
    );
    // Nothing to import is an error (the API answers 400), not an empty success.
    for text in ["", "extension,name\n", "\n\n"] {
        let empty = w.run_with_stdin(&["user", "import", "-"], text);
        assert_eq!(
            (empty.code, empty.stderr.trim_end()),
            (2, "error: standard input: the CSV has no rows to import"),
            "{text:?}"
        );
    }
}

#[test]
fn config_file_and_flags_choose_the_database() {
    let w = Workdir::new();
    let config = w.path().join("vportal.toml");
    std::fs::write(&config, "[store]\ndatabase = \"data/portal.db\"\n").unwrap();
    w.run(&["--config", config.to_str().unwrap(), "init"]).ok();
    assert!(w.path().join("data/portal.db").exists());
    assert!(w.path().join("data/portal.pepper").exists());
    w.run(&["--config", "vportal.toml", "user", "add", "1001"])
        .ok();
    // --db overrides the file.
    w.run(&["--db", "other.db", "init"]).ok();
    let other = w
        .run(&["--db", "other.db", "user", "list", "--json"])
        .ok()
        .json();
    assert!(other.as_array().unwrap().is_empty());
    // A file holding the admin token that others can read is warned about (not refused:
    // the rest of it is not secret); once private, it is not.
    let token = "k3Jv9Qx7Lm2Pz8Wd4Rt6Yb1Nc5Hs0Fga";
    std::fs::write(
        &config,
        format!("[store]\ndatabase = \"data/portal.db\"\n[admin]\ntoken = \"{token}\"\n"),
    )
    .unwrap();
    let set_mode = |mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    set_mode(0o644);
    let open = w.run(&["--config", "vportal.toml", "user", "list"]).ok();
    assert!(
        open.stderr
            .contains("holds admin.token and others can read it"),
        "{}",
        open.stderr
    );
    assert!(!open.stderr.contains(token));
    set_mode(0o600);
    let private = w.run(&["--config", "vportal.toml", "user", "list"]).ok();
    assert!(
        !private.stderr.contains("admin.token"),
        "{}",
        private.stderr
    );
    std::fs::write(&config, "[store]\ndatabse = \"x.db\"\n").unwrap();
    let bad = w.run(&["--config", "vportal.toml", "user", "list"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("line 2, key store.databse"),
        "{}",
        bad.stderr
    );
}

#[test]
fn an_empty_path_variable_is_named_in_the_error() {
    for var in ["VPORTAL_DB", "VPORTAL_CONFIG"] {
        let mut w = Workdir::new();
        w.env.push((var.to_owned(), "".into()));
        let run = w.run(&["init"]);
        assert_eq!(run.code, 2, "{var}: {}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("the path is empty (from the option or {var})")),
            "{var}: {}",
            run.stderr
        );
        assert_eq!(std::fs::read_dir(w.path()).unwrap().count(), 0, "{var}");
    }
}

/// A path starting with `~`, from an option or its variable (a unit file's `Environment=`
/// does not expand it), is refused before anything is made: taken as it is it would make
/// a directory named `~` in the working directory, as the configuration file's paths would.
#[test]
fn a_tilde_path_from_an_option_or_variable_is_refused() {
    for (var, option) in [("VPORTAL_DB", "--db"), ("VPORTAL_CONFIG", "--config")] {
        for value in ["~/vportal.db", "~", "~alice/x"] {
            let mut w = Workdir::new();
            let by_option = w.run(&[option, value, "init"]);
            w.env.push((var.to_owned(), value.into()));
            let by_variable = w.run(&["init"]);
            for run in [by_option, by_variable] {
                assert_eq!(run.code, 2, "{var} {value}: {}", run.stderr);
                assert!(
                    run.stderr.contains(&format!(
                        "~ is not expanded: give the full path (from the option or {var})"
                    )),
                    "{var} {value}: {}",
                    run.stderr
                );
            }
            assert_eq!(std::fs::read_dir(w.path()).unwrap().count(), 0, "{var}");
        }
    }
}

#[test]
fn the_pepper_must_match_the_database() {
    let mut w = initialised();
    w.env
        .push(("VPORTAL_PEPPER".into(), "ab".repeat(32).into()));
    let r = w.run(&["user", "list"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("pepper does not match"), "{}", r.stderr);
    assert!(!r.stderr.contains(&"ab".repeat(32)));
    // Without the pepper file the database is unusable, and init will not replace it.
    w.env.clear();
    std::fs::remove_file(w.path().join("vportal.pepper")).unwrap();
    let r = w.run(&["init"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("pepper file"), "{}", r.stderr);
    assert!(!w.path().join("vportal.pepper").exists());
}

#[test]
fn init_names_where_the_pepper_lives() {
    // From the environment: no file is written, and none is named.
    let mut w = Workdir::new();
    w.env
        .push(("VPORTAL_PEPPER".into(), "cd".repeat(32).into()));
    let r = w.run(&["init"]).ok();
    assert!(
        r.stderr.contains("VPORTAL_PEPPER") && !r.stderr.contains("vportal.pepper"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("VPORTAL_PEPPER"), "{}", r.stdout);
    assert!(!r.stderr.contains(&"cd".repeat(32)), "{}", r.stderr);
    assert!(!r.stdout.contains(&"cd".repeat(32)), "{}", r.stdout);
    assert!(!w.path().join("vportal.pepper").exists());
    let mut w = Workdir::new();
    w.env
        .push(("VPORTAL_PEPPER".into(), "cd".repeat(32).into()));
    let r = w.run(&["init", "--json"]).ok().json();
    assert_eq!(r["pepper_env"], "VPORTAL_PEPPER");
    assert!(r.get("pepper_file").is_none(), "{r}");
    // A file made now is named, and is there.
    let w = Workdir::new();
    let r = w.run(&["init", "--json"]).ok().json();
    assert_eq!(r["pepper_file"], "vportal.pepper");
    assert!(w.path().join("vportal.pepper").exists());
}

#[test]
fn tokens_are_shown_once_and_revocable() {
    let w = initialised();
    let created = w
        .run(&["token", "create", "provisioning", "--json"])
        .ok()
        .json();
    let secret = created["token"].as_str().unwrap().to_owned();
    let list = w.run(&["token", "list"]).ok();
    assert!(list.stdout.contains("provisioning") && !list.stdout.contains(&secret));
    assert_eq!(w.run(&["token", "create", "provisioning"]).code, 2);
    // The configured token's audit name cannot be taken by a stored one.
    for reserved in ["configured", "Configured"] {
        let r = w.run(&["token", "create", reserved]);
        r.refused("is reserved");
    }
    // `initialised()` made one token besides: revoking this one leaves that one.
    let revoked = w.run(&["token", "revoke", "provisioning"]).ok();
    assert!(
        !revoked.stderr.contains("No admin API token"),
        "{}",
        revoked.stderr
    );
    assert_eq!(w.run(&["token", "revoke", "provisioning"]).code, 2);
    // Revoking the last one says the API now takes only a configured token.
    let left = w.run(&["token", "list", "--json"]).ok().json();
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    for t in left.as_array().unwrap() {
        let name = t["name"].as_str().unwrap().to_owned();
        let revoked = w.run(&["token", "revoke", &name]).ok();
        assert!(
            revoked
                .stderr
                .contains("No admin API token is left in the database"),
            "{}",
            revoked.stderr
        );
    }
}

#[test]
fn a_reader_that_stops_early_is_no_error() {
    let w = initialised();
    // Enough mailboxes for the JSON list to overflow a pipe buffer (64 KiB).
    let csv: String = (3000..3400).map(|e| format!("{e},Name {e}\n")).collect();
    w.run_with_stdin(&["user", "import", "-"], &csv).ok();
    let mut child = w.command(&["--json", "user", "list"]).spawn().unwrap();
    // Read a little, as `| head` does, and go away.
    let mut first = [0_u8; 16];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Runs `vportal ARGS` in `w` with its standard output a pipe whose reader is gone before
/// the command writes anything (a `| head -0`, a consumer that crashed): the database is
/// held locked meanwhile so that the command cannot write before the reader has left.
fn run_with_reader_gone(w: &Workdir, args: &[&str]) -> (i32, String) {
    let lock = rusqlite::Connection::open(w.db()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut child = w.command(args).spawn().unwrap();
    drop(child.stdout.take());
    std::thread::sleep(Duration::from_millis(300));
    lock.execute_batch("COMMIT").unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Standard output on a full disk (`/dev/full`) while a generated passcode is due: the
/// admin is told the change is made and the passcode was not delivered, not only the OS's
/// words.
#[test]
fn a_generated_passcode_written_to_a_full_disk_is_said_undelivered() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = w
        .command(&["user", "set-temp", "1001"])
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("writing to standard output failed")
            && stderr.contains("No space left on device")
            && stderr.contains("not delivered: issue new ones"),
        "{stderr}"
    );
    assert_eq!(w.user("1001")["temporary"], true, "the change is made");
}

/// Standard error on a full disk: what would have been said there is lost, the generated
/// passcodes on standard output are not (a partial import reports its rejected rows on
/// standard error before it prints them).
#[test]
fn a_full_standard_error_loses_no_generated_passcode() {
    let w = Workdir::provisioned(&[]);
    std::fs::write(
        w.path().join("p.csv"),
        "extension,name\n9501,A\n95x2,B\n9503,C\n",
    )
    .unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = w
        .command(&["user", "import", "p.csv", "--partial"])
        .stderr(full)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    // `extension,passcode,temporary_expires_at`: a row for each mailbox created, with the
    // passcode it was given, in full.
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("extension,passcode,temporary_expires_at"),
        "{stdout}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let mailboxes: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(mailboxes, ["9501", "9503"], "{stdout}");
    let length = vportal::store::Policy::default().generated_len();
    // The passcodes printed are the ones the mailboxes took.
    let pepper = std::fs::read_to_string(w.path().join("vportal.pepper")).unwrap();
    let pepper = vportal::store::Pepper::from_hex(&pepper).unwrap();
    let store = vportal::store::Store::open(&w.db(), pepper, false, 1).unwrap();
    let caller = vportal::store::Actor::Caller {
        source: "192.0.2.7:5060".parse().unwrap(),
        call_id: "cli-test@192.0.2.7".to_owned(),
    };
    for row in &rows {
        assert_eq!(row.len(), 3, "{stdout}");
        let (mailbox, passcode) = (row[0], row[1]);
        assert!(
            passcode.len() == length && passcode.bytes().all(|b| b.is_ascii_digit()),
            "{mailbox}: {passcode:?} is no generated passcode of {length} digits\n{stdout}"
        );
        assert_eq!(w.user(mailbox)["temporary"], true);
        let outcome = store
            .verify(
                mailbox,
                &vportal::store::Passcode::new(passcode.to_owned()).unwrap(),
                &caller,
                vportal::time::Timestamp::now(),
            )
            .unwrap();
        assert!(
            matches!(
                outcome,
                vportal::store::VerifyOutcome::Ok { must_change: true }
            ),
            "{mailbox}: {outcome:?}"
        );
    }
}

/// A command that hands out a generated passcode or a token exactly once must not report
/// success when that passcode never reached anyone: the change is made (the old passcode is
/// gone), so the admin has to know to issue another.
#[test]
fn a_generated_passcode_that_could_not_be_printed_is_an_error_not_success() {
    let w = Workdir::provisioned(&[("1001", "4826", false), ("1002", "5937", false)]);
    std::fs::write(w.path().join("new.csv"), "2001,Ann\n").unwrap();
    // How many times `mailbox` was given a temporary passcode (each time, the old passcode
    // stopped working).
    let temporary_sets = |mailbox: &str| {
        common::event_names(&w.audit(mailbox))
            .iter()
            .filter(|e| **e == "passcode.temporary_set")
            .count()
    };
    let not_delivered = |args: &[&str]| {
        let (code, stderr) = run_with_reader_gone(&w, args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("not delivered"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    };
    // Each change was made all the same, as each command's own effect shows at once.
    for mailbox in ["1001", "1002"] {
        assert_eq!(w.user(mailbox)["temporary"], false, "{mailbox}");
        assert_eq!(temporary_sets(mailbox), 0, "{mailbox}");
    }
    not_delivered(&["user", "set-temp", "1001"]);
    // 1001's old passcode was replaced by the one nobody saw; 1002 was left alone.
    assert_eq!(w.user("1001")["temporary"], true);
    assert_eq!(temporary_sets("1001"), 1);
    assert_eq!(w.user("1002")["temporary"], false);
    assert_eq!(temporary_sets("1002"), 0);

    not_delivered(&["user", "reset-all", "--yes"]);
    // Both mailboxes' passcodes were replaced again.
    assert_eq!(w.user("1002")["temporary"], true);
    assert_eq!(temporary_sets("1002"), 1);
    assert_eq!(temporary_sets("1001"), 2);

    assert_eq!(w.run(&["user", "show", "1003"]).code, 2, "1003 before");
    not_delivered(&["--json", "user", "add", "1003", "--generate"]);
    let added = w.user("1003");
    assert_eq!(
        (&added["has_passcode"], &added["temporary"]),
        (&serde_json::json!(true), &serde_json::json!(true)),
        "{added}"
    );

    let tokens = || -> Vec<String> {
        w.run(&["--json", "token", "list"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(!tokens().contains(&"provisioning".to_owned()));
    not_delivered(&["token", "create", "provisioning"]);
    assert!(
        tokens().contains(&"provisioning".to_owned()),
        "{:?}",
        tokens()
    );

    assert_eq!(w.run(&["user", "show", "2001"]).code, 2, "2001 before");
    not_delivered(&["user", "import", "new.csv"]);
    let imported = w.user("2001");
    assert_eq!(
        (&imported["name"], &imported["temporary"]),
        (&serde_json::json!("Ann"), &serde_json::json!(true)),
        "{imported}"
    );

    // A reader that leaves early on output holding no secret is still no error.
    let (code, stderr) = run_with_reader_gone(&w, &["audit"]);
    assert_eq!(code, 0, "{stderr}");
}

/// A generated passcode or token printed to /dev/null reaches nobody: the command says so on
/// stderr. A closed standard output (`>&-`) is the same to the command (Rust opens
/// /dev/null in its place), and was silent before. Output without a secret is not warned
/// about, and `>/dev/null` stays a choice a script may make: the command succeeds.
#[test]
fn a_secret_sent_to_dev_null_or_a_closed_stdout_is_warned_about() {
    const WARNING: &str = "reach nobody";
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let null = |args: &[&str]| {
        let out = w
            .command(args)
            .stdout(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for args in [
        &["user", "set-temp", "1001"][..],
        &["token", "create", "ops"],
    ] {
        let (code, stderr) = null(args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stderr.contains(WARNING), "{args:?}: {stderr}");
    }
    // Nothing secret printed: nothing to warn about.
    let (code, stderr) = null(&["user", "show", "1001"]);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    // `>&-` through a shell, which closes the descriptor itself.
    let vportal = env!("CARGO_BIN_EXE_vportal");
    let mut shell = std::process::Command::new("sh");
    shell
        .args(["-c", r#""$VPORTAL" user add 1002 --generate >&-"#])
        .env("VPORTAL", vportal)
        .current_dir(w.path());
    for var in ["VPORTAL_PEPPER", "VPORTAL_CONFIG", "VPORTAL_DB", "RUST_LOG"] {
        shell.env_remove(var);
    }
    let out = shell.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(WARNING), "{stderr}");
    assert_eq!(w.user("1002")["temporary"], true);
}

/// A secret written into a file others can read (`vportal init > token.txt` under the
/// usual umask) is warned about; one only its owner reads is not. The command succeeds
/// either way, and the file is left as it was: its mode is the operator's to set.
#[cfg(unix)]
#[test]
fn a_secret_written_to_a_file_others_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    const WARNING: &str = "its group or others can read (mode 644)";
    let w = Workdir::new();
    let into = |name: &str, mode: u32, args: &[&str]| {
        let path = w.path().join(name);
        let file = std::fs::File::create(&path).unwrap();
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .unwrap();
        let out = w.command(args).stdout(file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        let written = std::fs::read_to_string(&path).unwrap();
        let left = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        (stderr, written, left)
    };
    let (stderr, written, left) = into("token.txt", 0o644, &["init"]);
    assert!(stderr.contains(WARNING), "{stderr}");
    assert!(stderr.contains("shown only this once"), "{stderr}");
    // The file holds the token alone.
    assert!(
        written.starts_with("vpt_") && written.len() == 69 && written.ends_with('\n'),
        "{written}"
    );
    assert_eq!(left, 0o644);
    // `token create` too: `TOKEN=$(vportal token create ops)` holds the token alone.
    let (stderr, written, _) = into("ops.txt", 0o600, &["token", "create", "ops"]);
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(stderr.contains("shown only this once"), "{stderr}");
    assert!(
        written.starts_with("vpt_") && written.len() == 69 && written.ends_with('\n'),
        "{written}"
    );
    // Output holding no secret is not warned about, whatever the file's mode.
    let (stderr, _, _) = into("list.txt", 0o644, &["token", "list"]);
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// A VPORTAL_PEPPER that is not text is an error, not the same as no VPORTAL_PEPPER: it
/// was taken as unset, so a first run quietly made a pepper file instead.
#[cfg(unix)]
#[test]
fn a_pepper_variable_that_is_not_text_is_refused_not_ignored() {
    use std::os::unix::ffi::OsStrExt;
    let mut w = Workdir::new();
    let garbled = std::ffi::OsStr::from_bytes(b"\xffabcdef0123456789abcdef0123456789");
    w.env.push(("VPORTAL_PEPPER".into(), garbled.to_owned()));
    let r = w.run(&["init"]);
    r.refused("VPORTAL_PEPPER");
    assert!(!r.stdout.contains("vpt_"), "{}", r.stdout);
    assert!(!w.db().exists());
    assert!(!w.path().join("vportal.pepper").exists());
}

/// A database named `*.pepper` would share its file with its default pepper file: refused
/// before anything is made.
#[test]
fn a_database_that_is_its_own_pepper_file_is_refused() {
    let w = Workdir::new();
    let r = w.run(&["--db", "keys.pepper", "init"]);
    r.refused("same file");
    assert!(!w.path().join("keys.pepper").exists());
}

/// A pepper file that is the database by another spelling, or one of the files SQLite keeps
/// beside it (and deletes), is refused before anything is made, naming both paths.
#[test]
fn a_pepper_file_that_is_the_database_or_its_side_file_is_refused() {
    let w = Workdir::new();
    let absolute = w.path().join("v.db");
    let absolute = absolute.to_str().unwrap();
    for (database, pepper_file, says) in [
        ("v.db", "./v.db", "same file"),
        ("./v.db", "v.db", "same file"),
        ("v.db", "sub/../v.db", "same file"),
        (absolute, "v.db", "same file"),
        ("v.db", absolute, "same file"),
        ("v.db", "v.db-wal", "-wal"),
        ("v.db", "./v.db-shm", "-shm"),
        (absolute, "v.db-journal", "-journal"),
    ] {
        w.write_config(&format!(
            "[store]\ndatabase = {database:?}\npepper_file = {pepper_file:?}\n"
        ));
        let r = w.run(&["--config", "c.toml", "init"]);
        assert_eq!(r.code, 2, "{database} / {pepper_file}: {r:?}");
        assert!(r.stderr.contains(says), "{}", r.stderr);
        assert!(
            r.stderr.contains(database) && r.stderr.contains(pepper_file),
            "{}",
            r.stderr
        );
        assert!(!r.stdout.contains("vpt_"), "{}", r.stdout);
        let left: Vec<_> = std::fs::read_dir(w.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "c.toml")
            .collect();
        assert!(left.is_empty(), "{database} / {pepper_file}: left {left:?}");
    }
}

/// Ctrl-C at a passcode prompt, where echo is off, turns it back on: the terminal is left as
/// it was found, and the command exits with 130. Run on a pseudo-terminal by `script`
/// (util-linux), the shell there outliving the interrupt to report the terminal's state.
#[test]
fn ctrl_c_at_the_passcode_prompt_turns_echo_back_on() {
    use std::io::Write;
    let w = initialised();
    let vportal = env!("CARGO_BIN_EXE_vportal");
    // `tty` first: the test reads the terminal's modes from outside while the prompt waits.
    let shell = format!("trap true INT; tty; {vportal} policy check 1001; echo status=$?; stty -a");
    let (mut script, rx) = on_a_terminal(&w, &format!("sh -c '{shell}'"));
    let mut seen = Vec::new();
    let mut pressed = false;
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(20)) {
        seen.extend_from_slice(&chunk);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if !pressed && text.contains("Passcode to check:") {
            // Echo is off before ctrl-c is pressed: the command turns it off only once its
            // handler is in place, so echo on afterwards can only be the handler's doing.
            let tty = text
                .split_whitespace()
                .find(|w| w.starts_with("/dev/"))
                .unwrap_or_else(|| panic!("no terminal named: {text}"))
                .to_owned();
            let modes = echo_turned_off(&tty, Duration::from_secs(20));
            assert!(
                !modes.contains(&"echo".to_owned()),
                "echo never off: {modes:?}"
            );
            // Ctrl-c, as the terminal sends it.
            script.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
            pressed = true;
        }
    }
    let _ = script.wait();
    let seen = String::from_utf8_lossy(&seen);
    assert!(pressed, "no prompt: {seen}");
    assert!(seen.contains("status=130"), "{seen}");
    let modes: Vec<&str> = seen.split_whitespace().collect();
    assert!(modes.contains(&"echo"), "echo left off: {seen}");
    assert!(!modes.contains(&"-echo"), "echo left off: {seen}");
}

/// The modes of terminal `tty` (`stty -a`, word by word) once they show `-echo`, asking
/// until `within` has passed; the last ones read if they never did.
fn echo_turned_off(tty: &str, within: Duration) -> Vec<String> {
    let end = std::time::Instant::now() + within;
    loop {
        let out = std::process::Command::new("stty")
            .args(["-F", tty, "-a"])
            .output()
            .expect("stty runs");
        assert!(
            out.status.success(),
            "stty -F {tty}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let modes: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if modes.iter().any(|m| m == "-echo") || std::time::Instant::now() >= end {
            return modes;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `shell` (an `sh -c` script) on a pseudo-terminal, typing each `(prompt, line)` once
/// `prompt` has shown; everything the terminal showed.
fn typed_at_a_terminal(w: &Workdir, shell: &str, answers: &[(&str, &str)]) -> String {
    use std::io::Write;
    let (mut script, rx) = on_a_terminal(w, &format!("sh -c '{shell}'"));
    let mut seen = Vec::new();
    let mut answered = 0;
    // Where the terminal's output after the last answer starts.
    let mut from = 0;
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(20)) {
        seen.extend_from_slice(&chunk);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some((prompt, line)) = answers.get(answered)
            && let Some(at) = text.get(from..).and_then(|t| t.find(prompt))
        {
            let stdin = script.stdin.as_mut().unwrap();
            stdin.write_all(format!("{line}\r").as_bytes()).unwrap();
            stdin.flush().unwrap();
            answered += 1;
            from += at + prompt.len();
        }
        if text.contains("status=") {
            break;
        }
    }
    let _ = script.kill();
    let _ = script.wait();
    let seen = String::from_utf8_lossy(&seen).into_owned();
    assert_eq!(answered, answers.len(), "prompts not all shown: {seen}");
    seen
}

/// A passcode typed at a terminal (echo off) to be stored is asked for twice; two that
/// differ are refused and nothing changes. Piped input stays one line.
#[test]
fn a_passcode_typed_at_a_terminal_is_confirmed() {
    let w = initialised();
    let vportal = env!("CARGO_BIN_EXE_vportal");
    // Mistyped the second time: refused, no mailbox.
    let seen = typed_at_a_terminal(
        &w,
        &format!("{vportal} user add 6001 --passcode-stdin; echo status=$?"),
        &[("Passcode:", "482913"), ("Passcode again:", "482914")],
    );
    assert!(seen.contains("status=2"), "{seen}");
    assert!(seen.contains("differ"), "{seen}");
    assert!(!seen.contains("482913"), "echoed: {seen}");
    assert_eq!(w.run(&["user", "show", "6001"]).code, 2);
    // Typed the same twice: created.
    let seen = typed_at_a_terminal(
        &w,
        &format!("{vportal} user add 6001 --passcode-stdin; echo status=$?"),
        &[("Passcode:", "482913"), ("Passcode again:", "482913")],
    );
    assert!(seen.contains("status=0"), "{seen}");
    assert!(seen.contains("Mailbox 6001 created"), "{seen}");
    // A temporary one likewise: a mismatch leaves the mailbox as it was.
    let seen = typed_at_a_terminal(
        &w,
        &format!("{vportal} user set-temp 6001 --passcode-stdin; echo status=$?"),
        &[
            ("Temporary passcode:", "571936"),
            ("Temporary passcode again:", "571939"),
        ],
    );
    assert!(seen.contains("status=2"), "{seen}");
    assert_eq!(w.user("6001")["temporary"], false);
    // `policy check` stores nothing: asked once.
    let seen = typed_at_a_terminal(
        &w,
        &format!("{vportal} policy check 6001; echo status=$?"),
        &[("Passcode to check:", "571936")],
    );
    assert!(seen.contains("status=0"), "{seen}");
    assert!(!seen.contains("again"), "{seen}");
    // Piped: one line, as scripts give it.
    w.run_with_stdin(
        &["user", "set-temp", "6001", "--passcode-stdin"],
        "571936\n",
    )
    .ok();
    assert_eq!(w.user("6001")["temporary"], true);
}

/// The commands in backquotes of `text` that start with `vportal `, split into words.
fn hinted_commands(text: &str) -> Vec<Vec<String>> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|c| c.strip_prefix("vportal "))
        .map(|c| c.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// `serve`'s first-run hints repeat the options that chose its store, so that following
/// them from another directory reaches that store and not a new one.
#[test]
fn first_run_hints_name_the_store_the_server_uses() {
    use common::server::ServerProcess;
    let w = Workdir::new();
    let elsewhere = Workdir::new();
    for (options, db) in [
        (
            vec!["--db", "data/portal.db"],
            w.path().join("data/portal.db"),
        ),
        (vec!["--config", "c.toml"], w.path().join("cfg/portal.db")),
    ] {
        w.write_config(&format!("[store]\ndatabase = {:?}\n", db.to_str().unwrap()));
        // `serve` makes a database, not the directory it goes in.
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        let mut args = vec!["--no-admin"];
        args.extend_from_slice(&options);
        let server = ServerProcess::start(&w, "47400-47498", &args);
        let stdout = server.stdout.lock().unwrap().clone();
        drop(server);
        assert!(db.exists(), "{stdout}");
        let hints = hinted_commands(&stdout);
        assert_eq!(hints.len(), 2, "{stdout}");
        for hint in &hints {
            let absolute = w.path().join(options[1]);
            assert_eq!(
                hint[..2],
                [options[0], absolute.to_str().unwrap()],
                "{stdout}"
            );
        }
        // Followed from another directory, as a second terminal would be.
        let words: Vec<&str> = hints[1].iter().map(String::as_str).collect();
        let added = elsewhere.run(&words).ok();
        assert!(added.stdout.contains("1001"), "{added:?}");
        let shown = w.run(&[options[0], options[1], "user", "show", "1001"]);
        shown.ok();
        let words: Vec<&str> = hints[0].iter().map(String::as_str).collect();
        assert!(elsewhere.run(&words).ok().stdout.contains("vpt_"));
        assert!(
            std::fs::read_dir(elsewhere.path())
                .unwrap()
                .next()
                .is_none(),
            "made files elsewhere"
        );
    }
}

/// A database file made empty beforehand (by an installer, with its owner and mode) is said
/// to be empty, by `init`, `serve` and any command alike, not taken for a database whose
/// pepper file was lost; nothing is made beside it.
#[test]
fn an_empty_database_file_is_said_to_be_empty() {
    let w = Workdir::new();
    std::fs::write(w.path().join("e.db"), b"").unwrap();
    for args in [
        &["--db", "e.db", "init"][..],
        &["--db", "e.db", "user", "list"],
        &[
            "--db",
            "e.db",
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--no-admin",
        ],
    ] {
        let r = w.run(args);
        r.refused("the database e.db is empty (0 bytes)");
        assert!(!r.stderr.contains("pepper"), "{args:?}: {}", r.stderr);
    }
    assert!(!w.path().join("e.pepper").exists());
}

/// A wrong path to another program's SQLite database is refused before anything is written
/// to it: before, with a pepper given, even `user list` turned WAL on in it and added
/// vportal's tables.
#[test]
fn another_programs_database_is_refused_and_left_as_it_was() {
    let mut w = Workdir::new();
    w.env
        .push(("VPORTAL_PEPPER".to_owned(), "1f".repeat(32).into()));
    let other = w.path().join("other.db");
    let conn = rusqlite::Connection::open(&other).unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(conn);
    let before = std::fs::read(&other).unwrap();
    for args in [
        &["--db", "other.db", "user", "list"][..],
        &["--db", "other.db", "init"],
    ] {
        w.run(args)
            .refused("other.db is not a vportal database (it holds other tables)");
    }
    assert_eq!(std::fs::read(&other).unwrap(), before);
    assert!(!w.path().join("other.db-wal").exists());
}

/// A first run whose standard output nobody reads (a pipe whose reader went away) still
/// serves: those lines are only information, and a server that never listened must not
/// exit with status 0 as if it had done its job.
#[test]
fn a_first_run_with_nobody_reading_standard_output_still_serves() {
    use std::io::{BufRead, BufReader};
    let w = Workdir::new();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = w
        .serve_command("48340-48349")
        .stdout(writer)
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("listening sip=") {
            break;
        }
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(running && seen.contains("listening sip="), "{seen}");
    assert!(
        seen.contains("the first-run lines could not be written to standard output"),
        "{seen}"
    );
    assert!(w.db().exists());
}

/// Relative store paths in the configuration file are the working directory's: a hint to
/// run elsewhere goes there first, so that it reaches this store and not a new one.
#[test]
fn hints_go_where_the_config_files_relative_paths_lead() {
    let w = Workdir::new();
    let elsewhere = Workdir::new();
    std::fs::create_dir(w.path().join("data")).unwrap();
    let db = w.path().join("data/v.db");
    for (n, config) in [
        "[store]\ndatabase = \"data/v.db\"\n".to_owned(),
        format!(
            "[store]\ndatabase = {:?}\npepper_file = \"data/v.pepper\"\n",
            db.to_str().unwrap()
        ),
    ]
    .iter()
    .enumerate()
    {
        let file = format!("c{n}.toml");
        std::fs::write(w.path().join(&file), config).unwrap();
        let _ = std::fs::remove_file(&db);
        let _ = std::fs::remove_file(db.with_extension("pepper"));
        let init = w.run(&["--config", &file, "init"]).ok();
        let said = format!("{}{}", init.stdout, init.stderr);
        let hint = said
            .split('`')
            .skip(1)
            .step_by(2)
            .find(|c| c.contains("user add 1001"))
            .unwrap_or_else(|| panic!("{said}"));
        let expected = format!(
            "cd {} && vportal --config {} ",
            w.path().display(),
            w.path().join(&file).display()
        );
        assert!(hint.starts_with(&expected), "{hint}");
        // Followed from another directory, as a second terminal would be.
        let run = std::process::Command::new("sh")
            .arg("-c")
            .arg(hint.replacen("vportal", env!("CARGO_BIN_EXE_vportal"), 1))
            .current_dir(elsewhere.path())
            .env_remove("VPORTAL_CONFIG")
            .env_remove("VPORTAL_DB")
            .output()
            .unwrap();
        assert!(run.status.success(), "{run:?}");
        w.run(&["--config", &file, "user", "show", "1001"]).ok();
        assert!(
            std::fs::read_dir(elsewhere.path())
                .unwrap()
                .next()
                .is_none()
        );
    }
}

/// With `--json` a first run's lines are one JSON object on one line (what `init --json`
/// says), so that a log collector reading standard output line by line as JSON (with
/// `--log-format json` on stderr) gets no plain text. Standard output is not a terminal here: no token is made.
#[test]
fn a_first_run_with_json_says_what_it_made_as_json() {
    use common::server::ServerProcess;
    let w = Workdir::new();
    let server = ServerProcess::start(&w, "47700-47719", &["--no-admin", "--json"]);
    let stdout = server.stdout.lock().unwrap().clone();
    drop(server);
    // Nothing but that object, on one line.
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let made: serde_json::Value = serde_json::from_str(&stdout).expect(&stdout);
    assert_eq!(made["created"], true, "{made}");
    assert_eq!(made["database"], "vportal.db", "{made}");
    assert_eq!(made["pepper_file"], "vportal.pepper", "{made}");
    assert_eq!(made["token"], serde_json::Value::Null, "{made}");
    assert!(w.db().exists());
    let tokens = w.run(&["token", "list", "--json"]).ok().json();
    assert_eq!(tokens, serde_json::json!([]));
}

/// A command on a path with neither database nor pepper file says there is no database
/// there, not that the pepper is missing (which steers to `init`, a second store).
#[test]
fn a_missing_store_is_reported_as_a_missing_database() {
    let w = Workdir::new();
    let r = w.run(&["--db", "typo.db", "user", "list"]);
    r.refused("no database at typo.db");
    assert!(r.stderr.contains("--db"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("pepper file typo.pepper not found"),
        "{}",
        r.stderr
    );
    assert!(std::fs::read_dir(w.path()).unwrap().next().is_none());
    // With JSON logs, the error is a JSON log line too: what a log shipper reads.
    let r = w.run(&["--log-format", "json", "--db", "typo.db", "user", "list"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    let line: serde_json::Value = serde_json::from_str(r.stderr.trim()).unwrap();
    assert_eq!(line["level"], "ERROR", "{line}");
    let message = line["fields"]["message"].as_str().unwrap();
    assert!(message.starts_with("no database at typo.db"), "{line}");
}

/// A database path that is a directory (the data directory given for the file) is said to
/// be one, by `init`, `serve` and every command, not taken for a database whose pepper is
/// lost; nothing is made in it.
#[test]
fn a_database_path_that_is_a_directory_is_said_to_be_one() {
    let w = Workdir::new();
    std::fs::create_dir(w.path().join("data")).unwrap();
    for args in [
        &["--db", "data", "init"][..],
        &["--db", "data", "user", "list"],
        &[
            "--db",
            "data",
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
    ] {
        let r = w.run(args);
        r.refused("the database path data is a directory");
        assert!(
            r.stderr
                .contains("give the database file's path, such as data/vportal.db\n"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("pepper"), "{args:?}: {}", r.stderr);
    }
    assert!(
        std::fs::read_dir(w.path().join("data"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(!w.path().join("data.pepper").exists());
}

/// The audit actor takes the login name under `sudo` from `SUDO_USER`, and records none that
/// does not look like one: a newline would split the audit table's row, `admin:x` would read
/// as an API token.
#[test]
fn the_cli_audit_actor_is_a_plausible_login_name() {
    let w = initialised();
    w.run_with_stdin(&["user", "add", "1001", "--passcode-stdin"], "4826\n")
        .ok();
    let unlock_as = |vars: &[(&str, &str)]| {
        let mut cmd = w.command(&["user", "unlock", "1001"]);
        cmd.env_remove("SUDO_USER")
            .env_remove("USER")
            .env_remove("LOGNAME");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        w.audit("1001").last().unwrap()["actor"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(unlock_as(&[("USER", "alice")]), "cli:alice");
    assert_eq!(
        unlock_as(&[("SUDO_USER", "bob"), ("USER", "root")]),
        "cli:bob"
    );
    assert_eq!(unlock_as(&[("USER", "x\nfake")]), "cli");
    assert_eq!(unlock_as(&[("USER", "admin:admin")]), "cli");
    assert_eq!(unlock_as(&[]), "cli");
    let table = w.run(&["audit", "--extension", "1001"]).ok().stdout;
    assert!(!table.contains("fake"), "{table}");
}

/// `~` in a config path is not expanded: refused at load, naming the file, line and key,
/// instead of making a directory named `~` here.
#[test]
fn a_config_path_starting_with_a_tilde_is_refused() {
    let w = Workdir::new();
    w.write_config("[store]\ndatabase = \"~/vp/x.db\"\n");
    let r = w.run(&["--config", "c.toml", "init"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("config file c.toml, line 2, key store.database: ~ is not expanded"),
        "{}",
        r.stderr
    );
    assert!(!w.path().join("~").exists());
}

/// A host name where an IP address and port are needed: the error says what is needed.
#[test]
fn a_host_name_for_a_listen_address_is_refused_saying_what_is_needed() {
    let w = Workdir::new();
    for option in ["--sip", "--admin"] {
        let r = w.run(&["serve", option, "localhost:5060"]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(
            r.stderr.contains("not an IP address and port")
                && r.stderr.contains("127.0.0.1:5060 or [::1]:5060")
                && r.stderr.contains("host names are not resolved"),
            "{}",
            r.stderr
        );
    }
    w.write_config("[sip]\nlisten = \"127.0.0.1:0\"\npublic_address = \"pbx.example.com\"\n");
    let r = w.run(&["--config", "c.toml", "serve"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("config file c.toml, line 3, key sip.public_address: not an IP address")
            && r.stderr.contains("host names are not accepted"),
        "{}",
        r.stderr
    );
    assert!(!w.db().exists());
    // Settings that are each valid but do not work together name the file that holds them,
    // and the flag that overrode one, before any prompt is loaded.
    for (config, flags, says) in [
        (
            "[sip]\nlisten = \"127.0.0.1:0\"\npublic_address = \"0.0.0.0\"\n",
            &[][..],
            "error: config file c.toml: sip.public_address is 0.0.0.0: set it",
        ),
        (
            "[sip]\nlisten = \"127.0.0.1:0\"\n",
            &["--sip", "0.0.0.0:0"],
            "error: config file c.toml: sip.listen is 0.0.0.0:0: set sip.public_address to \
             the address peers reach vportal at (sip.listen from --sip)",
        ),
        (
            "[sip]\nudp = false\ntcp = false\n",
            &[],
            "error: config file c.toml: sip.udp and sip.tcp are both off",
        ),
        (
            "[admin]\ntls_cert = \"cert.pem\"\n",
            &[],
            "error: config file c.toml: admin.tls_cert and admin.tls_key must be set together",
        ),
        // With the side-port off, its TLS settings do not matter.
        (
            "[admin]\nenabled = false\ntls_cert = \"cert.pem\"\n[dialplan]\nfile = \"gone.toml\"\n",
            &[],
            "gone.toml",
        ),
    ] {
        w.write_config(config);
        let mut args = vec!["--config", "c.toml", "serve"];
        args.extend_from_slice(flags);
        let r = w.run(&args);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(
            r.stderr.contains(says) && !r.stderr.contains("prompts"),
            "{}",
            r.stderr
        );
        // `--sip` is named only when it gave the address.
        assert_eq!(
            r.stderr.contains("--sip"),
            !flags.is_empty(),
            "{}",
            r.stderr
        );
    }
    assert!(!w.db().exists());
}

/// `init`'s hints, like `serve`'s, repeat the options that chose the store.
#[test]
fn init_hints_name_the_store_it_made() {
    let w = Workdir::new();
    let db = w.path().join("data/x.db");
    let db = db.to_str().unwrap();
    let first = w.run(&["--db", "data/x.db", "init"]).ok();
    // (Standard output, not a terminal, holds the token alone.)
    let hints = hinted_commands(&first.stderr);
    assert_eq!(hints.len(), 1, "{}", first.stderr);
    assert_eq!(hints[0][..2], ["--db", db], "{}", first.stderr);
    let again = w.run(&["--db", "data/x.db", "init"]).ok();
    let hints = hinted_commands(&again.stderr);
    assert_eq!(hints.len(), 1, "{}", again.stderr);
    assert_eq!(hints[0][..2], ["--db", db], "{}", again.stderr);
    // The default store: nothing to repeat.
    let plain = initialised().run(&["init"]).ok();
    assert!(
        plain.stderr.contains("`vportal token create NAME`"),
        "{}",
        plain.stderr
    );
}

/// The short known token a test harness exports (`VPORTAL_ADMIN_TOKEN=test-token`), or
/// writes as `admin.token`, is taken while the admin API listens on loopback only: the
/// server starts, warns once that the token is short, and the API takes that token (and not
/// another). Neither the log nor standard output shows the token.
#[test]
fn a_short_configured_token_is_taken_on_loopback_with_a_warning() {
    use common::http;
    use common::server::ServerProcess;
    const TOKEN: &str = "test-token";
    let check = |w: &Workdir, rtp: &str, args: &[&str], source: &str| {
        let server = ServerProcess::start(w, rtp, args);
        let admin = server.admin.unwrap();
        let get = |token| http::request(admin, "GET", "/api/v1/users", Some(token), None);
        let users = get(TOKEN);
        assert_eq!(users.status, 200, "{}", users.body);
        assert_eq!(users.json()["users"], serde_json::json!([]));
        assert_eq!(get("test-tokem").status, 401);
        assert_eq!(get(&format!("{TOKEN}x")).status, 401);
        let log = server.log();
        let warned = format!(
            "{source} is shorter than 32 characters: taken because the admin API listens on loopback only"
        );
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains(&warned)).collect();
        assert_eq!(warnings.len(), 1, "{log}");
        assert!(warnings[0].contains(" WARN "), "{log}");
        assert!(!server.log_reveals(TOKEN), "{log}");
        assert!(!server.stdout.lock().unwrap().contains(TOKEN));
    };
    let mut w = Workdir::new();
    w.env.push(("VPORTAL_ADMIN_TOKEN".into(), TOKEN.into()));
    check(&w, "47800-47809", &[], "VPORTAL_ADMIN_TOKEN");
    let w = Workdir::new();
    w.write_config(&format!("[admin]\ntoken = \"{TOKEN}\"\n"));
    check(&w, "47810-47819", &["--config", "c.toml"], "admin.token");
}

/// Off loopback a short configured token could be guessed by anyone who reaches the port:
/// `serve` refuses to start, saying why and what to do, without showing the token and
/// before anything is made. Empty or holding a space, one is refused as before.
#[test]
fn a_short_configured_token_is_refused_off_loopback() {
    const TOKEN: &str = "test-token";
    // SIP on an address in use: were the token not refused first, the start would fail
    // there (and not run on).
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let serve = |w: &Workdir, options: &[&str], args: &[&str]| {
        let mut all = options.to_vec();
        all.extend_from_slice(&["serve", "--sip", &taken, "--rtp-ports", "47840-47849"]);
        all.extend_from_slice(args);
        let r = w.run(&all);
        assert!(
            !r.stderr.contains(TOKEN) && !r.stdout.contains(TOKEN),
            "{r:?}"
        );
        assert!(!w.db().exists(), "{r:?}");
        r
    };
    let mut w = Workdir::new();
    w.env.push(("VPORTAL_ADMIN_TOKEN".into(), TOKEN.into()));
    // (Refused before anything is bound.)
    let r = serve(&w, &[], &["--admin", "0.0.0.0:48401", "--admin-insecure"]);
    r.refused(
        "error: VPORTAL_ADMIN_TOKEN is shorter than 32 characters and the admin API would \
         listen on 0.0.0.0:48401, off loopback, where anyone who reaches it could guess such \
         a token: set one of at least 32 characters (e.g. `openssl rand -hex 32`), or keep \
         the admin API on loopback (--admin 127.0.0.1:48401)\n",
    );
    // From the config file, on the IPv6 wildcard.
    let w = Workdir::new();
    w.write_config(&format!(
        "[admin]\nlisten = \"[::]:0\"\ninsecure = true\ntoken = \"{TOKEN}\"\n"
    ));
    let r = serve(&w, &["--config", "c.toml"], &[]);
    r.refused("admin.token is shorter than 32 characters and the admin API would listen on [::]:0, off loopback");
    // Empty or with a space: refused wherever it listens.
    for (token, says) in [
        (
            "test token",
            "VPORTAL_ADMIN_TOKEN: an admin token must not be empty nor hold white space",
        ),
        ("", "udp"),
    ] {
        let mut w = Workdir::new();
        w.env.push(("VPORTAL_ADMIN_TOKEN".into(), token.into()));
        let r = serve(&w, &[], &["--admin", "127.0.0.1:0"]);
        r.refused(says);
    }
    let w = Workdir::new();
    w.write_config("[admin]\ntoken = \"\"\n");
    let r = serve(&w, &["--config", "c.toml"], &[]);
    r.refused("line 2, key admin.token: an admin token must not be empty nor hold white space");
}

/// A first `serve` given a token (`VPORTAL_ADMIN_TOKEN`) says that one is taken, rather
/// than that the API has none.
#[test]
fn a_first_start_with_a_configured_token_says_it_is_taken() {
    use common::server::ServerProcess;
    let mut w = Workdir::new();
    let token = "k3Jv9Qx7Lm2Pz8Wd4Rt6Yb1Nc5Hs0Fga";
    w.env.push(("VPORTAL_ADMIN_TOKEN".into(), token.into()));
    let mut server = ServerProcess::start(&w, "48310-48319", &[]);
    let stdout = server.stdout.lock().unwrap().clone();
    assert!(
        stdout.contains("the token from VPORTAL_ADMIN_TOKEN is taken"),
        "{stdout}"
    );
    assert!(!stdout.contains("not a terminal"), "{stdout}");
    assert!(!stdout.contains(token), "{stdout}");
    let admin = server.admin.unwrap();
    let r = common::http::request(admin, "GET", "/api/v1/users", Some(token), None);
    assert_eq!(r.status, 200, "{}", r.body);
    server.terminate(Duration::from_secs(10));
}

/// A first `serve` whose standard output is not a terminal makes the database but no admin
/// token. `init` then makes one (named as a first `init` names it) and prints it as a first
/// `init` does, the token alone on standard output; the running server takes it at once.
/// Once a token exists, `init` says the database is initialised and makes none; with every
/// token revoked it makes one again.
#[test]
fn init_makes_a_token_for_a_database_that_has_none() {
    use common::http;
    use common::server::ServerProcess;
    let w = Workdir::new();
    let server = ServerProcess::start(&w, "47820-47829", &[]);
    assert!(
        server
            .stdout
            .lock()
            .unwrap()
            .contains("No admin API token made"),
        "{}",
        server.stdout.lock().unwrap()
    );
    let admin = server.admin.unwrap();
    let get = |token: &str| http::request(admin, "GET", "/api/v1/users", Some(token), None);
    let first = w.run(&["init"]).ok();
    let token = first.stdout.strip_suffix('\n').expect("one line");
    assert!(
        token.starts_with("vpt_") && token.len() == 68,
        "{}",
        first.stdout
    );
    for says in [
        "vportal.db was already initialised, but had no admin token: made one.",
        "Admin API token \"admin\" (shown only this once) written to standard output.",
        "Next: add a mailbox, e.g. `vportal user add 1001 --generate`.",
    ] {
        assert!(first.stderr.contains(says), "{}", first.stderr);
    }
    assert!(!first.stderr.contains("vpt_"), "{}", first.stderr);
    assert_eq!(get(token).status, 200);
    // A token there: nothing made.
    let again = w.run(&["init"]).ok();
    assert_eq!(again.stdout, "");
    assert!(
        again.stderr.contains("vportal.db is already initialised"),
        "{}",
        again.stderr
    );
    assert!(!again.stdout.contains("vpt_") && !again.stderr.contains("vpt_"));
    let tokens = w.run(&["--json", "token", "list"]).ok().json();
    assert_eq!(tokens.as_array().map(Vec::len), Some(1), "{tokens}");
    assert_eq!(tokens[0]["name"], "admin");
    // Every token revoked: made again, with the name asked for; `--json` says the database
    // was not created.
    w.run(&["token", "revoke", "admin"]).ok();
    assert_eq!(get(token).status, 401);
    let made = w
        .run(&["--json", "init", "--token-name", "ops"])
        .ok()
        .json();
    assert_eq!(made["database"], "vportal.db", "{made}");
    assert_eq!(made["created"], false, "{made}");
    assert_eq!(made["token_name"], "ops", "{made}");
    let ops = made["token"].as_str().unwrap();
    assert_eq!(get(ops).status, 200);
    let again = w.run(&["--json", "init"]).ok().json();
    assert_eq!(
        again,
        serde_json::json!({"database": "vportal.db", "created": false})
    );
}

/// The contract names the default prompts `prompts/en`: a language's folder itself (holding
/// `prompts.toml`), given as `--prompts` or as `prompts.dir`, is taken as that language's
/// prompts, the log saying which folder; the server starts. It cannot be two languages'.
#[test]
fn a_prompts_folder_of_one_language_is_taken_as_its_prompts() {
    use common::server::{ServerProcess, UNSET_PROMPTS};
    let en = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/en");
    let taken = format!(
        "INFO vportal::cli::serve: the prompts folder holds prompts.toml itself: using it as \
         this language's prompts language=\"en\" folder={en}"
    );
    let w = Workdir::new();
    let server = ServerProcess::start(&w, "47830-47834", &["--no-admin", "--prompts", en]);
    server.expect_log(&taken, 1, Duration::from_secs(5));
    server.expect_log(
        "prompts loaded language=\"en\" prompts=",
        1,
        Duration::from_secs(5),
    );
    drop(server);
    let w = Workdir::new();
    w.write_config(&format!("[prompts]\ndir = {en:?}\n"));
    let server = ServerProcess::start(
        &w,
        "47835-47839",
        &["--no-admin", "--config", "c.toml", UNSET_PROMPTS],
    );
    server.expect_log(&taken, 1, Duration::from_secs(5));
    drop(server);
    // A second language would be played the first one's prompts: refused, saying so.
    let w = Workdir::new();
    std::fs::write(
        w.path().join("plan.toml"),
        "[[route]]\nmatch = \"8500\"\napplication = \"voice-portal\"\n\n\
         [[route]]\nmatch = \"8501\"\napplication = \"voice-portal\"\nlanguage = \"xx\"\n",
    )
    .unwrap();
    w.write_config("[dialplan]\nfile = \"plan.toml\"\n");
    // SIP on an address in use: were the prompts not refused, the start would stop there.
    let in_use = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let in_use = in_use.local_addr().unwrap().to_string();
    let r = w.run(&[
        "--config",
        "c.toml",
        "serve",
        "--sip",
        &in_use,
        "--no-admin",
        "--prompts",
        en,
    ]);
    r.refused(&format!(
        "{en} holds one prompt set (prompts.toml), not one folder per language: it cannot be \
         the prompts of both \"en\" and \"xx\" (plan.toml, line 8, key route[2].language)"
    ));
    assert!(!w.db().exists());
}
