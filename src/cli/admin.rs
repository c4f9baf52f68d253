//! `vportal init`, `report`, `audit`, `policy …` and `token …`.

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::json;

use vportal::store::{Actor, AuditQuery, Event, Policy, Store, StoreError, check_token_name};
use vportal::time::{Timestamp, format_duration, parse_duration};

use super::output::{self, Table, errln, out, outln};
use super::{Context, PolicyCommand, TokenCommand, created_lines, extension, read_passcode};

pub(crate) fn init(ctx: &Context, token_name: &str) -> Result<ExitCode> {
    // Before anything is created: a database without its token would stay that way.
    check_token_name(token_name)?;
    let (store, created) = ctx.open_with(super::Create::WithDirectories)?;
    let db = ctx.store.database.display();
    // A database already there gets a token too when it has none: a first `serve` whose
    // standard output is not a terminal makes the database but no token, and `init` is
    // then the way to one.
    let needs_token = created.is_some() || has_no_token(&store, &ctx.store.database)?;
    // Two first runs at once (two replicas, a retried provisioning step) both find no
    // database, or no token; the one whose token is made second finds it taken: the other
    // made it.
    let token = if needs_token {
        match store.create_token(token_name, &Actor::cli_from_env(), Timestamp::now()) {
            Ok(token) => Some(token),
            Err(StoreError::TokenExists(_)) => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let Some(token) = token else {
        let said = format!(
            "{db} is already initialised; create more admin tokens with `{} token \
             create NAME`.",
            ctx.vportal_command()
        );
        if ctx.json {
            output::json(&json!({"database": db.to_string(), "created": false}))?;
        } else if std::io::stdout().is_terminal() {
            outln!("{said}")?;
        } else {
            // Read by a script (`TOKEN=$(vportal init)`): no token, and nothing taken for one.
            errln!("{said}");
        }
        return Ok(ExitCode::SUCCESS);
    };
    output::secrets_follow();
    if ctx.json {
        let mut answer = match &created {
            Some(source) => super::created_json(&ctx.store.database, source),
            None => json!({"database": db.to_string(), "created": false}),
        };
        answer["token_name"] = json!(token_name);
        answer["token"] = json!(token.expose());
        output::json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let made: Vec<String> = match &created {
        Some(source) => created_lines(&ctx.store.database, source).into(),
        None => vec![format!(
            "{db} was already initialised, but had no admin token: made one."
        )],
    };
    let next = format!(
        "Next: add a mailbox, e.g. `{} user add 1001 --generate`.",
        ctx.vportal_command()
    );
    if std::io::stdout().is_terminal() {
        for line in made {
            outln!("{line}")?;
        }
        outln!()?;
        outln!("Admin API token {token_name:?} (shown only this once):")?;
        outln!("{}", token.expose())?;
        outln!()?;
        outln!("{next}")?;
    } else {
        // Read by a script (`TOKEN=$(vportal init)`) or written to a file: the token alone
        // on standard output, what goes with it for the operator on standard error.
        for line in made {
            errln!("{line}");
        }
        errln!("Admin API token {token_name:?} (shown only this once) written to standard output.");
        errln!("{next}");
        outln!("{}", token.expose())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the existing database at `db` has no admin token, once a first `init` that may
/// be under way elsewhere (one that made the database a moment ago, its token not yet) has
/// had time to make its own: a second since the database last changed, as `Store::open`
/// gives a first run elsewhere a second to write an empty database's header. Without it a
/// second `init` could make the token, and the one that made the database say it found one.
fn has_no_token(store: &Store, db: &Path) -> Result<bool> {
    const SETTLED: Duration = Duration::from_secs(1);
    if store.has_tokens()? {
        return Ok(false);
    }
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let changed = [db, Path::new(&wal)]
        .into_iter()
        .filter_map(|file| std::fs::metadata(file).ok()?.modified().ok())
        .max();
    let wait = changed
        .and_then(|at| (at + SETTLED).duration_since(SystemTime::now()).ok())
        .map_or(Duration::ZERO, |wait| wait.min(SETTLED));
    if wait.is_zero() {
        return Ok(true);
    }
    std::thread::sleep(wait);
    Ok(!store.has_tokens()?)
}

pub(crate) fn backup(ctx: &Context, file: &std::path::Path) -> Result<ExitCode> {
    ctx.open()?.backup(file)?;
    let pepper = ctx.store.pepper_path();
    if ctx.json {
        output::json(&json!({ "backup": file, "pepper_file": pepper }))?;
    } else {
        outln!(
            "Wrote {}. Keep the pepper file {} with it (or VPORTAL_PEPPER's value): without \
             it no passcode in the copy can be checked.",
            file.display(),
            pepper.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn report(ctx: &Context) -> Result<ExitCode> {
    let r = ctx.open()?.report(Timestamp::now())?;
    if ctx.json {
        output::json(&r)?;
    } else {
        out!(
            "{}",
            output::fields(&[
                ("mailboxes", r.users.to_string()),
                ("temporary passcode", r.temporary.to_string()),
                ("  of which expired", r.expired.to_string()),
                ("locked", r.locked.to_string()),
                ("never changed by owner", r.never_changed.to_string()),
                ("changed in last 90 days", r.changed_in_90_days.to_string()),
            ])
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn prune_audit(ctx: &Context, older_than: &str) -> Result<ExitCode> {
    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
    let age = parse_duration(older_than).map_err(|e| anyhow!("--older-than: {e}"))?;
    if age < DAY {
        bail!("--older-than must be at least 1d (a day), not {older_than}");
    }
    let now = Timestamp::now();
    let before = now.saturating_sub(age);
    let removed = ctx
        .open()?
        .prune_audit(before, &Actor::cli_from_env(), now)?;
    if ctx.json {
        output::json(&json!({ "removed": removed, "before": before }))?;
    } else {
        outln!("Removed {removed} audit event(s) from before {before}.")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn audit(
    ctx: &Context,
    ext: Option<&str>,
    event: Option<&str>,
    limit: u32,
) -> Result<ExitCode> {
    let query = AuditQuery {
        extension: ext.map(extension).transpose()?,
        event: event
            .map(|name| {
                Event::parse(name).ok_or_else(|| {
                    let names: Vec<_> = Event::ALL.iter().map(|e| e.as_str()).collect();
                    anyhow!("unknown event {name:?}; events are {}", names.join(", "))
                })
            })
            .transpose()?,
        limit: Some(limit),
    };
    let events = ctx.open()?.audit(&query)?;
    if ctx.json {
        return output::json(&events).map(|()| ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "TIME",
        "EVENT",
        "EXTENSION",
        "ACTOR",
        "SOURCE",
        "CALL-ID",
        "OUTCOME",
        "DETAIL",
    ]);
    for e in &events {
        table.row(vec![
            e.time.to_string(),
            e.event.clone(),
            output::text(e.extension.as_deref()),
            e.actor.clone(),
            output::text(e.source.as_deref()),
            output::text(e.call_id.as_deref()),
            e.outcome.clone(),
            output::text(e.detail.as_deref()),
        ]);
    }
    table.print()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn policy(ctx: &Context, cmd: PolicyCommand) -> Result<ExitCode> {
    policy_command(ctx, cmd).map_err(|e| match e.downcast_ref::<StoreError>() {
        Some(store) if store.is_unreadable_policy() => {
            anyhow!("{store}; {}", super::POLICY_REMEDY)
        }
        _ => e,
    })
}

fn policy_command(ctx: &Context, cmd: PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { extension: ext } => {
            let ext = extension(&ext)?;
            let candidate = read_passcode("Passcode to check", false)?;
            let violations = ctx.open()?.check_passcode(&ext, &candidate)?;
            if ctx.json {
                output::json(&json!({"ok": violations.is_empty(), "violations": violations}))?;
            } else if violations.is_empty() {
                outln!("ok")?;
            } else {
                for v in violations.as_slice() {
                    outln!("{}\t{}", v.code(), v.describe())?;
                }
            }
            Ok(if violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        PolicyCommand::Show => {
            let policy = ctx.open()?.policy()?;
            if ctx.json {
                output::json(&policy)?;
            } else {
                out!("{}", toml::to_string(&policy)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Reset => {
            let policy = Policy::default();
            ctx.open()?
                .set_policy(&policy, &Actor::cli_from_env(), Timestamp::now())?;
            if ctx.json {
                output::json(&policy)?;
            } else {
                outln!("The default policy is in force (see `vportal policy show`).")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Set { key, value } => {
            // Read, edited and written in one transaction: a concurrent `policy set` of
            // another key is not undone.
            let updated = ctx.open()?.update_policy(
                |policy| with_setting(policy, &key, &value),
                &Actor::cli_from_env(),
                Timestamp::now(),
            )??;
            if ctx.json {
                output::json(&updated)?;
            } else {
                // What was stored ("NO" is `false`, "15m" is 900 seconds), as `show` says it.
                outln!("{key} = {}", stored_setting(&updated, &key)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How `policy` holds setting `key` (a duration as seconds, with the duration beside it:
/// `900 (15m)`).
fn stored_setting(policy: &Policy, key: &str) -> Result<String> {
    let doc = toml::Table::try_from(policy)?;
    let value = match key.split_once('.') {
        Some((outer, inner)) => doc.get(outer).and_then(|t| t.get(inner)),
        None => doc.get(key),
    };
    Ok(match value {
        Some(toml::Value::Integer(secs)) if key.ends_with("_seconds") => {
            let words = u64::try_from(*secs)
                .ok()
                .filter(|&s| s > 0)
                .map(|s| format!(" ({})", format_duration(Duration::from_secs(s))))
                .unwrap_or_default();
            format!("{secs}{words}")
        }
        Some(value) => value.to_string(),
        None => return Err(unknown_setting(&doc, key)),
    })
}

/// The error for a setting `doc` does not hold, naming the one meant when `key` is a name
/// inside a section given without it (`max_failures` for `lockout.max_failures`) or with
/// another.
fn unknown_setting(doc: &toml::Table, key: &str) -> anyhow::Error {
    let name = key.rsplit_once('.').map_or(key, |(_, name)| name);
    let meant = doc.iter().find_map(|(section, value)| match value {
        toml::Value::Table(t) if t.contains_key(name) => Some(format!("{section}.{name}")),
        _ => None,
    });
    match meant {
        Some(meant) if meant != key => {
            anyhow!(
                "unknown policy setting {key:?}: did you mean {meant}? (see `vportal policy show`)"
            )
        }
        _ => anyhow!("unknown policy setting {key:?} (see `vportal policy show`)"),
    }
}

/// `policy` with one setting changed. `key` is a top-level name or `lockout.<name>`;
/// `value` is true/false, a number, or for `*_seconds` settings a duration such as `30m`.
fn with_setting(policy: &Policy, key: &str, value: &str) -> Result<Policy> {
    let mut doc = toml::Table::try_from(policy)?;
    // Made before `doc` is borrowed to be changed; said only if the setting is not there.
    let unknown = unknown_setting(&doc, key);
    let (table, name) = match key.split_once('.') {
        Some((outer, inner)) => {
            let Some(toml::Value::Table(t)) = doc.get_mut(outer) else {
                return Err(unknown);
            };
            (t, inner)
        }
        None => (&mut doc, key),
    };
    let Some(old) = table.get(name) else {
        return Err(unknown);
    };
    let new = match old {
        toml::Value::Boolean(_) => toml::Value::Boolean(
            vportal::config::parse_yes_no(value)
                .ok_or_else(|| anyhow!("{key} takes true or false (or yes/no, on/off, 1/0)"))?,
        ),
        toml::Value::Integer(_) if name.ends_with("_seconds") => {
            let secs = match value.parse::<u64>() {
                Ok(n) => n,
                Err(_) => parse_duration(value)?.as_secs(),
            };
            toml::Value::Integer(i64::try_from(secs).context("duration too long")?)
        }
        toml::Value::Integer(_) => toml::Value::Integer(
            value
                .parse()
                .map_err(|_| anyhow!("{key} takes a whole number"))?,
        ),
        _ => bail!("{key} cannot be set from the command line"),
    };
    table.insert(name.to_owned(), new);
    // Every value has the right type by now, so only its range can be wrong (a negative
    // number, or one beyond what the setting holds).
    let updated: Policy = toml::Value::Table(doc)
        .try_into()
        .map_err(|_| anyhow!("{key} = {value} is out of range"))?;
    if let Err(e) = updated.validate() {
        if e.key == key {
            return Err(e.into());
        }
        // The value is fine alone but not with another setting: say which, and how.
        bail!(
            "{key} = {value} does not fit the other settings: {e} (change {} first)",
            e.key
        );
    }
    Ok(updated)
}

pub(crate) fn token(ctx: &Context, cmd: TokenCommand) -> Result<ExitCode> {
    let store = ctx.open()?;
    let actor = Actor::cli_from_env();
    match cmd {
        TokenCommand::Create { name } => {
            let token = store.create_token(&name, &actor, Timestamp::now())?;
            output::secrets_follow();
            if ctx.json {
                output::json(&json!({"name": name, "token": token.expose()}))?;
            } else if std::io::stdout().is_terminal() {
                outln!("Admin API token {name:?} (shown only this once):")?;
                outln!("{}", token.expose())?;
            } else {
                // As `init` does: the token alone for a script (`TOKEN=$(vportal token
                // create ci)`), the words for the operator on standard error.
                errln!(
                    "Admin API token {name:?} (shown only this once) written to standard output."
                );
                outln!("{}", token.expose())?;
            }
        }
        TokenCommand::List => {
            let tokens = store.tokens()?;
            if ctx.json {
                output::json(&tokens)?;
            } else {
                let mut table = Table::new(&["NAME", "CREATED", "LAST USED"]);
                for t in tokens {
                    table.row(vec![
                        t.name,
                        t.created_at.to_string(),
                        output::time(t.last_used_at),
                    ]);
                }
                table.print()?;
            }
        }
        TokenCommand::Revoke { name } => {
            store.revoke_token(&name, &actor, Timestamp::now())?;
            if ctx.json {
                output::json(&json!({"name": name, "revoked": true}))?;
            } else {
                outln!("Admin API token {name:?} revoked.")?;
            }
            // A running server takes none of the database's tokens now: only a configured
            // one, if it has one. Said on stderr, as a warning would be; the revoke is done,
            // so a failure to look is no failure of the command.
            if store.has_tokens().is_ok_and(|has| !has) {
                let vportal = ctx.vportal_command();
                errln!(
                    "No admin API token is left in the database: the admin API takes only a \
                     configured token (VPORTAL_ADMIN_TOKEN, admin.token) until you make one \
                     with `{vportal} token create NAME`."
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_by_name_with_types_and_durations() {
        let p = Policy::default();
        assert_eq!(with_setting(&p, "min_length", "6").unwrap().min_length, 6);
        assert!(
            !with_setting(&p, "reject_common", "false")
                .unwrap()
                .reject_common
        );
        let l = with_setting(&p, "lockout.duration_seconds", "15m").unwrap();
        assert_eq!(l.lockout.duration_seconds, 900);
        let t = with_setting(&p, "temporary_ttl_seconds", "20m").unwrap();
        assert_eq!(t.temporary_ttl_seconds, 1_200);
        assert!(with_setting(&p, "min_lenght", "6").is_err());
        assert!(with_setting(&p, "lockout.nope", "6").is_err());
        assert!(with_setting(&p, "min_length", "six").is_err());
        assert!(with_setting(&p, "min_length", "0").is_err());
        // Yes and no as the admin API's filters take them.
        for (value, set) in [("no", false), ("On", true), ("0", false), ("YES", true)] {
            let q = with_setting(&p, "reject_common", value).unwrap();
            assert_eq!(q.reject_common, set, "{value}");
        }
        let e = with_setting(&p, "reject_common", "maybe").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("reject_common takes true or false")
        );
    }
}
