//! `digital-employee backup`: a verified, timestamped copy of the database, retention
//! clean-up, a line in `backup.log`, and an optional S3 upload.

use std::path::PathBuf;

use crate::config::Config;
use crate::ops::backup;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the backup files and backup.log (default: BACKUP_DIR, ./backups).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Delete db_backup_* files older than this many days (default: RETENTION_DAYS, 7;
    /// 0 keeps all).
    #[arg(long)]
    pub retention_days: Option<u32>,
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let mut opts = backup::BackupOptions::from_config(&config);
    if let Some(d) = args.output_dir {
        opts.output_dir = d;
    }
    if let Some(r) = args.retention_days {
        opts.retention_days = r;
    }
    let report = backup::backup(&config, &opts).await?;
    println!(
        "backup written: {} ({} bytes, {} backend, verified) in {:.2}s",
        report.file.display(),
        report.size_bytes,
        report.backend,
        report.duration_seconds
    );
    for d in &report.deleted {
        println!("deleted old backup: {}", d.display());
    }
    if let Some(u) = &report.uploaded_to {
        println!("uploaded to {u}");
    }
    Ok(())
}
