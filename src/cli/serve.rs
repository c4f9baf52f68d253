//! `vportal serve`: the voice portal itself.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};

use vportal::admin::{AdminError, AdminServer, AdminState, Listen, MIN_CONFIGURED_TOKEN, Throttle};
use vportal::config::{
    AdminConfig, Config, ConfiguredToken, DEFAULT_DIALPLAN_FILE, DEFAULT_PROMPTS_DIR, SipConfig,
    parse_listen_address,
};
use vportal::ivr::dialplan::{DEFAULT_DIALPLAN, Dialplan, MailboxSource};
use vportal::media::ports::PortRange;
use vportal::media::prompts::{BUILT_IN_LANGUAGE, MANIFEST, PromptSet};
use vportal::server::{Server, SipSockets};
use vportal::store::{Actor, PepperSource, Store};
use vportal::time::Timestamp;

use super::output::outln;
use super::{Context, created_json, created_lines};

/// `serve`'s flags, which override the configuration.
#[derive(Debug, clap::Args)]
pub(crate) struct Flags {
    /// SIP listen address for UDP and TCP (default 127.0.0.1:5060).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_address)]
    sip: Option<SocketAddr>,
    /// RTP port range, e.g. 10000-20000.
    #[arg(long, value_name = "FIRST-LAST")]
    rtp_ports: Option<PortRange>,
    /// The prompts folder, holding one sub-folder per language (default ./prompts), or one
    /// language's folder itself (prompts/en).
    #[arg(long, value_name = "DIR")]
    prompts: Option<PathBuf>,
    /// Admin HTTP side-port address (default 127.0.0.1:8080); runs it even when the config
    /// file says `[admin] enabled = false`.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_address)]
    admin: Option<SocketAddr>,
    /// Allow the admin side-port on a non-loopback address without TLS.
    #[arg(long)]
    admin_insecure: bool,
    /// Do not run the admin side-port.
    #[arg(long, conflicts_with_all = ["admin", "admin_insecure"])]
    no_admin: bool,
}

pub(crate) fn run(mut ctx: Context, flags: Flags) -> Result<ExitCode> {
    let sip_flag = flags.sip.is_some();
    apply_flags(&mut ctx.config, flags);
    check_settings(&ctx, sip_flag)?;
    let configured_token = configured_token(&ctx.config.admin)?;
    check_token_length(configured_token.as_ref(), &ctx.config.admin)?;
    // Taken only by a running admin API.
    let token_from = configured_token
        .as_ref()
        .filter(|_| ctx.config.admin.enabled)
        .map(|(_, from)| *from);
    let configured_token = configured_token.map(|(token, _)| token);
    raise_open_files_limit(&ctx.config.sip, ctx.config.rtp.ports.calls());
    warn_about_sip(&ctx.config.sip);
    // Everything that can be wrong with the files is found before a first run creates the
    // database and hands out its token.
    let dialplan = load_dialplan(ctx.config.dialplan.file.as_deref())?;
    warn_about_dialplan(&dialplan, &ctx.config.sip);
    let prompts = load_prompts(ctx.config.prompts.dir.as_deref(), &dialplan)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vportal")
        .build()
        .context("starting the runtime")?;
    let metrics = vportal::admin::metrics::install().context("installing the metrics recorder")?;
    // The addresses too: one in use, or one that cannot work, is found before the database
    // is made.
    let (sockets, admin) = runtime.block_on(async {
        // Before the database is opened (and on a first run made).
        catch_file_size_signal();
        ignore_hangup_signal();
        let sockets = SipSockets::bind(&ctx.config.sip).await?;
        let admin = if ctx.config.admin.enabled {
            Some(AdminServer::bind(&admin_listen(&ctx.config.admin)?).await?)
        } else {
            None
        };
        anyhow::Ok((sockets, admin))
    })?;
    // Opening the store creates it on a first run and checks the pepper before any call.
    let (store, created) = ctx.open_with(super::Create::InExistingDirectory)?;
    refuse_unusable_store(&ctx, &store)?;
    if let Some(source) = created {
        // Those lines are for whoever watches; a standard output nobody reads (a pipe whose
        // reader went away) must not stop a server, nor pass for a clean exit. No token is
        // made then: one is only shown on a terminal.
        match first_run_lines(&ctx, &store, &source, token_from) {
            Err(e) if !super::secrets_due() && stdout_failed(&e) => {
                tracing::warn!(error = %e, "the first-run lines could not be written to standard output");
            }
            result => result?,
        }
    }
    warn_about_side_port(&ctx, &store, configured_token.is_some())?;
    // The hash an unknown mailbox is checked against, made now: made at the first such
    // login instead, that login would take twice as long as a known mailbox's.
    store.hasher().prepare_dummy()?;
    let config = ctx.config;
    // The server runs as a task on the runtime's workers rather than on this thread: the SIP
    // task and the call tasks then share a worker (one per core) and hand each other
    // messages without waking another thread. (On one core, running the SIP task here cost
    // two thread switches per SIP message.)
    let server = async move {
        let store = Arc::new(store);
        let server = Server::new(
            sockets,
            &config,
            Arc::new(dialplan),
            Arc::clone(&store),
            prompts,
        )?;
        tokio::spawn(vportal::admin::metrics::upkeep(metrics.clone()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let admin = if let Some(bound) = admin {
            let state = Arc::new(AdminState {
                store,
                calls: server.active_calls(),
                metrics: Some(metrics),
                metrics_auth: config.admin.metrics_auth,
                configured_token,
                throttle: Throttle::default(),
                hash_permits: server.hash_permits(),
                bulk_permits: vportal::admin::bulk_permits(),
            });
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(bound.run(state, async move {
                let _ = stop.wait_for(|s| *s).await;
            })))
        } else {
            tracing::info!("admin API off ([admin] enabled = false, or --no-admin)");
            None
        };
        let ran = server
            .run(stop_signal(StopSignals::new(), Arc::clone(&stop_tx)))
            .await;
        // Stopped by a signal, the admin API is already stopping; stopped by a failure, not.
        let _ = stop_tx.send(true);
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        ran?;
        anyhow::Ok(())
    };
    runtime.block_on(async move {
        tokio::spawn(server)
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the server task failed: {e}")))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Settings each valid alone that cannot work together, found before anything is loaded,
/// and said with where they came from: the config file, or `--sip` over it.
fn check_settings(ctx: &Context, sip_flag: bool) -> Result<()> {
    let sip = &ctx.config.sip;
    let admin = &ctx.config.admin;
    let problem = if let Err(problem) = sip.usable() {
        if sip_flag && problem.contains("sip.listen") {
            format!("{problem} (sip.listen from --sip)")
        } else {
            problem
        }
    } else if admin.enabled && admin.tls_cert.is_some() != admin.tls_key.is_some() {
        AdminError::HalfTls.to_string()
    } else {
        return Ok(());
    };
    match &ctx.config_file {
        Some(path) => anyhow::bail!("config file {}: {problem}", path.display()),
        None => anyhow::bail!("{problem}"),
    }
}

/// The command line's settings over the config file's.
fn apply_flags(config: &mut Config, flags: Flags) {
    if let Some(sip) = flags.sip {
        config.sip.listen = sip;
    }
    if let Some(dir) = flags.prompts {
        config.prompts.dir = Some(dir);
    }
    if let Some(ports) = flags.rtp_ports {
        config.rtp.ports = ports;
    }
    if let Some(admin) = flags.admin {
        // Asking for the side-port on an address runs it, whatever the file says.
        config.admin.listen = admin;
        config.admin.enabled = true;
    }
    config.admin.insecure |= flags.admin_insecure;
    if flags.no_admin {
        config.admin.enabled = false;
    }
}

/// Refuses a store on which every login would fail: a stored policy this build cannot
/// read (it is read at every login), or a database this process cannot write.
fn refuse_unusable_store(ctx: &Context, store: &Store) -> Result<()> {
    match store.policy() {
        Err(e) if e.is_unreadable_policy() => {
            anyhow::bail!("{e}: every login would fail; {}", super::POLICY_REMEDY)
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    if store.is_read_only() {
        anyhow::bail!(
            "the database {} is read-only to this process: every login and passcode change \
             would fail (check the mode and owner of the file and its directory, and that the \
             file system is mounted read-write)",
            ctx.store.database.display()
        );
    }
    Ok(())
}

/// Warns about SIP settings that do not do what they say.
fn warn_about_sip(sip: &SipConfig) {
    if sip.tcp_message_timeout > sip.tcp_idle_timeout {
        tracing::warn!(
            tcp_message_timeout = %vportal::time::format_duration(sip.tcp_message_timeout),
            tcp_idle_timeout = %vportal::time::format_duration(sip.tcp_idle_timeout),
            "sip.tcp_message_timeout is longer than sip.tcp_idle_timeout: the idle timeout \
             bounds a message too"
        );
    }
}

/// Warns about a side-port that gives away more than it should, or that nobody can use.
fn warn_about_side_port(ctx: &Context, store: &Store, configured_token: bool) -> Result<()> {
    let side_port = &ctx.config.admin;
    if !side_port.enabled {
        return Ok(());
    }
    if !side_port.metrics_auth && !vportal::net::is_loopback(side_port.listen.ip()) {
        tracing::warn!(
            "/metrics answers without a token off loopback: anyone who reaches it and can \
             place calls can tell an unknown mailbox from a wrong passcode by its login \
             counters; set admin.metrics_auth = true"
        );
    }
    if !configured_token && !store.has_tokens()? {
        tracing::warn!(
            "the admin API has no token: every request to /api/v1 is refused (401); create \
             one with `{} token create NAME`, or set VPORTAL_ADMIN_TOKEN",
            ctx.vportal_command()
        );
    }
    Ok(())
}

/// Completes on the first stop signal (ctrl-c or SIGTERM), having told the admin API to
/// stop through `stop`. A second one then ends the process at once, as operators expect:
/// calls still up get no BYE, and a change not yet stored is lost, which the log says.
async fn stop_signal(mut signals: StopSignals, stop: Arc<tokio::sync::watch::Sender<bool>>) {
    signals.next().await;
    let _ = stop.send(true);
    tokio::spawn(async move {
        signals.next().await;
        tracing::warn!(
            "second stop signal: exiting now, without waiting for calls or passcode changes \
             in flight"
        );
        std::process::exit(2);
    });
}

/// File descriptors the configuration may hold at once: two UDP sockets a call (RTP and
/// RTCP) for as many calls as `sip.max_calls` and the RTP range (`rtp_calls`) both allow,
/// every TCP connection, and a margin for the rest (the SIP sockets, the database and its
/// WAL, the admin side-port's connections, the runtime, the log).
fn open_files_needed(sip: &SipConfig, rtp_calls: usize) -> u64 {
    let calls = u64::try_from(sip.max_calls.min(rtp_calls)).unwrap_or(u64::MAX);
    let tcp = u64::try_from(sip.max_tcp_connections).unwrap_or(u64::MAX);
    calls
        .saturating_mul(2)
        .saturating_add(tcp)
        .saturating_add(256)
}

/// The soft limit to ask for, given the current `soft` and `hard` limits and what is
/// `needed`: never lower than it is, never above the hard limit.
fn open_files_target(soft: u64, hard: u64, needed: u64) -> u64 {
    soft.max(needed.min(hard))
}

/// Raises the soft RLIMIT_NOFILE toward what the configuration needs (systemd starts
/// services at 1,024, enough for about 380 calls), as far as the hard limit allows; warns
/// when that is not enough. Without it, calls past the limit would be refused with 503.
fn raise_open_files_limit(sip: &SipConfig, rtp_calls: usize) {
    use rlimit::Resource;
    let needed = open_files_needed(sip, rtp_calls);
    let (soft, hard) = match Resource::NOFILE.get() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open files limit");
            return;
        }
    };
    let target = open_files_target(soft, hard, needed);
    let mut limit = soft;
    if target > soft {
        match Resource::NOFILE.set(target, hard) {
            Ok(()) => {
                tracing::info!(from = soft, to = target, "open files limit raised");
                limit = target;
            }
            Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
        }
    }
    if limit < needed {
        tracing::warn!(
            limit,
            needed,
            calls = sip.max_calls.min(rtp_calls),
            max_tcp_connections = sip.max_tcp_connections,
            "the open files limit is below what the calls (sip.max_calls, or as many as \
             rtp.ports holds if fewer) and sip.max_tcp_connections need (two sockets a \
             call); calls past it get 503: raise the hard limit (systemd: LimitNOFILE=) or \
             lower sip.max_calls"
        );
    }
}

/// Warns about a dialplan that is valid but likely not what the operator meant: one with
/// no route (every call is refused with 404), routes whose time limit is beyond the
/// server's `sip.max_call_duration` (never reached), and routes that take the mailbox from
/// caller identity from any source while SIP listens beyond loopback (anyone who reaches the
/// port could claim any number, and hear from the prompt whether that mailbox exists).
fn warn_about_dialplan(dialplan: &Dialplan, sip: &SipConfig) {
    if dialplan.routes().is_empty() {
        tracing::warn!("the dialplan has no [[route]]: every call will be refused with 404");
    }
    for route in dialplan.routes() {
        // The server's hard stop comes first: a BYE, without the route's goodbye.
        let limit = route.settings.max_call_duration;
        if limit > sip.max_call_duration {
            tracing::warn!(
                route = %route.pattern,
                max_call_duration = %vportal::time::format_duration(limit),
                sip_max_call_duration = %vportal::time::format_duration(sip.max_call_duration),
                "this route's time limit is never reached: sip.max_call_duration ends its calls \
                 first, with a BYE and no prompt; raise sip.max_call_duration or lower the route's"
            );
        }
    }
    if vportal::net::is_loopback(sip.listen.ip()) {
        return;
    }
    for route in dialplan.routes() {
        let s = &route.settings;
        if s.mailbox == MailboxSource::CallerId && s.trusted_sources.is_empty() {
            tracing::warn!(
                route = %route.pattern,
                "this route believes caller identity from every source: list the proxies \
                 or SBCs that set it in trusted_sources"
            );
        }
    }
}

/// The configured dialplan; when none is configured and the default file is not there
/// (running from another directory than the source tree), the compiled-in default. A file
/// configured is never replaced by another: one missing is an error.
fn load_dialplan(path: Option<&Path>) -> Result<Dialplan> {
    let default = Path::new(DEFAULT_DIALPLAN_FILE);
    match path {
        None if !default.exists() => {
            tracing::info!(
                "{DEFAULT_DIALPLAN_FILE} not found; using the built-in default dialplan"
            );
            Ok(Dialplan::parse(
                DEFAULT_DIALPLAN,
                "built-in default dialplan",
            )?)
        }
        path => Ok(vportal::server::load_dialplan(path.unwrap_or(default))?),
    }
}

/// The name of `dir` when it reads as a two-letter language tag (`en`, `pt-BR`, `en_GB`)
/// of another language than `language`'s: a folder of another language's prompts, given
/// for this one. Regional variants of one language (`en` for `en-GB`) are the same
/// language; a three-letter name (`ivr`, `wav`) is taken for no tag.
fn named_for_another_language<'a>(dir: &'a Path, language: &str) -> Option<&'a str> {
    let name = dir.file_name()?.to_str()?;
    let primary = |tag: &'a str| tag.split(['-', '_']).next().unwrap_or(tag);
    let (first, region) = match name.split_once(['-', '_']) {
        Some((first, region)) => (first, Some(region)),
        None => (name, None),
    };
    let tag = first.len() == 2
        && first.bytes().all(|b| b.is_ascii_alphabetic())
        && region.is_none_or(|r| {
            (2..=4).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    let language_primary = language.split(['-', '_']).next().unwrap_or(language);
    (tag && !primary(name).eq_ignore_ascii_case(language_primary)).then_some(name)
}

/// The prompt set of every language the dialplan's routes use (`<dir>/<language>`), or the
/// built-in English set when no folder is configured and the default one has no `en`
/// (running from another directory than the source tree). `dir` may also be one language's
/// folder itself (`prompts/en`, holding `prompts.toml`): where `<dir>/<language>` has no
/// manifest, `dir` is that language's folder, for one language only (a second would be
/// played another's prompts). A missing or undecodable prompt stops the start with an
/// error naming the file.
fn load_prompts(
    dir: Option<&Path>,
    dialplan: &Dialplan,
) -> Result<HashMap<String, Arc<PromptSet>>> {
    let given = dir.is_some();
    let dir = dir.unwrap_or_else(|| Path::new(DEFAULT_PROMPTS_DIR));
    // A typo in the folder is the folder's, not the dialplan language's that would be
    // named below.
    if given && !dir.is_dir() {
        anyhow::bail!(
            "the prompts folder {} (--prompts, or prompts.dir in the configuration) is not \
             there or not a folder",
            dir.display()
        );
    }
    let one_set = dir.join(MANIFEST).exists();
    // The language `dir` itself was taken for.
    let mut dir_is: Option<&str> = None;
    let mut sets = HashMap::new();
    for route in dialplan.routes() {
        let language = &route.settings.language;
        if sets.contains_key(language) {
            continue;
        }
        let mut folder = dir.join(language);
        if one_set && !folder.join(MANIFEST).exists() {
            if let Some(first) = dir_is {
                anyhow::bail!(
                    "{} holds one prompt set ({MANIFEST}), not one folder per language: it \
                     cannot be the prompts of both {first:?} and {language:?} ({}); give the \
                     folder that holds a folder per language",
                    dir.display(),
                    route
                        .settings
                        .language_set_at
                        .as_deref()
                        .unwrap_or("the default language")
                );
            }
            if let Some(named) = named_for_another_language(dir, language) {
                tracing::warn!(
                    language,
                    folder = %dir.display(),
                    "the prompts folder holds {MANIFEST} itself and is named for another \
                     language ({named}): callers of this language will hear its prompts"
                );
            } else {
                tracing::info!(
                    language,
                    folder = %dir.display(),
                    "the prompts folder holds {MANIFEST} itself: using it as this language's \
                     prompts"
                );
            }
            dir_is = Some(language);
            folder = dir.to_owned();
        }
        let set = if !given && language == BUILT_IN_LANGUAGE && !folder.exists() {
            // Run from another directory than the source tree, as for the dialplan.
            tracing::info!(
                "{} not found; using the built-in English prompts",
                folder.display()
            );
            PromptSet::built_in()?
        } else {
            vportal::server::load_prompts(&folder).with_context(|| {
                let set_at = route.settings.language_set_at.as_deref();
                format!(
                    "the prompts for language {language:?} ({})",
                    set_at.unwrap_or("the default language")
                )
            })?
        };
        // Ids vportal never plays are kept (a site may stage recordings), but a misspelt id
        // would leave the prompt it meant to replace as it was, without a word.
        for id in set
            .ids()
            .filter(|id| !vportal::media::prompts::is_played(id))
        {
            tracing::warn!(
                language,
                id,
                "prompt id in prompts.toml is not one vportal plays: loaded, never heard (misspelt?)"
            );
        }
        tracing::info!(language, prompts = set.ids().count(), "prompts loaded");
        sets.insert(language.clone(), Arc::new(set));
    }
    Ok(sets)
}

/// The token besides the database's: `VPORTAL_ADMIN_TOKEN` when set, else `admin.token`;
/// with where it came from.
fn configured_token(config: &AdminConfig) -> Result<Option<(ConfiguredToken, &'static str)>> {
    match std::env::var("VPORTAL_ADMIN_TOKEN") {
        Ok(token) if token.is_empty() => {}
        Ok(token) => {
            let token = ConfiguredToken::new(token)
                .map_err(|e| anyhow::anyhow!("VPORTAL_ADMIN_TOKEN: {e}"))?;
            return Ok(Some((token, "VPORTAL_ADMIN_TOKEN")));
        }
        Err(std::env::VarError::NotPresent) => {}
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("VPORTAL_ADMIN_TOKEN is not valid text")
        }
    }
    Ok(config.token.clone().map(|token| (token, "admin.token")))
}

/// A configured token shorter than [`MIN_CONFIGURED_TOKEN`] (a test harness's known one) is
/// taken, with a warning, while the side-port listens on loopback only, where only this
/// host's own processes reach it. Off loopback, where anyone who reaches the port could
/// guess it, it stops the start. Neither message shows the token, nor its length. Unused
/// (no side-port), it is not looked at.
fn check_token_length(token: Option<&(ConfiguredToken, &str)>, admin: &AdminConfig) -> Result<()> {
    let Some((token, source)) = token else {
        return Ok(());
    };
    if !admin.enabled || !token.is_short() {
        return Ok(());
    }
    if !vportal::net::is_loopback(admin.listen.ip()) {
        anyhow::bail!(
            "{source} is shorter than {MIN_CONFIGURED_TOKEN} characters and the admin API \
             would listen on {}, off loopback, where anyone who reaches it could guess such a \
             token: set one of at least {MIN_CONFIGURED_TOKEN} characters (e.g. `openssl rand \
             -hex 32`), or keep the admin API on loopback (--admin 127.0.0.1:{})",
            admin.listen,
            admin.listen.port()
        );
    }
    tracing::warn!(
        "{source} is shorter than {MIN_CONFIGURED_TOKEN} characters: taken because the admin \
         API listens on loopback only ({}); off loopback it would be refused. For anything \
         but a test, set one of at least {MIN_CONFIGURED_TOKEN} (e.g. `openssl rand -hex 32`)",
        admin.listen
    );
    Ok(())
}

fn admin_listen(config: &AdminConfig) -> Result<Listen> {
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            super::warn_if_others_can_read(key, 0o007, "the admin TLS key is a secret");
            Some((cert.clone(), key.clone()))
        }
        (None, None) => None,
        _ => return Err(AdminError::HalfTls.into()),
    };
    Ok(Listen {
        addr: config.listen,
        tls,
        insecure: config.insecure,
    })
}

/// A file-size limit (`ulimit -f`, systemd's `LimitFSIZE=`) that the database or its WAL
/// reaches would kill the process with SIGXFSZ, and every call with it, without a word.
/// Caught, the write fails instead (EFBIG) and is reported as the database's disk failing.
/// (tokio's handler stays for the life of the process.)
fn catch_file_size_signal() {
    let file_size = tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ);
    if let Err(e) = tokio::signal::unix::signal(file_size) {
        tracing::warn!(error = %e, "cannot catch SIGXFSZ: a file-size limit reached would kill the server");
    }
}

/// SIGHUP would end the process at once, every call with it, without a BYE or a word: it is
/// what a terminal's closing sends, and what operators send out of habit to make a daemon
/// read its configuration again. vportal does not reload; it says so and goes on.
fn ignore_hangup_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::warn!(
                        "SIGHUP ignored: vportal does not reload its configuration; restart it \
                         (SIGTERM stops it gracefully) to apply changes"
                    );
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot catch SIGHUP: it would kill the server"),
    }
}

/// The stop signals, ctrl-c (SIGINT) and SIGTERM, listened for from start-up on. One
/// listener serves the first signal and the second: a listener made after the first was
/// acted on would miss a second one sent meanwhile (a quick double ctrl-c), and the server
/// would wait out its shutdown grace instead of exiting at once.
struct StopSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind)
                    .inspect_err(|e| tracing::warn!(error = %e, "cannot catch {name}"))
                    .ok()
            };
            Self {
                interrupt: listen(SignalKind::interrupt(), "SIGINT"),
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Completes on the next stop signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
                match signal {
                    Some(signal) => signal.recv().await,
                    None => None,
                }
            }
            tokio::select! {
                Some(()) = recv(&mut self.interrupt) => {}
                Some(()) = recv(&mut self.terminate) => {}
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Whether `e` is a failure to write standard output (the only I/O `first_run_lines` does).
fn stdout_failed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.is::<std::io::Error>())
}

/// What a first run says on standard output: as `vportal init` would, plus how to go on
/// (with `--json`, the same as one object). The token is made and shown only to a
/// terminal: a service's standard output is a log (the journal, a container's log), and a
/// token must never reach one.
///
/// `configured` names where a token the server is given comes from, if one is: then the
/// API is usable without one from the database, and the lines say so.
fn first_run_lines(
    ctx: &Context,
    store: &Store,
    source: &PepperSource,
    configured: Option<&str>,
) -> Result<()> {
    let terminal = std::io::stdout().is_terminal();
    let make_token = || {
        if !terminal {
            return Ok(None);
        }
        match store.create_token("admin", &Actor::cli_from_env(), Timestamp::now()) {
            Ok(token) => Ok(Some(token)),
            // Another first run at the same moment made it.
            Err(vportal::store::StoreError::TokenExists(_)) => Ok(None),
            Err(e) => Err(e),
        }
    };
    if ctx.json {
        // One line: a service's standard output is read line by line (the journal, a log
        // collector taking each line as a JSON document).
        let mut answer = created_json(&ctx.store.database, source);
        let token = make_token();
        let made = token.as_ref().ok().and_then(Option::as_ref);
        answer["token_name"] = serde_json::json!(made.map(|_| "admin"));
        answer["token"] = serde_json::json!(made.map(|t| t.expose()));
        if made.is_some() {
            super::output::secrets_follow();
        }
        outln!("{answer}")?;
        token?;
        return Ok(());
    }
    // What was made is said first: a token that then cannot be made does not hide it.
    for line in created_lines(&ctx.store.database, source) {
        outln!("{line}")?;
    }
    // Run elsewhere, they must reach this store: with the options that chose it.
    let vportal = ctx.vportal_command();
    if let Some(token) = make_token()? {
        super::output::secrets_follow();
        outln!(
            "Admin API token \"admin\" (shown only this once): {}",
            token.expose()
        )?;
    } else if let Some(from) = configured {
        outln!(
            "No admin API token made in the database: the token from {from} is taken. Make \
             one of the database's with `{vportal} token create admin`."
        )?;
    } else if !terminal {
        outln!(
            "No admin API token made: standard output is not a terminal, and a token must \
             not land in a log. Make one with `{vportal} token create admin`."
        )?;
    }
    outln!(
        "No mailboxes yet: add one with `{vportal} user add 1001 --generate` (in \
         another terminal)."
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_prompts_folder_named_for_another_language_is_noticed() {
        let named = |dir: &str, language: &str| {
            named_for_another_language(Path::new(dir), language).map(str::to_owned)
        };
        assert_eq!(named("/srv/prompts/en", "fr").as_deref(), Some("en"));
        assert_eq!(named("prompts/pt-BR", "es").as_deref(), Some("pt-BR"));
        for (dir, language) in [
            ("/srv/prompts/en", "en"),
            ("/srv/prompts/EN", "en"),
            ("prompts/en_GB", "en-GB"),
            // One language's regional variants.
            ("prompts/en", "en-GB"),
            ("prompts/en-US", "en"),
            // Not a language tag: nothing to say.
            ("/srv/voice", "fr"),
            ("/srv/french", "fr"),
            ("/srv/prompts-2026", "fr"),
            ("/opt/vportal/ivr", "en"),
            ("/var/lib/vportal/wav", "fr"),
            ("/srv/prompts/new", "en"),
        ] {
            assert_eq!(named(dir, language), None, "{dir} for {language}");
        }
    }

    #[test]
    fn the_open_files_limit_is_raised_to_what_the_calls_need_within_the_hard_limit() {
        let defaults = SipConfig::default();
        let rtp_calls = vportal::config::RtpConfig::default().ports.calls();
        assert_eq!(rtp_calls, 5_000);
        // 5,000 calls of two sockets, 1,024 TCP connections and the margin.
        assert_eq!(open_files_needed(&defaults, rtp_calls), 11_280);
        let small = SipConfig {
            max_calls: 10,
            max_tcp_connections: 0,
            ..SipConfig::default()
        };
        assert_eq!(open_files_needed(&small, rtp_calls), 276);
        // An RTP range for 5 calls: 5 calls' sockets, whatever max_calls says.
        assert_eq!(open_files_needed(&defaults, 5), 10 + 1_024 + 256);
        // systemd's 1,024 soft limit under its 524,288 hard one: raised to what is needed.
        assert_eq!(open_files_target(1_024, 524_288, 11_280), 11_280);
        // A hard limit below it: as far as it goes.
        assert_eq!(open_files_target(1_024, 4_096, 11_280), 4_096);
        // Never lowered.
        assert_eq!(open_files_target(1_048_576, 1_048_576, 11_280), 1_048_576);
        assert_eq!(open_files_target(300, 200, 11_280), 300);
    }

    /// What `warn_about_dialplan` logs for `dialplan` listening on `listen`.
    fn warnings(dialplan: &str, listen: &str) -> String {
        let plan = Dialplan::parse(dialplan, "test").unwrap();
        let sip = SipConfig {
            listen: listen.parse().unwrap(),
            ..SipConfig::default()
        };
        logged(|| warn_about_dialplan(&plan, &sip))
    }

    #[test]
    fn a_route_time_limit_beyond_the_servers_is_a_warning() {
        let route = |limit: &str| {
            format!(
                "[[route]]\nmatch = \"8500\"\napplication = \"voice-portal\"\n\
                 max_call_duration = \"{limit}\"\n"
            )
        };
        // The server's hard stop is an hour by default.
        assert_eq!(warnings(&route("1h"), "127.0.0.1:5060"), "");
        let said = warnings(&route("2h"), "127.0.0.1:5060");
        assert!(
            said.contains("WARN")
                && said.contains("route=8500")
                && said.contains("max_call_duration=2h")
                && said.contains("sip_max_call_duration=1h"),
            "{said}"
        );
    }

    /// What `f` logs.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn caller_id_from_every_source_is_a_warning_off_loopback() {
        assert_eq!(warnings(DEFAULT_DIALPLAN, "127.0.0.1:5060"), "");
        assert_eq!(warnings(DEFAULT_DIALPLAN, "[::1]:5060"), "");
        assert_eq!(warnings(DEFAULT_DIALPLAN, "[::ffff:127.0.0.1]:5060"), "");
        assert!(warnings(DEFAULT_DIALPLAN, "[::]:5060").contains("route=*86"));
        let off_loopback = warnings(DEFAULT_DIALPLAN, "0.0.0.0:5060");
        assert!(
            off_loopback.contains("WARN") && off_loopback.contains("route=*86"),
            "{off_loopback}"
        );
        assert!(!off_loopback.contains("no [[route]]"), "{off_loopback}");
    }

    #[test]
    fn a_tcp_message_timeout_beyond_the_idle_one_is_a_warning() {
        let sip = |message, idle| SipConfig {
            tcp_message_timeout: std::time::Duration::from_secs(message),
            tcp_idle_timeout: std::time::Duration::from_secs(idle),
            ..SipConfig::default()
        };
        assert_eq!(logged(|| warn_about_sip(&SipConfig::default())), "");
        assert_eq!(logged(|| warn_about_sip(&sip(300, 300))), "");
        let said = logged(|| warn_about_sip(&sip(600, 300)));
        assert!(
            said.contains("WARN")
                && said.contains("tcp_message_timeout=10m")
                && said.contains("tcp_idle_timeout=5m"),
            "{said}"
        );
    }

    #[test]
    fn a_prompts_folder_that_is_not_there_is_named_as_such() {
        let plan = Dialplan::parse(DEFAULT_DIALPLAN, "test").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nosuch");
        let e = load_prompts(Some(&missing), &plan).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "the prompts folder {} (--prompts, or prompts.dir in the configuration) is \
                 not there or not a folder",
                missing.display()
            )
        );
        assert!(!e.contains("language"), "{e}");
        // There, but without the dialplan's language: the language is named.
        let e = load_prompts(Some(dir.path()), &plan)
            .unwrap_err()
            .to_string();
        assert!(e.contains("language \"en\""), "{e}");
    }

    #[test]
    fn a_dialplan_without_routes_is_a_warning() {
        for text in ["", "[defaults]\nattempts = 4\n"] {
            let logged = warnings(text, "127.0.0.1:5060");
            assert!(
                logged.contains("WARN")
                    && logged.contains("no [[route]]: every call will be refused"),
                "{logged}"
            );
        }
    }
}
