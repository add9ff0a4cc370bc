//! `digital-employee restore <file>`: checks the backup, asks for confirmation (unless
//! `--yes`), restores it over the configured database, then checks the schema.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use crate::config::Config;
use crate::ops::backup;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A db_backup_* file written by `digital-employee backup`.
    pub file: PathBuf,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let plan = backup::plan_restore(&config, &args.file).await?;
    println!(
        "restoring {} ({:?}) over {}",
        plan.file.display(),
        plan.format,
        plan.target
    );
    if !args.yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            anyhow::bail!(
                "refusing to overwrite {} without confirmation: stdin is not a terminal; \
                 pass --yes",
                plan.target
            );
        }
        print!(
            "This replaces every row in {}. Type 'yes' to continue: ",
            plan.target
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        stdin.lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            anyhow::bail!("not confirmed; nothing was changed");
        }
    }
    let status = backup::restore(&config, &plan).await?;
    println!(
        "restored {}; schema current (migrations {:?})",
        plan.file.display(),
        status.applied
    );
    Ok(())
}
