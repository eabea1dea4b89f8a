//! Command dispatch: logging set-up, then `serve`, `worker`, `migrate` or `bench`.
use std::io::IsTerminal as _;

use anyhow::Context as _;
use sea_orm_migration::MigratorTrait;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use server::{
    db::Database,
    settings::{Cli, Command, LogFormat, MigrateAction, Settings},
    startup::{Application, run_worker, stop_on_signals},
};

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,apalis=warn,apalis_core=warn,apalis_sqlite=warn,apalis_postgres=warn,tower_http=info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        // Logs go to stderr, coloured only when it is a terminal (a file or journald gets no
        // escape codes).
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    init_tracing(cli.global.log_format);
    let global = cli.global;
    match cli.command {
        Command::Serve(args) => {
            server::sandbox::harden_process()?;
            let settings = Settings::from_serve(&global, &args)?;
            let app = Application::build(settings).await?;
            stop_on_signals(app.stop_token());
            app.run_until_stopped().await
        }
        Command::Worker(args) => {
            server::sandbox::harden_process()?;
            let stop = CancellationToken::new();
            stop_on_signals(stop.clone());
            run_worker(
                &global.data_dir,
                global.database_url.as_deref(),
                args.worker,
                global.secret_key.as_ref(),
                args.egress.policy(),
                global.secret_key_file.as_deref(),
                stop,
            )
            .await
        }
        Command::Migrate { action } => {
            let db = Database::connect(&global.data_dir, global.database_url.as_deref()).await?;
            match action {
                MigrateAction::Up => {
                    db.migrate().await?;
                    println!("migrations applied");
                }
                MigrateAction::Down { steps } => {
                    migration::Migrator::down(&db.conn, Some(steps))
                        .await
                        .context("reverting migrations")?;
                    println!("reverted {steps} migration(s)");
                }
                MigrateAction::Status => {
                    let applied = migration::Migrator::get_applied_migrations(&db.conn).await?;
                    let pending = migration::Migrator::get_pending_migrations(&db.conn).await?;
                    for m in applied {
                        println!("applied  {}", m.name());
                    }
                    for m in pending {
                        println!("pending  {}", m.name());
                    }
                }
            }
            Ok(())
        }
        Command::Bench(args) => crate::bench::run(args, global.database_url).await,
        // main.rs dispatches it before the settings are parsed; reached only when global flags
        // come first.
        Command::BuildSupervisor(args) => server::supervisor::run(&args),
    }
}
