//! `vportal serve`: the voice portal itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};

use vportal::config::DEFAULT_DIALPLAN_FILE;
use vportal::ivr::dialplan::{DEFAULT_DIALPLAN, Dialplan};
use vportal::media::ports::PortRange;
use vportal::media::prompts::PromptSet;
use vportal::server::Server;
use vportal::store::Actor;
use vportal::time::Timestamp;

use super::Context;
use super::output::outln;

pub(crate) fn run(
    mut ctx: Context,
    sip: Option<SocketAddr>,
    rtp_ports: Option<PortRange>,
    prompts: Option<PathBuf>,
) -> Result<ExitCode> {
    if let Some(sip) = sip {
        ctx.config.sip.listen = sip;
    }
    if let Some(dir) = prompts {
        ctx.config.prompts.dir = dir;
    }
    if let Some(ports) = rtp_ports {
        ctx.config.rtp.ports = ports;
    }
    // Opening the store creates it on a first run and checks the pepper before any call.
    let (store, created) = ctx.open_with(true)?;
    if created {
        // First run in this directory: as `vportal init` would, plus how to go on.
        let token = store.create_token("admin", &Actor::cli_from_env(), Timestamp::now())?;
        outln!(
            "Created {} and its pepper file {}.",
            ctx.store.database.display(),
            ctx.store.pepper_path().display()
        )?;
        outln!(
            "Admin API token \"admin\" (shown only this once): {}",
            token.expose()
        )?;
        outln!(
            "No mailboxes yet: add one with `vportal user add 1001 --generate` (in another terminal)."
        )?;
    }
    let dialplan = load_dialplan(&ctx.config.dialplan.file)?;
    let prompts = load_prompts(&ctx.config.prompts.dir, &dialplan)?;
    let config = ctx.config;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vportal")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(&config, Arc::new(dialplan), Arc::new(store), prompts).await?;
        server.run(shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The configured dialplan; the compiled-in default when the default file is not there
/// (running from another directory than the source tree).
fn load_dialplan(path: &Path) -> Result<Dialplan> {
    if path == Path::new(DEFAULT_DIALPLAN_FILE) && !path.exists() {
        tracing::info!("{DEFAULT_DIALPLAN_FILE} not found; using the built-in default dialplan");
        return Ok(Dialplan::parse(
            DEFAULT_DIALPLAN,
            "built-in default dialplan",
        )?);
    }
    Ok(Dialplan::load(path)?)
}

/// The prompt set of every language the dialplan's routes use (`<dir>/<language>`). A
/// missing or undecodable prompt stops the start with an error naming the file.
fn load_prompts(dir: &Path, dialplan: &Dialplan) -> Result<HashMap<String, Arc<PromptSet>>> {
    let mut sets = HashMap::new();
    for route in dialplan.routes() {
        let language = &route.settings.language;
        if sets.contains_key(language) {
            continue;
        }
        let set = PromptSet::load(&dir.join(language))?;
        tracing::info!(language, prompts = set.ids().count(), "prompts loaded");
        sets.insert(language.clone(), Arc::new(set));
    }
    Ok(sets)
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
