//! The unrolled loops — text-to-image, tuning, DDIM inversion, video sampling — each reporting progress,
//! honouring cancellation at every step, and counting its steps (so tests can tell work from a cache hit).

pub mod cached;
pub mod codenoise;
pub mod common;
pub mod denoise;
pub mod extend;
pub mod first_frame;
pub mod fuse;
pub mod fusion;
pub mod invert;
pub mod null_text;
pub mod presets;
pub mod record;
pub mod reweight;
pub mod sample;
pub mod store;
pub mod t2i;
pub mod train;
pub mod tune;
pub mod tune_memory;

pub use common::{
    decode_video, encode_video, ensure_clip_fits, ensure_frames_fit, to_video_latents, vae_chunk, Latents, VAE_CHUNK,
};
use std::cell::Cell;

thread_local! {
    static COUNTS: Cell<Stats> =
        const { Cell::new(Stats { tune_steps: 0, invert_steps: 0, sample_steps: 0, t2i_steps: 0 }) };
}

/// Which loop a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    Tune,
    Invert,
    Sample,
    T2i,
}

/// Steps run by the pipelines on this thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub tune_steps: u64,
    pub invert_steps: u64,
    pub sample_steps: u64,
    pub t2i_steps: u64,
}

/// The step counters of this thread so far.
pub fn stats() -> Stats {
    COUNTS.with(|c| c.get())
}

pub(crate) fn count(which: Loop) {
    COUNTS.with(|c| {
        let mut s = c.get();
        match which {
            Loop::Tune => s.tune_steps += 1,
            Loop::Invert => s.invert_steps += 1,
            Loop::Sample => s.sample_steps += 1,
            Loop::T2i => s.t2i_steps += 1,
        }
        c.set(s);
    });
}
