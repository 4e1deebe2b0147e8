//! The Slurm backend of `vidtune sweep`: a job array per kind of point (the stage's, then the points'
//! after it), its batch script, `sbatch` and `squeue`.

use super::{read_state, Point, Sweep, SweepArgs};
use anyhow::{anyhow, bail, Context};
use std::path::Path;

/// What `squeue` lists for a job or task (`JOBID` or `JOBID_TASK`): one state per line; `None` when
/// squeue cannot be asked.
pub(super) fn squeue(job: &str) -> Option<String> {
    let out = std::process::Command::new("squeue").args(["-h", "-o", "%T", "-j", job]).output().ok()?;
    // squeue fails on a job id it has forgotten: that job is gone.
    Some(if out.status.success() { String::from_utf8_lossy(&out.stdout).trim().to_string() } else { String::new() })
}

/// The batch script of a Slurm array over the indices `indices` of the sweep's points (or its stage's).
pub fn batch_script(dir: &Path, indices: &[usize], throttle: Option<usize>, stage: bool) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding this program for the batch script")?;
    let dir = std::fs::canonicalize(dir).with_context(|| dir.display().to_string())?;
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let list = indices.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let (what, flag) = if stage { ("stage run", " --stage") } else { ("point", "") };
    Ok(format!(
        "#!/bin/bash\n#SBATCH --job-name=vidtune-sweep\n#SBATCH --array={list}{}\n#SBATCH --output={}\n\
         # One {what} of the sweep in {} per array task.\nexec {} sweep run-point {}{flag} --index \"$SLURM_ARRAY_TASK_ID\"\n",
        throttle.map(|k| format!("%{k}")).unwrap_or_default(),
        dir.join(if stage { "stages" } else { "points" }).join("slurm-%A_%a.out").display(),
        dir.display(),
        quote(&exe),
        quote(&dir),
    ))
}

/// Writes the batch script of `list`'s points not done and submits it (after `after`, a job id); the job
/// id, or `None` when nothing is left to run (or in a dry run).
fn submit(
    args: &SweepArgs,
    dir: &Path,
    list: &[Point],
    stage: bool,
    after: Option<&str>,
) -> anyhow::Result<Option<(String, usize)>> {
    let indices: Vec<usize> =
        list.iter().enumerate().filter(|(_, p)| read_state(dir, p).status != "done").map(|(i, _)| i).collect();
    if indices.is_empty() {
        return Ok(None);
    }
    // Slurm opens each task's output file there: a task whose folder is missing fails before it starts.
    let folder = dir.join(if stage { "stages" } else { "points" });
    std::fs::create_dir_all(&folder).with_context(|| folder.display().to_string())?;
    let script = batch_script(dir, &indices, args.jobs, stage)?;
    let path = dir.join(if stage { "stage.sbatch" } else { "sweep.sbatch" });
    vidtune_runtime::fsutil::write_bytes_atomic(&path, script.as_bytes())?;
    let mut extra: Vec<String> =
        args.slurm_args.as_deref().unwrap_or_default().split_whitespace().map(String::from).collect();
    if let Some(job) = after {
        extra.extend([format!("--dependency=afterok:{job}"), "--kill-on-invalid-dep=yes".into()]);
    }
    let shown = format!("sbatch --parsable {} {}", extra.join(" "), path.display()).replace("  ", " ");
    if args.dry_run {
        print!("{script}");
        println!("# submit with: {shown}");
        return Ok(Some(("DRY".into(), indices.len())));
    }
    let out = std::process::Command::new("sbatch").arg("--parsable").args(&extra).arg(&path).output().map_err(|e| {
        anyhow!("{shown}: {e} (is Slurm installed here? `scripts/slurm-local.sh` starts a one-node Slurm)")
    })?;
    if !out.status.success() {
        bail!("{shown}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let job = String::from_utf8_lossy(&out.stdout).trim().split(';').next().unwrap_or_default().to_string();
    Ok(Some((job, indices.len())))
}

pub(super) fn run_slurm(args: &SweepArgs, dir: &Path, sweep: &Sweep) -> anyhow::Result<std::process::ExitCode> {
    let points = &sweep.points;
    let stage_job = submit(args, dir, &sweep.stages, true, None)?;
    let after = stage_job.as_ref().map(|(j, _)| j.as_str()).filter(|_| !args.dry_run);
    let point_job = submit(args, dir, points, false, after)?;
    if args.dry_run {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let Some((job, tasks)) = point_job else {
        println!("every point is done; `vidtune sweep collect {}` tables them", dir.display());
        return Ok(std::process::ExitCode::SUCCESS);
    };
    let stage_note =
        stage_job.as_ref().map(|(j, n)| format!(", after stage array job {j} with {n} tasks")).unwrap_or_default();
    println!(
        "sweep of {} points in {}: submitted array job {job} with {tasks} tasks ({} done){stage_note}; following it \
         with squeue (Ctrl-C stops following, not the job)",
        points.len(),
        dir.display(),
        points.len() - tasks,
    );
    let jobs = stage_job.as_ref().map_or(job.clone(), |(j, _)| format!("{j},{job}"));
    let mut last = String::new();
    let started = std::time::Instant::now();
    let done_before = points.len() - tasks;
    loop {
        if vidtune_runtime::progress::cancel_requested() {
            println!(
                "stopped following; the job goes on (`scancel {jobs}` stops it, `vidtune sweep status {}` shows it)",
                dir.display()
            );
            return Ok(std::process::ExitCode::from(crate::signals::exit_status()));
        }
        let queued = squeue(&jobs).ok_or_else(|| anyhow!("squeue: not found"))?;
        let line = super::counts(dir, sweep);
        if line != last {
            let done = points.iter().filter(|p| read_state(dir, p).status == "done").count() - done_before;
            println!("{line}{}", super::eta(started, done, tasks.saturating_sub(done)));
            last = line;
        }
        if queued.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let not_done = points.iter().filter(|p| read_state(dir, p).status != "done").count();
    println!(
        "array job {job} ended: {} done, {not_done} not; `vidtune sweep collect {}` tables them",
        points.len() - not_done,
        dir.display()
    );
    Ok(if not_done > 0 { std::process::ExitCode::from(1) } else { std::process::ExitCode::SUCCESS })
}
