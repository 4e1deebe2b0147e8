//! The call path the video-model functions share (`sample`, `invert`, `tune` here, `co_denoise`, `extend`
//! and `fuse` in `long.rs`): the model argument, a sampling run with its live previews, memo, run record,
//! seed line and per-frame check, and the memo's notes.

use super::live::Live;
use super::state::Host;
use crate::opts::{rt, script_error, Opts, RhaiResult};
use crate::values::{ScriptVideoModel, SdModel};
use rhai::{Dynamic, NativeCallContext};
use std::rc::Rc;
use vidtune_runtime::pipelines::cached::{sample_cached, Memoised, Source};
use vidtune_runtime::pipelines::codenoise::PromptSchedule;
use vidtune_runtime::pipelines::invert::Latents;
use vidtune_runtime::pipelines::sample::SampleOptions;
use vidtune_runtime::video::VideoModel;
use vidtune_runtime::{Masks, Video};

/// The video model of a script value: a VideoModel, or a StableDiffusion with temporal layers (a
/// Tune-A-Video folder).
pub(super) fn video_model(func: &str, v: &Dynamic) -> RhaiResult<Rc<VideoModel>> {
    if let Some(m) = v.clone().try_cast::<ScriptVideoModel>() {
        return Ok(m.0);
    }
    if let Some(sd) = v.clone().try_cast::<SdModel>() {
        return rt(VideoModel::from_video_base(sd.0)).map(Rc::new).map_err(|e| script_error(format!("{func}: {e}")));
    }
    Err(script_error(format!(
        "{func}: the first argument must be a VideoModel (from inflate) or a Tune-A-Video StableDiffusion"
    )))
}

/// What `sample` and `co_denoise` share after reading their options.
pub(super) struct SampleCall<'a> {
    pub func: &'static str,
    pub opts: &'a Opts<'a>,
    pub model: &'a VideoModel,
    /// Whether the script gave the seed (else it was drawn, or replayed by `run --from`).
    pub seed_given: bool,
    pub schedule: &'a PromptSchedule,
}

/// Runs a sample or co-denoising call: live previews and `on_step`, the memo, the run record, the seed
/// line and the per-frame check.
pub(super) fn run_sample(
    ctx: Option<&NativeCallContext>,
    host: &Host,
    call: SampleCall,
    latents: Option<&Latents>,
    o: &SampleOptions,
) -> RhaiResult<Video> {
    let SampleCall { func, opts, model, seed_given, schedule } = call;
    let live = Live::from(opts)?;
    let use_cache = opts.bool("cache")?.unwrap_or(true) && !live.active();
    let fps = o.fps_with(latents);
    let out = live.run(ctx, host, &model.base, fps, || rt(sample_cached(model, schedule, latents, o, use_cache)))?;
    report_memo(&out, func);
    let mut resolved = o.to_json();
    resolved["prompts"] = schedule.to_json();
    note_call(host, func, opts, resolved, Some((out.value.1, seed_given)), model, &out);
    let (video, seed) = out.value;
    if o.seed.is_none() && latents.is_none() {
        println!("seed: {seed}");
    }
    check_frames(func, opts, &video, latents, o.masks.as_ref(), schedule.first())?;
    Ok(video)
}

/// The per-frame check after `sample` / `co_denoise`: with masks and the inverted clip, frames whose
/// subject faded into its surroundings (judged against the source, frame by frame; "most frames look
/// wrong" when that is most of them) and frames whose change inside the masks stands out; with masks and
/// subject words naming a basic colour, frames whose subject is nearer another colour; with a `scorer`,
/// frames whose CLIP alignment falls below the others'. Each is named in a warning.
pub(super) fn check_frames(
    func: &str,
    opts: &Opts,
    edit: &Video,
    latents: Option<&Latents>,
    masks: Option<&Masks>,
    prompt: &str,
) -> RhaiResult<()> {
    let scorer = opts.custom::<crate::values::ScriptClip>("scorer", "a Clip (from load_clip)")?;
    let mut found = vec![];
    if let (Some(source), Some(m)) = (latents.and_then(|l| l.clip.as_ref()), masks) {
        // Judged frame by frame first: where the subject faded away. When that is most frames, the few
        // frames that differ from the others are the good ones, so they are not named as suspects.
        let lost = rt(vidtune_runtime::score::check_subject_presence(source, edit, m))?;
        let most = lost.as_ref().is_some_and(|c| c.most);
        found.extend(lost);
        if !most {
            found.extend(rt(vidtune_runtime::score::check_mask_change(source, edit, m))?);
        }
    }
    // The colour the subject words ask for ("purple circle"), frame by frame, where masks say where.
    if let (Some(m), Some(subject)) = (masks, opts.string("subject")?) {
        found.extend(rt(vidtune_runtime::score::check_subject_colour(edit, m, &subject))?);
    }
    if let Some(c) = scorer {
        found.extend(rt(vidtune_runtime::score::check_alignment(&c.0, edit, prompt))?);
    }
    for check in found {
        let why = if check.judged_absolutely() { "" } else { "; the edit may have lost its subject there" };
        vidtune_runtime::progress::warn(format!("{func}: {}{why} — look with preview(source, edit)", check.describe()));
    }
    Ok(())
}

/// Notes a memoised pipeline call in the run record.
pub(super) fn note_call<T>(
    host: &Host,
    function: &'static str,
    opts: &Opts,
    resolved: serde_json::Value,
    seed: Option<(u64, bool)>,
    model: &VideoModel,
    out: &Memoised<T>,
) {
    host.record_call(super::state::CallRecord {
        function,
        given: opts.map().clone(),
        resolved,
        seed: seed.map(|s| s.0),
        seed_given: seed.is_some_and(|s| s.1),
        model: Some(super::state::model_record(model)),
        source: Some(match out.source {
            Source::Computed => "computed",
            Source::Memory => "memo",
            Source::Disk => "memo on disk",
        }),
        seconds: out.seconds,
    });
}

/// Says where a memoised result came from (a hit is otherwise invisible) and warns when it could not be
/// stored.
pub(super) fn report_memo<T>(out: &Memoised<T>, what: &str) {
    if let Some(note) = out.hit_note(what) {
        println!("{note}");
    }
    if let Some(w) = &out.store_warning {
        eprintln!("warning: {w}");
    }
}
