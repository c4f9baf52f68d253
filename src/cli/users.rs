//! `vportal user …`: mailbox administration.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use vportal::store::{
    Actor, ImportMode, ImportOutcome, ImportReport, Issued, MAX_IMPORT_ROWS, NewUser, PasscodeSpec,
    Selection, StoreError, Ttl, UserFilter, UserInfo,
};
use vportal::time::Timestamp;

use super::output::{self, Table, errln, out, outln};
use super::{Context, UserCommand, extension, read_passcode};

pub(crate) fn run(ctx: &Context, cmd: UserCommand) -> Result<ExitCode> {
    let actor = Actor::cli_from_env();
    // The time is read where each command writes, after any passcode prompt: a lifetime
    // counts from when it is stored.
    match cmd {
        UserCommand::Add {
            extension: ext,
            name,
            email,
            generate,
            passcode_stdin,
            temporary,
            ttl,
        } => {
            let ext = extension(&ext)?;
            let passcode = new_passcode(passcode_stdin, generate, temporary, ttl)?;
            let store = ctx.open()?;
            let without_passcode = passcode.is_none();
            let issued = store.create_user(
                NewUser {
                    extension: ext,
                    name,
                    email,
                    passcode,
                },
                &actor,
                Timestamp::now(),
            )?;
            print_issued(ctx, &issued, "created")?;
            if without_passcode {
                // The API's default is the other way round: say so, or the mailbox is
                // found unusable at its owner's first call.
                errln!(
                    "note: mailbox {} has no passcode: every login is refused until \
                     `vportal user set-temp {}` gives it one",
                    issued.extension,
                    issued.extension
                );
            }
        }
        UserCommand::List {
            temporary,
            locked,
            expired,
        } => {
            let filter = UserFilter {
                temporary: temporary.then_some(true),
                locked: locked.then_some(true),
                expired: expired.then_some(true),
            };
            let users = ctx.open()?.users(filter, Timestamp::now())?;
            if ctx.json {
                output::json(&users)?;
            } else {
                print_list(&users)?;
            }
        }
        UserCommand::Show { extension: ext } => {
            let ext = extension(&ext)?;
            let Some(user) = ctx.open()?.user(&ext, Timestamp::now())? else {
                bail!("no mailbox {ext}");
            };
            if ctx.json {
                output::json(&user)?;
            } else {
                out!("{}", show(&user))?;
            }
        }
        UserCommand::SetTemp {
            extension: ext,
            passcode_stdin,
            ttl,
        } => {
            let ext = extension(&ext)?;
            let passcode = if passcode_stdin {
                Some(read_passcode("Temporary passcode", true)?)
            } else {
                None
            };
            let spec = PasscodeSpec {
                passcode,
                temporary: true,
                ttl,
            };
            let issued = ctx
                .open()?
                .reset_passcode(&ext, &spec, &actor, Timestamp::now())?;
            print_issued(ctx, &issued, "given a temporary passcode")?;
        }
        UserCommand::ResetAll {
            extensions,
            ttl,
            yes,
        } => {
            let selection = selection(&extensions, yes)?;
            let issued = ctx
                .open()?
                .reset_many(&selection, true, ttl, &actor, Timestamp::now())?;
            print_issued_list(ctx, &issued)?;
        }
        UserCommand::Unlock { extension: ext } => {
            let ext = extension(&ext)?;
            let was_locked = ctx.open()?.unlock(&ext, &actor, Timestamp::now())?;
            if ctx.json {
                output::json(
                    &json!({"extension": ext, "unlocked": true, "was_locked": was_locked}),
                )?;
            } else if was_locked {
                outln!("Mailbox {ext} unlocked.")?;
            } else {
                outln!("Mailbox {ext} was not locked.")?;
            }
        }
        UserCommand::Delete { extension: ext } => {
            let ext = extension(&ext)?;
            ctx.open()?.delete_user(&ext, &actor, Timestamp::now())?;
            if ctx.json {
                output::json(&json!({"extension": ext, "deleted": true}))?;
            } else {
                outln!("Mailbox {ext} deleted.")?;
            }
        }
        UserCommand::Import { file, partial } => return import(ctx, &file, partial, &actor),
    }
    Ok(ExitCode::SUCCESS)
}

/// `user add`'s passcode: read from stdin (temporary or not), generated (always
/// temporary), or none.
fn new_passcode(
    passcode_stdin: bool,
    generate: bool,
    temporary: bool,
    ttl: Option<Ttl>,
) -> Result<Option<PasscodeSpec>> {
    // Checked here rather than by clap, whose message would offer `--generate` beside
    // `--passcode-stdin`, which it refuses.
    if ttl.is_some() && !generate && !temporary {
        anyhow::bail!(
            "--ttl is the lifetime of a temporary passcode: give it with --generate, or with \
             --passcode-stdin --temporary"
        );
    }
    Ok(if passcode_stdin {
        Some(PasscodeSpec {
            passcode: Some(read_passcode("Passcode", true)?),
            temporary,
            ttl,
        })
    } else if generate {
        Some(PasscodeSpec {
            passcode: None,
            temporary: true,
            ttl,
        })
    } else {
        None
    })
}

/// `user reset-all`'s mailboxes: those listed, or every one when `--yes` confirms it.
fn selection(extensions: &[String], yes: bool) -> Result<Selection> {
    if !extensions.is_empty() {
        return Ok(Selection::Extensions(
            extensions
                .iter()
                .map(|e| extension(e))
                .collect::<Result<_>>()?,
        ));
    }
    if !yes {
        bail!("this gives every mailbox a new temporary passcode; add --yes to confirm");
    }
    Ok(Selection::All)
}

/// The largest CSV `user import` reads: 100,000 rows of up to 670 bytes each.
const MAX_IMPORT_BYTES: u64 = 64 << 20;

/// `user import`: exit status 1 when any row was rejected, whether or not the rest went in.
fn import(ctx: &Context, file: &std::path::Path, partial: bool, actor: &Actor) -> Result<ExitCode> {
    let (input, name): (Box<dyn Read>, _) = if file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), "standard input".to_owned())
    } else {
        let opened =
            std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
        (Box::new(opened), file.display().to_string())
    };
    // Read no further than an import can be: a wrong path (a log file, /dev/zero) must not
    // fill memory before the row count refuses it.
    let Some(bytes) = vportal::config::read_at_most(input, MAX_IMPORT_BYTES)
        .with_context(|| format!("reading {name}"))?
    else {
        bail!(
            "{name}: more than {} MiB; an import takes at most {MAX_IMPORT_ROWS} rows: split it",
            MAX_IMPORT_BYTES >> 20
        );
    };
    // Every error about the file's text names it, as a rejected row does.
    let text = vportal::store::csv_text(bytes).with_context(|| name.clone())?;
    let mode = if partial {
        ImportMode::Partial
    } else {
        ImportMode::AllOrNothing
    };
    let report = ctx
        .open()?
        .import_csv(&text, mode, actor, Timestamp::now())
        .map_err(|e| match e {
            StoreError::Invalid(_) => anyhow::Error::new(e).context(name.clone()),
            e => e.into(),
        })?;
    let rejected = report.rejected().count();
    if report.created().any(|i| i.generated.is_some()) {
        output::secrets_follow();
    }
    if ctx.json {
        print_import_json(&report)?;
    } else {
        print_import_text(&report, rejected, &name)?;
    }
    Ok(if rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `user import --json`: the outcome of every row, with the generated passcodes.
fn print_import_json(report: &ImportReport) -> Result<()> {
    let rows: Vec<_> = report
        .rows
        .iter()
        .map(|r| {
            let ext = r.extension.as_ref().map(ToString::to_string);
            match &r.outcome {
                ImportOutcome::Created(i) => json!({
                    "line": r.line, "extension": ext, "status": "created",
                    "passcode": i.generated.as_ref().map(|p| p.expose()),
                    "temporary_expires_at": i.expires_at,
                }),
                ImportOutcome::NotImported => json!({
                    "line": r.line, "extension": ext, "status": "not_imported",
                }),
                ImportOutcome::Rejected(reason) => json!({
                    "line": r.line, "extension": ext, "status": "rejected",
                    "reason": reason,
                }),
            }
        })
        .collect();
    output::json(&json!({"committed": report.committed, "rows": rows}))
}

/// `user import`: rejected rows and the summary on stderr, created mailboxes as CSV on
/// stdout.
fn print_import_text(report: &ImportReport, rejected: usize, name: &str) -> Result<()> {
    for row in &report.rows {
        if let ImportOutcome::Rejected(reason) = &row.outcome {
            match &row.extension {
                Some(ext) => errln!("{name}: line {} ({ext}): {reason}", row.line),
                None => errln!("{name}: line {}: {reason}", row.line),
            }
        }
    }
    let created: Vec<&Issued> = report.created().collect();
    if !created.is_empty() {
        outln!("extension,passcode,temporary_expires_at")?;
        for i in &created {
            outln!(
                "{},{},{}",
                i.extension,
                i.generated.as_ref().map_or("", |p| p.expose()),
                output::time(i.expires_at)
            )?;
        }
    }
    if report.committed {
        let generated = created.iter().filter(|i| i.generated.is_some()).count();
        let note = if generated > 0 {
            "; generated passcodes are shown only this once"
        } else {
            ""
        };
        errln!(
            "{} mailbox(es) created, {rejected} row(s) rejected{note}",
            created.len()
        );
    } else {
        errln!("{}", report.nothing_imported("use --partial"));
    }
    Ok(())
}

/// Prints the result of setting a passcode; a generated passcode appears here only.
fn print_issued(ctx: &Context, issued: &Issued, what: &str) -> Result<()> {
    if issued.generated.is_some() {
        output::secrets_follow();
    }
    if ctx.json {
        return output::json(&issued_json(issued));
    }
    outln!("Mailbox {} {what}.", issued.extension)?;
    if let Some(p) = &issued.generated {
        let kind = if issued.temporary {
            "Temporary passcode"
        } else {
            "Passcode"
        };
        outln!("{kind}: {}", p.expose())?;
        outln!("(shown only this once)")?;
    }
    if let Some(t) = issued.expires_at {
        outln!("Expires: {t}")?;
    }
    Ok(())
}

fn print_issued_list(ctx: &Context, issued: &[Issued]) -> Result<()> {
    if issued.iter().any(|i| i.generated.is_some()) {
        output::secrets_follow();
    }
    if ctx.json {
        let rows: Vec<_> = issued.iter().map(issued_json).collect();
        return output::json(&rows);
    }
    let mut table = Table::new(&["EXTENSION", "PASSCODE", "EXPIRES"]);
    for i in issued {
        table.row(vec![
            i.extension.to_string(),
            i.generated.as_ref().map_or("", |p| p.expose()).to_owned(),
            output::time(i.expires_at),
        ]);
    }
    table.print()?;
    errln!(
        "{} mailbox(es) reset; the passcodes are shown only this once",
        issued.len()
    );
    Ok(())
}

fn issued_json(i: &Issued) -> serde_json::Value {
    json!({
        "extension": i.extension,
        "passcode": i.generated.as_ref().map(|p| p.expose()),
        "temporary": i.temporary,
        "temporary_expires_at": i.expires_at,
    })
}

/// One word for a mailbox's credential state.
fn state(u: &UserInfo) -> &'static str {
    if u.locked {
        "locked"
    } else if !u.has_passcode {
        "no-passcode"
    } else if u.expired {
        "expired"
    } else if u.temporary {
        "temporary"
    } else {
        "active"
    }
}

fn print_list(users: &[UserInfo]) -> std::io::Result<()> {
    let mut table = Table::new(&[
        "EXTENSION",
        "NAME",
        "EMAIL",
        "STATE",
        "FAILED",
        "LAST LOGIN",
        "CHANGED",
    ]);
    for u in users {
        table.row(vec![
            u.extension.to_string(),
            output::text(u.name.as_deref()),
            output::text(u.email.as_deref()),
            state(u).to_owned(),
            u.failed_attempts.to_string(),
            output::time(u.last_login_at),
            output::time(u.passcode_changed_at),
        ]);
    }
    table.print()
}

fn show(u: &UserInfo) -> String {
    let locked = match (u.locked, u.locked_until) {
        (false, _) => "no".to_owned(),
        (true, Some(t)) => format!("until {t}"),
        (true, None) => "until an admin unlocks it".to_owned(),
    };
    output::fields(&[
        ("extension", u.extension.to_string()),
        ("name", output::text(u.name.as_deref())),
        ("email", output::text(u.email.as_deref())),
        ("state", state(u).to_owned()),
        (
            "temporary",
            if u.temporary { "yes" } else { "no" }.to_owned(),
        ),
        ("temporary expires", output::time(u.temporary_expires_at)),
        ("locked", locked),
        ("failed attempts", u.failed_attempts.to_string()),
        ("locks so far", u.lockouts.to_string()),
        ("last login", output::time(u.last_login_at)),
        ("passcode changed", output::time(u.passcode_changed_at)),
        ("created", u.created_at.to_string()),
    ])
}
